"""Access token, session cookie, CSRF and response headers of the review app (one ASGI middleware)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response

log = logging.getLogger(__name__)

CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
FORM_TYPE = "application/x-www-form-urlencoded"
MAX_FORM_BYTES = 64 * 1024

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class Session:
    """Who a request belongs to: a cookie session (needs CSRF on POST) or a bearer-token client (does not)."""

    session_id: str
    csrf_token: str
    bearer: bool = False


class Gate:
    """Checks the access token, issues signed session cookies and derives each session's CSRF token."""

    def __init__(self, token: str) -> None:
        if len(token) < 16:
            raise ValueError("the review access token must be at least 16 characters")
        self._token = token.encode("utf-8")
        self._key = secrets.token_bytes(32)
        # One cookie name per server: two review apps on different ports of one host do not clobber each other.
        self.cookie_name = "assetmint_review_" + hashlib.sha256(self._key).hexdigest()[:12]

    def token_ok(self, candidate: str | None) -> bool:
        """Whether `candidate` is the access token (constant-time comparison)."""
        return candidate is not None and hmac.compare_digest(candidate.encode("utf-8"), self._token)

    def new_cookie(self) -> str:
        """A fresh signed session cookie value."""
        session_id = secrets.token_urlsafe(24)
        return f"{session_id}.{self._sign('session', session_id)}"

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie value proves, or None when it is missing or forged."""
        session_id, _, signature = (cookie or "").partition(".")
        if not session_id or not hmac.compare_digest(signature.encode(), self._sign("session", session_id).encode()):
            return None
        return Session(session_id, self._sign("csrf", session_id))

    def _sign(self, purpose: str, value: str) -> str:
        return hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).hexdigest()


def _deny(status: int, message: str, request: Request) -> Response:
    """A short refusal, as JSON for API and fetch clients and as text otherwise."""
    if _wants_json(request):
        return Response(json.dumps({"error": message}), status_code=status, media_type="application/json")
    return PlainTextResponse(f"{status}: {message}\n", status_code=status)


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or "application/json" in request.headers.get("accept", "")


def _same_host(url: str, host: str) -> bool:
    return urlsplit(url).netloc.lower() == host.lower()


async def _csrf_value(request: Request) -> str | None:
    """The CSRF token a POST carries: the X-CSRF-Token header, or the csrf_token field of a urlencoded form."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    if request.headers.get("content-type", "").split(";")[0].strip().lower() == FORM_TYPE:
        body = await request.body()
        if len(body) <= MAX_FORM_BYTES:
            return dict(parse_qsl(body.decode("utf-8", "replace"))).get(CSRF_FIELD)
    return None


def guard(gate: Gate) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    """HTTP middleware: require the token on every request, CSRF on every state change, and add security headers."""

    async def middleware(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        try:
            response = await _check(gate, request, call_next)
        except Exception:  # the reviewer gets one line (with the security headers); the traceback goes to the log
            log.exception("review app error on %s %s", request.method, request.url.path)
            response = _deny(500, "internal error; the server log has the details.", request)
        for name, value in SECURITY_HEADERS.items():
            response.headers[name] = value
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return middleware


async def _check(gate: Gate, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    query_token = request.query_params.get("token")
    if query_token is not None:
        if request.method not in SAFE_METHODS or not gate.token_ok(query_token):
            return _deny(401, "missing or wrong access token; open the URL `assetmint review` printed.", request)
        rest = urlencode([(k, v) for k, v in parse_qsl(request.url.query, keep_blank_values=True) if k != "token"])
        path = "/" + request.url.path.lstrip("/")  # never "//host": the redirect stays on this server
        redirect = RedirectResponse(path + (f"?{rest}" if rest else ""), status_code=303)
        redirect.set_cookie(gate.cookie_name, gate.new_cookie(), httponly=True, samesite="strict", path="/")
        return redirect
    authorization = request.headers.get("authorization", "")
    if authorization:
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not gate.token_ok(credential.strip()):
            return _deny(401, "wrong access token in the Authorization header.", request)
        session: Session | None = Session("bearer", "", bearer=True)
    else:
        session = gate.session(request.cookies.get(gate.cookie_name))
    if session is None:
        return _deny(401, "missing or wrong access token; open the URL `assetmint review` printed.", request)
    if request.method not in SAFE_METHODS:
        host = request.headers.get("host", "")
        origin = request.headers.get("origin")
        referer = request.headers.get("referer")
        # "null" is what browsers send for forms under Referrer-Policy: no-referrer; the CSRF token still applies.
        if origin and origin != "null" and not _same_host(origin, host):
            return _deny(403, f"cross-origin request from {origin} refused.", request)
        if not origin and referer and not _same_host(referer, host):
            return _deny(403, "cross-site request refused (Referer is another site).", request)
        if not session.bearer:
            provided = await _csrf_value(request)
            if not provided or not hmac.compare_digest(provided.encode(), session.csrf_token.encode()):
                return _deny(403, "missing or wrong CSRF token; reload the page and try again.", request)
    request.state.session = session
    return await call_next(request)

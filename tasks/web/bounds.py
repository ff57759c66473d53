"""What a client may send AssetMint's web apps, and the server settings that let the apps refuse the rest in words.

Every refusal is a 4xx with a JSON (or, on the review page, HTML) body that names the problem; nothing here answers
500 or drops the connection for a client's mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# uvicorn's h11 parser refuses a request line and headers over 16 KiB by answering 400 and closing while the client
# is still sending, which the client sees as a connection reset with no answer. Up to this size the request reaches
# the app, which refuses an over-long value in words (414, 400); beyond it h11 still refuses it.
MAX_REQUEST_HEAD_BYTES = 2 * 1024 * 1024
MAX_QUOTED = 60  # characters of a refused value quoted back in the message
CONTROL_CHARACTERS = frozenset(chr(c) for c in range(32)) - {"\t", "\n", "\r"} | {"\x7f"}


def server_options() -> dict[str, Any]:
    """uvicorn settings for AssetMint's web apps: the h11 implementation (always, so the head limit applies)."""
    return {"http": "h11", "h11_max_incomplete_event_size": MAX_REQUEST_HEAD_BYTES}


def quoted(value: object) -> str:
    """A client's value for an error message: its repr, cut to MAX_QUOTED characters."""
    text = repr(value)
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}... ({len(str(value))} characters)"


def check_text(name: str, value: str, max_chars: int) -> str:
    """`value` when it is at most `max_chars` characters without control characters; 400 naming the rule otherwise."""
    if len(value) > max_chars:
        raise HTTPException(400, f"{name} is {len(value)} characters long; at most {max_chars} are allowed.")
    bad = next((c for c in value if c in CONTROL_CHARACTERS), None)
    if bad is not None:
        raise HTTPException(400, f"{name} contains the control character {bad!r}; send plain text.")
    return value


def validation_message(exc: RequestValidationError) -> str:
    """One paragraph for FastAPI's parameter validation errors: which parameter, what is wrong, what was sent."""
    parts = []
    for error in exc.errors():
        source, *names = [str(part) for part in error.get("loc", ())] or ["request"]
        where = " ".join(["the body" if source == "body" else f"{source} parameter", ".".join(names)]).strip()
        sent = f" (got {quoted(error['input'])})" if error.get("input") is not None else ""
        parts.append(f"{where}: {error.get('msg', 'invalid')}{sent}")
    return "; ".join(parts) + "."


class BodyLimit:
    """ASGI middleware: reads each request body before the app and refuses one over the limit with a JSON 413, by
    Content-Length before a byte is read, else as soon as the bytes read pass it; the app gets the body replayed."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        per_path: Mapping[str, int] | None = None,
        error_key: str = "detail",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})
        self.error_key = error_key
        self.headers = dict(headers or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length", b"").strip()
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(send, limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before sending the whole body: nobody to answer
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._refuse(send, limit)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, limit: int) -> None:
        message = f"the request body is over the limit of {limit} bytes."
        response = JSONResponse({self.error_key: message}, status_code=413, headers=self.headers)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})

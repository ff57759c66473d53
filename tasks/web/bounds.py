"""What a client may send AssetMint's web apps, and the server settings that let the apps refuse the rest in words.

Every refusal is a 4xx with a JSON (or, on the review page, HTML) body that names the problem; nothing here answers
500 or drops the connection for a client's mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
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


class BodyTooLarge(HTTPException):
    """A request body over its route's limit: 413 with the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over the limit of {limit} bytes.")


class BodyLimit:
    """ASGI middleware: a body over the limit (by Content-Length before any byte is read, else while reading) fails
    the read with BodyTooLarge, so the app answers 413 and never holds more than the limit in memory."""

    def __init__(self, app: ASGIApp, max_bytes: int, per_path: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = dict(per_path or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.per_path.get(scope["path"], self.max_bytes)
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"").strip()
        received = 0

        async def capped() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, capped, send)

"""A fault-injecting HTTP proxy for S3 tests: sits on 127.0.0.1 between boto3 and the store and follows a script.

Faults, each matched by HTTP method and a substring of the request target, consumed in order:
  status     answer `status` (e.g. 500, 503 SlowDown) without forwarding the request
  reset      reset the client connection before forwarding (the store never sees the request)
  lost       forward the request, let the store apply it, then reset the client connection (response lost)
  delay      forward the request, then hold the response `seconds` before sending it (beyond the read timeout)
"""

from __future__ import annotations

import http.client
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

Action = Literal["status", "reset", "lost", "delay"]
HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}
MAX_HEADER_BYTES = 64 * 1024


@dataclass
class Fault:
    """One scripted fault: what to do to the next `times` requests that match."""

    action: Action
    method: str | None = None
    path_contains: str | None = None
    times: int = 1
    status: int = 503
    code: str = "SlowDown"
    seconds: float = 0.0

    def matches(self, method: str, target: str) -> bool:
        """Whether a request is one this fault is for (and the fault has uses left)."""
        if self.times <= 0:
            return False
        if self.method and self.method != method:
            return False
        return not (self.path_contains and self.path_contains not in target)


@dataclass
class Seen:
    """A request the proxy handled and what it did to it."""

    method: str
    target: str
    action: str


@dataclass
class S3FaultProxy:
    """A threaded proxy to `upstream` (http://127.0.0.1:PORT) that injects the scripted faults."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"the proxy only forwards to loopback, not {self.upstream}")
        self._up_host = parts.hostname
        self._up_port = parts.port or 80
        self._lock = threading.Lock()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The proxy's endpoint URL for boto3."""
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def script(self, *faults: Fault) -> None:
        """Replace the remaining script."""
        with self._lock:
            self.faults = list(faults)

    def remaining(self) -> int:
        """Fault uses not yet consumed."""
        with self._lock:
            return sum(f.times for f in self.faults)

    def _take(self, method: str, target: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.matches(method, target):
                    fault.times -= 1
                    return fault
            return None

    def __enter__(self) -> S3FaultProxy:
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._serve(self.request)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- one client connection, keep-alive ----------------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        sock.settimeout(30)
        reader = sock.makefile("rb")
        try:
            while True:
                request = _read_request(reader, sock)
                if request is None:
                    return
                method, target, headers, body = request
                fault = self._take(method, target)
                action = fault.action if fault else "forward"
                with self._lock:
                    self.seen.append(Seen(method, target, action))
                if fault and fault.action == "reset":
                    _reset(sock)
                    return
                if fault and fault.action == "status":
                    _send_error(sock, fault.status, fault.code)
                    continue
                status, reason, resp_headers, resp_body = self._forward(method, target, headers, body)
                if fault and fault.action == "lost":
                    _reset(sock)
                    return
                if fault and fault.action == "delay":
                    time.sleep(fault.seconds)
                _send_response(sock, method, status, reason, resp_headers, resp_body)
        except (OSError, ValueError, http.client.HTTPException):
            return
        finally:
            try:
                reader.close()
                sock.close()
            except OSError:
                pass

    def _forward(
        self, method: str, target: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=60)
        try:
            conn.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                if name.lower() not in HOP_HEADERS and name.lower() != "content-length":
                    conn.putheader(name, value)
            if body or method in ("PUT", "POST"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body if body else None)
            response = conn.getresponse()
            data = response.read()
            return response.status, response.reason, list(response.getheaders()), data
        finally:
            conn.close()


def _read_request(reader, sock: socket.socket) -> tuple[str, str, list[tuple[str, str]], bytes] | None:
    line = reader.readline(MAX_HEADER_BYTES)
    if not line:
        return None
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3:
        raise ValueError(f"bad request line {line!r}")
    method, target, _ = parts
    headers: list[tuple[str, str]] = []
    while True:
        raw = reader.readline(MAX_HEADER_BYTES)
        if raw in (b"\r\n", b"\n", b""):
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    lower = {name.lower(): value for name, value in headers}
    if lower.get("expect", "").lower() == "100-continue":
        sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in lower.get("transfer-encoding", "").lower():
        raise ValueError("chunked request bodies are not supported by this test proxy")
    length = int(lower.get("content-length", "0") or 0)
    body = reader.read(length) if length else b""
    if len(body) != length:
        return None
    return method, target, headers, body


def _reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def _send_error(sock: socket.socket, status: int, code: str) -> None:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by s3proxy</Message></Error>"
    ).encode()
    head = (
        f"HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()
    sock.sendall(head + body)


def _send_response(
    sock: socket.socket, method: str, status: int, reason: str, headers: list[tuple[str, str]], body: bytes
) -> None:
    lines = [f"HTTP/1.1 {status} {reason}"]
    for name, value in headers:
        if name.lower() in HOP_HEADERS:
            continue
        if name.lower() == "content-length" and method != "HEAD":
            continue
        lines.append(f"{name}: {value}")
    if method != "HEAD":
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: keep-alive")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body if method != "HEAD" else b""))

"""What every answer needs, as one pure ASGI layer in front of the app.

- CORS on every response, and a 204 for every ``OPTIONS`` (LuCI sends a JSON
  content type even on GET, so all its calls are preflighted);
- ``//`` in a path collapses to ``/`` (clients build URLs by concatenation);
- a body size limit (413 JSON), checked before the body is read;
- hidden names under ``/store/`` (a build's staging folder) are never served.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

_SLASHES = re.compile(r"/{2,}")
EXPOSE = "X-Imagebuilder-Status, X-Queue-Position, X-Unknown-Package, Content-Length, Retry-After"
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", EXPOSE.encode()),
]


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if "//" in path:
            path = _SLASHES.sub("/", path)
            scope = dict(scope, path=path, raw_path=path.encode())
        if scope["method"] == "OPTIONS":
            await _preflight(scope, send)
            return
        if path.startswith("/store/") and "/." in path:
            await _json(send, 404, "Not Found")
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _json(send, 413, f"The request body is larger than {self.max_body} bytes")
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise _TooLarge
            return message

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *CORS_HEADERS])
            await send(message)

        try:
            await self.app(scope, limited_receive, cors_send)
        except _TooLarge:
            await _json(send, 413, f"The request body is larger than {self.max_body} bytes")


class _TooLarge(Exception):
    pass


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _preflight(scope: Scope, send: Send) -> None:
    asked = b"Content-Type"
    for name, value in scope.get("headers", []):
        if name == b"access-control-request-headers":
            asked = value
    headers: list[Any] = [
        *CORS_HEADERS,
        (b"access-control-allow-methods", b"GET, HEAD, POST, OPTIONS"),
        (b"access-control-allow-headers", asked),
        (b"access-control-max-age", b"86400"),
        (b"allow", b"GET, HEAD, POST, OPTIONS"),
        (b"content-length", b"0"),
    ]
    await send({"type": "http.response.start", "status": 204, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"status": status, "detail": detail}).encode()
    headers = [
        *CORS_HEADERS,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

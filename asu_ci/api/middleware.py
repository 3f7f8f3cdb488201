"""What every answer needs, as one pure ASGI layer in front of the app.

- CORS on every response, and a 204 for every ``OPTIONS`` (LuCI sends a JSON
  content type even on GET, so all its calls are preflighted);
- ``//`` in a path collapses to ``/`` (clients build URLs by concatenation), and
  ``.``/``..`` segments are resolved (RFC 3986), so every rule below and every
  route sees the path a file lookup will use, whatever the raw request said;
- a body size limit (413 JSON): checked against ``Content-Length`` before the
  body is read; a chunked body is read up to the limit first, so one over it is
  a 413 too, never a parse error;
- hidden names under ``/store/`` (a build's staging folder) are never served.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asu_ci.protocol import ErrorBody

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
        path = clean_path(scope["path"])
        if path != scope["path"]:
            scope = dict(scope, path=path, raw_path=path.encode())
        if scope["method"] == "OPTIONS":
            await _preflight(scope, send)
            return
        if path.startswith("/store/") and "/." in path:
            await _json(send, 404, "Not Found")
            return
        too_large = f"The request body is larger than {self.max_body} bytes"
        length = _content_length(scope)
        if length is not None and length > self.max_body:
            await _json(send, 413, too_large)
            return
        if length is None and _chunked(scope):
            body = await _read_body(receive, self.max_body)
            if body is None:
                await _json(send, 413, too_large)
                return
            receive = _replay(body, receive)

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[*message.get("headers", []), *CORS_HEADERS])
            await send(message)

        await self.app(scope, receive, cors_send)


def clean_path(path: str) -> str:
    """``path`` with repeated slashes collapsed and dot segments resolved.

    ``..`` never climbs above the root: ``/json/../../store/x`` is ``/store/x``.
    A trailing slash stays (``/json/v1/`` is not ``/json/v1``).
    """
    if "//" not in path and "/." not in path:
        return path
    path = _SLASHES.sub("/", path)
    kept: list[str] = []
    segments = path.split("/")[1:]
    for segment in segments:
        if segment == "..":
            if kept:
                kept.pop()
        elif segment != ".":
            kept.append(segment)
    trailing = segments[-1] in (".", "..", "") if segments else False
    cleaned = "/" + "/".join(s for s in kept if s)
    return cleaned + "/" if trailing and cleaned != "/" else cleaned


def _chunked(scope: Scope) -> bool:
    return any(
        name == b"transfer-encoding" and b"chunked" in value.lower()
        for name, value in scope.get("headers", [])
    )


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None once it grows past ``limit`` bytes."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands out ``body`` once, then waits on the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


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
    body = json.dumps(ErrorBody(status=status, detail=detail).json_body()).encode()
    headers = [
        *CORS_HEADERS,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

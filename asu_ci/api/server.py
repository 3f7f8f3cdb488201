"""Running the endpoint under uvicorn with the limits a public service needs.

- Forwarded headers (``X-Forwarded-For``/``-Proto``) are believed only from the
  addresses in ``server.forwarded_allow_ips``; by default from nobody, so a
  client cannot pick a new identity per request and escape the per-client
  build limit. Behind nginx or Caddy on the same machine, set it to
  ``["127.0.0.1"]`` (the examples in ``deploy/`` say so).
- A connection must deliver a request's complete headers within
  ``server.header_timeout_seconds`` of opening (or of starting the next request
  on a kept-alive connection); otherwise it is closed. uvicorn closes idle
  kept-alive connections itself, but has no deadline for a client that opens a
  connection and sends its headers slowly or never, so it would hold thousands
  of half-open connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from asu_ci.config import Settings
from asu_ci.errors import UsageError


def listen(settings: Settings) -> socket.socket:
    """The listening socket of ``serve``, bound before anything says it serves.

    A busy or forbidden address is a one-line error naming it and the fix.
    """
    host, port = settings.host, settings.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}; check --host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port} ({exc.strerror}); another process (an earlier "
            "asu-ci serve?) may hold it: stop it or choose another --port"
        ) from None
    sock.set_inheritable(True)
    return sock


def run(app: Any, settings: Settings, sock: socket.socket) -> None:
    """Serve ``app`` on the bound ``sock`` until stopped."""
    config = uvicorn_config(app, settings)
    if settings.server.access_log:
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    uvicorn.Server(config).run(sockets=[sock])


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """The uvicorn configuration of ``asu-ci serve`` for ``app``."""
    trusted = list(settings.server.forwarded_allow_ips)
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=settings.server.access_log,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        http=header_deadline(settings.server.header_timeout_seconds),
    )


def header_deadline(seconds: float) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol, closing a connection whose request headers are
    not complete ``seconds`` after it opened or after the request began."""

    class HeaderDeadline(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _too_slow(self) -> None:
            self._header_timer = None
            if not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            super().on_headers_complete()

    return HeaderDeadline

"""The HTTP session helper: timeouts, GET-only retries, and the environment's proxies."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from asu_ci.http import Session, timeouts


class _Recorder(BaseHTTPRequestHandler):
    """Answers 200 (or the status the server is told) and records each request line."""

    def log_message(self, format: str, *args: object) -> None:
        return None

    def _answer(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        server.lines.append(self.requestline)
        status = server.statuses.pop(0) if server.statuses else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = _answer
    do_POST = _answer


class _Server(ThreadingHTTPServer):
    lines: list[str]
    statuses: list[int]


@pytest.fixture
def recorder() -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _Recorder)
    server.lines, server.statuses = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_get_is_retried_and_post_is_not(recorder: _Server) -> None:
    url = f"http://127.0.0.1:{recorder.server_address[1]}/x"
    recorder.statuses = [503, 200]
    with Session(timeout=(2, 2)) as session:
        session.get(url)
        assert [line.split()[0] for line in recorder.lines] == ["GET", "GET"]
        recorder.lines.clear()
        recorder.statuses = [503, 200]
        assert session.post(url, data=b"x").status_code == 503
    assert [line.split()[0] for line in recorder.lines] == ["POST"]


def test_proxies_from_the_environment_are_honoured(
    recorder: _Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    proxy = f"http://127.0.0.1:{recorder.server_address[1]}"
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.setenv("NO_PROXY", "")
    with Session(timeout=(2, 2)) as session:
        for _ in range(2):  # the second call uses the looked-up settings
            assert session.get("http://downloads.example.org/a").text == "ok"
    assert recorder.lines == ["GET http://downloads.example.org/a HTTP/1.1"] * 2


def test_no_proxy_sends_requests_direct(recorder: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    url = f"http://127.0.0.1:{recorder.server_address[1]}/b"
    with Session(timeout=(2, 2)) as session:
        assert session.get(url).text == "ok"
    assert recorder.lines == ["GET /b HTTP/1.1"]


@pytest.fixture
def silent() -> Iterator[tuple[str, list[socket.socket]]]:
    """A server that accepts every connection and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/never", accepted
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


def test_a_server_that_never_answers_is_given_up_within_the_bound(
    silent: tuple[str, list[socket.socket]], caplog: pytest.LogCaptureFixture
) -> None:
    url, accepted = silent
    bound = 4.0
    started = time.monotonic()
    with (
        Session(timeout=timeouts(bound, 2), retries=2, notice=1.0) as session,
        pytest.raises(requests.ConnectionError),
    ):
        session.get(url)
    assert time.monotonic() - started < bound + 1.0
    assert len(accepted) == 3  # the first try and both retries, each cut off in time
    assert f"still waiting for {url}" in caplog.text


def test_timeouts_fit_the_bound() -> None:
    for bound in (4.0, 60.0, 300.0):
        connect, read = timeouts(bound, 2)
        assert connect > 0 and read > 0
        assert 3 * (connect + read) + 0.5 + 1.0 <= bound + 1e-9

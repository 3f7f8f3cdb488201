"""The edge as ``asu-ci serve`` runs it: raw paths, chunked bodies, slow clients and
forwarded-for trust.

HTTP client libraries normalise URLs and always send a length, so these tests
speak HTTP/1.1 over a plain socket to a real uvicorn on 127.0.0.1, configured
by the same :func:`~asu_ci.api.server.uvicorn_config` as ``serve``.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from asu_ci.api.app import create_app
from asu_ci.api.middleware import clean_path
from asu_ci.api.server import uvicorn_config
from asu_ci.config import Settings, load_settings
from asu_ci.index.render import render_tree
from tests.conftest import BUILD_PROFILE, BUILD_TARGET, BUILD_VERSION, build_fixtures

HASH = "a" * 64
MAX_BODY = 4096


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[int]:
    """``asu-ci serve``'s app and uvicorn configuration in a thread; yields the port."""
    srv = uvicorn.Server(uvicorn_config(create_app(settings, dispatch=False), settings))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield srv.servers[0].sockets[0].getsockname()[1]
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


def settings_in(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public": home / "public",
        "data": home / "data",
        "upstream": str(home / "upstream"),
        "port": 0,
    }
    values.update(overrides)
    return load_settings(None, values, environ={})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    home = tmp_path_factory.mktemp("edge")
    store = home / "public" / "store" / HASH
    store.mkdir(parents=True)
    (store / ".staging").write_text("half-published")
    (store / "build.json").write_text('{"status": 200}')
    settings = settings_in(
        home, **{"server.max_body_bytes": MAX_BODY, "server.header_timeout_seconds": 0.5}
    )
    with running(settings) as port:
        yield port, home


def raw(port: int, request: bytes) -> tuple[int, bytes]:
    """Send ``request`` as is; the status code and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def get(port: int, path: str) -> tuple[int, bytes]:
    return raw(port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/a//b", "/a/b"),
        ("/./store/.x", "/store/.x"),
        ("/json/../store/.x", "/store/.x"),
        ("/json/../../../store/.x", "/store/.x"),
        ("/json/v1/", "/json/v1/"),
        ("/json/v1/.", "/json/v1/"),
        ("/store/h/.", "/store/h/"),
        ("/..", "/"),
        ("/store/h/file.bin", "/store/h/file.bin"),
    ],
)
def test_clean_path(path: str, expected: str) -> None:
    assert clean_path(path) == expected


@pytest.mark.parametrize(
    "path",
    [
        f"/store/{HASH}/.staging",
        f"/./store/{HASH}/.staging",
        f"/json/../store/{HASH}/.staging",
        f"/store/./{HASH}/.staging",
        f"/%2e/store/{HASH}/.staging",
        f"//store//{HASH}//.staging",
    ],
)
def test_hidden_store_files_are_never_served(server: tuple[int, Path], path: str) -> None:
    port, _ = server
    status, body = get(port, path)
    assert status == 404
    assert b"half-published" not in body


def test_plain_store_file_is_served(server: tuple[int, Path]) -> None:
    status, body = get(server[0], f"/json/../store/{HASH}/build.json")
    assert (status, json.loads(body)) == (200, {"status": 200})


def chunked_post(port: int, body: bytes, piece: int = 1000) -> tuple[int, bytes]:
    chunks = b"".join(
        b"%x\r\n%s\r\n" % (len(body[i : i + piece]), body[i : i + piece])
        for i in range(0, len(body), piece)
    )
    head = (
        b"POST /api/v1/build HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    return raw(port, head + chunks + b"0\r\n\r\n")


def test_chunked_body_over_the_limit_is_413(server: tuple[int, Path]) -> None:
    packages = [f"pkg{i}" for i in range(2000)]
    body = json.dumps({"version": "23.05.4", "packages": packages}).encode()
    assert len(body) > MAX_BODY
    status, answer = chunked_post(server[0], body)
    assert status == 413
    assert json.loads(answer) == {
        "status": 413,
        "detail": f"The request body is larger than {MAX_BODY} bytes",
    }


def test_chunked_body_under_the_limit_reaches_the_app(server: tuple[int, Path]) -> None:
    body = json.dumps({"version": "99.0.0", "target": "x/y", "profile": "z"}).encode()
    status, answer = chunked_post(server[0], body, piece=7)
    # Read whole by the app: validated against the (empty) index, not refused for size.
    assert status == 400
    assert json.loads(answer)["detail"] == "Unsupported version: 99.0.0"


def closed_by_server(conn: socket.socket, within: float) -> bool:
    """Whether the server closes ``conn`` (without answering) within ``within`` seconds."""
    conn.settimeout(within)
    try:
        return conn.recv(1024) == b""
    except TimeoutError:
        return False


def test_a_silent_connection_is_closed(server: tuple[int, Path]) -> None:
    with socket.create_connection(("127.0.0.1", server[0]), timeout=5) as conn:
        assert closed_by_server(conn, within=3)


def test_headers_sent_slowly_are_cut_off(server: tuple[int, Path]) -> None:
    with socket.create_connection(("127.0.0.1", server[0]), timeout=5) as conn:
        conn.sendall(b"GET /api/v1/overview HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        closed = False
        while time.monotonic() - started < 3 and not closed:
            with contextlib.suppress(OSError):
                conn.sendall(b"X-Slow: 1\r\n")
            closed = closed_by_server(conn, within=0.1)
        assert closed


def test_kept_alive_connection_serves_the_next_request(server: tuple[int, Path]) -> None:
    """The deadline is per request: a client that keeps its connection works on."""
    request = b"GET /api/v1/overview HTTP/1.1\r\nHost: x\r\n\r\n"
    with socket.create_connection(("127.0.0.1", server[0]), timeout=5) as conn:
        for _ in range(2):
            conn.sendall(request)
            time.sleep(0.3)
            assert conn.recv(65536).startswith(b"HTTP/1.1 200")


@pytest.fixture(scope="module")
def index_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A rendered index of ath79/generic (23.05.4) from the real metadata."""
    home = tmp_path_factory.mktemp("forwarded")
    build_fixtures(home / "upstream")
    render_tree(settings_in(home))
    return home


def new_builds(port: int, forwarded_for: list[str | None]) -> list[int]:
    """POST a new (different) request per entry, with that X-Forwarded-For; the codes."""
    codes = []
    for size, address in enumerate(forwarded_for, 100):
        body = json.dumps(
            {
                "version": BUILD_VERSION,
                "target": BUILD_TARGET,
                "profile": BUILD_PROFILE,
                "rootfs_size_mb": size,
            }
        ).encode()
        extra = f"X-Forwarded-For: {address}\r\n" if address else ""
        head = (
            f"POST /api/v1/build HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        codes.append(raw(port, head.encode() + body)[0])
    return codes


def test_forwarded_for_is_not_believed_by_default(index_home: Path, tmp_path: Path) -> None:
    settings = settings_in(
        index_home, data=tmp_path / "data", **{"server.rate_limit_per_minute": 3}
    )
    with running(settings) as port:
        codes = new_builds(port, [f"10.0.0.{i}" for i in range(6)])
    assert codes == [202, 202, 202, 429, 429, 429]


def test_forwarded_for_from_a_trusted_proxy_names_the_client(
    index_home: Path, tmp_path: Path
) -> None:
    settings = settings_in(
        index_home,
        data=tmp_path / "data",
        **{"server.rate_limit_per_minute": 2, "server.forwarded_allow_ips": ["127.0.0.1"]},
    )
    with running(settings) as port:
        codes = new_builds(port, ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.1", "10.0.0.1"])
    assert codes == [202, 202, 202, 202, 429]


def test_api_docs_load_nothing_from_elsewhere(server: tuple[int, Path]) -> None:
    """/docs and /ui/ work offline: every script and style comes from this server."""
    port = server[0]
    for page in ("/docs", "/ui/"):
        status, html = get(port, page)
        assert status == 200
        assets = re.findall(rb'(?:src|href)="([^"]+)"', html)
        assert assets, html[:500]
        for asset in assets:
            assert asset.startswith(b"/"), f"{page} loads {asset!r} from elsewhere"
            code, body = get(port, asset.decode())
            assert code == 200 and len(body) > 1000, asset
    status, js = get(port, "/docs/assets/swagger-ui-bundle.js")
    assert b"SwaggerUIBundle" in js

"""The edge layer as uvicorn hands it requests: raw paths and chunked bodies.

HTTP client libraries normalise URLs and always send a length, so these tests
speak HTTP/1.1 over a plain socket to a real uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from asu_ci.api.app import create_app
from asu_ci.api.middleware import clean_path
from asu_ci.config import load_settings

HASH = "a" * 64
MAX_BODY = 4096


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    home = tmp_path_factory.mktemp("edge")
    store = home / "public" / "store" / HASH
    store.mkdir(parents=True)
    (store / ".staging").write_text("half-published")
    (store / "build.json").write_text('{"status": 200}')
    settings = load_settings(
        None,
        {
            "public": home / "public",
            "data": home / "data",
            "upstream": str(home / "upstream"),
            "server.max_body_bytes": MAX_BODY,
        },
        environ={},
    )
    app = create_app(settings, dispatch=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = srv.servers[0].sockets[0].getsockname()[1]
    try:
        yield port, home
    finally:
        srv.should_exit = True
        thread.join(timeout=10)


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

"""What the client-flow tests share: one ``asu-ci serve`` process and a session to it.

:func:`serving` starts ``asu-ci serve`` (:class:`~tests.support.frontends.Serve`)
on a local mirror, trusting the mirror's signing key; :class:`Server` is the
HTTP session the replayed clients use (``get``, ``post``, ``wait_done``, the
build queue and serve's log); :func:`check_download` fetches every image of a
200 body the way auc and owut do and checks its size and sha256.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from asu_ci.dispatch.queue import Queue
from tests.support.frontends import Serve, free_port, write_config
from tests.support.mirror import MirrorServer, mirror_key

#: The ``imagebuilder_status`` values older LuCI builds know (PROTOCOL.md).
LUCI_KNOWN_STEPS = {
    "init",
    "download_imagebuilder",
    "unpack_imagebuilder",
    "calculate_packages_hash",
    "building_image",
}
#: Enough for a few builds of the test ImageBuilder on a busy 2-core machine.
BUILD_DEADLINE = 90.0


class Server:
    def __init__(self, serve: Serve, data: Path) -> None:
        self.serve = serve
        self.url = serve.url
        self.data = data
        self.http = requests.Session()
        self.http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=32))

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.http.get(self.url + path, timeout=10, **kwargs)

    def post(self, body: dict[str, Any], **kwargs: Any) -> requests.Response:
        return self.http.post(self.url + "/api/v1/build", json=body, timeout=10, **kwargs)

    def wait_done(self, request_hash: str, interval: float = 0.2) -> requests.Response:
        deadline = time.monotonic() + BUILD_DEADLINE
        while time.monotonic() < deadline:
            r = self.get(f"/api/v1/build/{request_hash}")
            assert r.headers["X-Imagebuilder-Status"] in LUCI_KNOWN_STEPS | {"done", "failed"}
            if r.status_code != 202:
                return r
            time.sleep(interval)
        raise AssertionError(f"{request_hash} did not finish in {BUILD_DEADLINE} s")

    def queue(self) -> Queue:
        return Queue(self.data / "queue.sqlite3")

    def logged(self, text: str, within: float = 30.0) -> str:
        """The line of serve's log (at its default level) that contains ``text``."""
        deadline = time.monotonic() + within
        while True:
            for line in self.serve.log.read_text(errors="replace").splitlines():
                if text in line:
                    return line
            assert time.monotonic() < deadline, f"{text!r} not in the serve log"
            time.sleep(0.2)


@contextlib.contextmanager
def serving(mirror: MirrorServer, home: Path) -> Iterator[Server]:
    """``asu-ci serve`` with two local workers on ``mirror``, whose key it trusts."""
    assert mirror.info is not None
    config = write_config(
        home / "asu-ci.yaml",
        {
            "upstream": mirror.url,
            # the mirror signs its sha256sums with its own key, not OpenWrt's
            "signatures": {"trusted_keys": [mirror_key(mirror)]},
            "public": str(home / "public"),
            "data": str(home / "data"),
            "local": {"workers": 2},
            "server": {"rate_limit_per_minute": 1000},
        },
    )
    serve = Serve(config, free_port(), home / "serve.log").start(timeout=120)
    try:
        yield Server(serve, home / "data")
    finally:
        serve.stop()


def check_download(server: Server, body: dict[str, Any], headers: dict[str, str]) -> None:
    """Every image is served whole with Content-Length, CORS and the sha256 of the body."""
    assert body["images"], body
    for image in body["images"]:
        assert {"name", "type", "filesystem", "sha256"} <= set(image)
        r = server.get(f"/store/{body['bin_dir']}/{image['name']}", headers=headers)
        assert r.status_code == 200
        assert r.headers["Content-Length"] == str(len(r.content))
        assert "chunked" not in r.headers.get("Transfer-Encoding", "")
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert hashlib.sha256(r.content).hexdigest() == image["sha256"]


def poll_like_luci(server: Server, request_hash: str, headers: dict[str, str]) -> dict[str, Any]:
    """Three polls at once on a timer, none waiting for the previous one."""
    deadline = time.monotonic() + BUILD_DEADLINE
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        while True:
            polls = [
                pool.submit(
                    server.get,
                    f"/api/v1/build/{request_hash}?{int(time.time() * 1000)}",
                    headers=headers,
                )
                for _ in range(3)
            ]
            answers = [p.result() for p in polls]
            for r in answers:
                assert r.status_code in (200, 202), r.text
                assert r.json()["imagebuilder_status"] in LUCI_KNOWN_STEPS | {"done"}
            done = [r for r in answers if r.status_code == 200]
            if done:
                body: dict[str, Any] = done[0].json()
                return body
            assert time.monotonic() < deadline
            time.sleep(0.3)


#: The origin of the LuCI page in a router's browser.
LUCI_ORIGIN = {"Origin": "http://192.168.1.1"}


def preflight_like_luci(server: Server) -> tuple[dict[str, str], int]:
    """LuCI sends a JSON content type even on GET, so the browser preflights every call;
    the preflight is answered 204 with CORS. The headers LuCI sends, and its ``?<ms>``."""
    luci = {"Content-Type": "application/json", **LUCI_ORIGIN}
    ms = int(time.time() * 1000)
    pre = server.http.options(
        f"{server.url}/api/v1/overview?{ms}",
        headers={
            **LUCI_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "content-type",
        },
        timeout=10,
    )
    assert pre.status_code == 204
    assert pre.headers["Access-Control-Allow-Origin"] == "*"
    return luci, ms

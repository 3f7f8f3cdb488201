"""The production fast path: nginx (and Caddy) with the example configs in ``deploy/``.

A real ``asu-ci serve`` on 127.0.0.1 behind Debian's nginx started with
``deploy/nginx/asu-ci.conf`` (only the root, the ports and the app address
changed). A client's whole flow goes through the front server: index files,
a preflight, a POST, polling until done, HEAD, the downloads. Once the build
is published, polls of it are answered from ``store/<hash>/build.json`` by the
front server alone: the app's response counters do not move.

The same flow runs against ``deploy/caddy/Caddyfile`` where Caddy is installed.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asu_ci.config import Settings
from tests.conftest import BUILD_PROFILE, BUILD_TARGET, BUILD_VERSION, BuildWorld, make_build_world
from tests.support.frontends import (
    CADDY,
    NGINX,
    Caddy,
    Nginx,
    Serve,
    free_port,
    write_config,
)
from tests.support.frontends import request as http
from tests.support.tools import require

LUCI_STEPS = {"init", "download_imagebuilder", "unpack_imagebuilder", "calculate_packages_hash"}
LUCI_STEPS |= {"building_image"}
#: A build of the test ImageBuilder takes about a second; this allows for a busy machine.
BUILD_DEADLINE = 90.0
EXPOSED = "X-Imagebuilder-Status, X-Queue-Position, X-Unknown-Package, Content-Length, Retry-After"


class App:
    """``asu-ci serve`` with its own copy of the index and data folder."""

    def __init__(self, serve: Serve, public: Path) -> None:
        self.serve = serve
        self.public = public

    def answered(self, code: int) -> int:
        """How many answers with ``code`` the app itself gave (its /metrics)."""
        _, _, body = http(self.serve.url + "/metrics")
        pattern = rf'^asu_ci_responses_total{{code="{code}"}} ([0-9.e+]+)$'
        found = re.search(pattern, body.decode(), re.M)
        return int(float(found.group(1))) if found else 0


@pytest.fixture(scope="module")
def app(build_world: BuildWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    root = tmp_path_factory.mktemp("frontends")
    world = make_build_world(root, build_world.fixtures, mirror=build_world.mirror)
    assert isinstance(world.settings, Settings)
    settings = world.settings.model_dump(mode="json", exclude_none=True)
    settings["server"]["rate_limit_per_minute"] = 1000
    settings["server"]["forwarded_allow_ips"] = ["127.0.0.1"]  # as deploy/ says
    config = write_config(root / "asu-ci.yaml", settings)
    serve = Serve(config, free_port(), root / "serve.log").start()
    try:
        yield App(serve, world.settings.public_dir)
    finally:
        serve.stop()


@dataclass
class Front:
    kind: str
    url: str


@pytest.fixture(params=["nginx", "caddy"])
def front(request: pytest.FixtureRequest, app: App, tmp_path: Path) -> Iterator[Front]:
    kind = request.param
    require(NGINX if kind == "nginx" else CADDY, f"apt-get install {kind}")
    port = free_port()
    server = (
        Nginx(tmp_path / kind, app.public, app.serve.port, port)
        if kind == "nginx"
        else Caddy(tmp_path / kind, app.public, app.serve.port, port)
    )
    with server:
        yield Front(kind, server.url)


def luci_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": BUILD_VERSION,
        "target": BUILD_TARGET,
        "profile": BUILD_PROFILE.replace("_", ",", 1),
        "packages": ["luci", "tcpdump"],
        "diff_packages": True,
        "filesystem": "squashfs",
        "client": "luci/git-24.100",
    }
    body.update(changes)
    return body


def get(url: str, method: str = "GET", **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
    """A request with LuCI's habits: JSON content type on every call, a cache-busting query."""
    headers = {"Content-Type": "application/json", "Origin": "http://192.0.2.1"}
    separator = "&" if "?" in url else "?"
    return http(f"{url}{separator}{time.time_ns() // 1_000_000}", method, headers=headers)


def post(url: str, body: dict[str, Any]) -> tuple[int, dict[str, str], dict[str, Any]]:
    headers = {"Content-Type": "application/json", "Origin": "http://192.0.2.1"}
    status, head, data = http(url + "/api/v1/build", "POST", json.dumps(body).encode(), headers)
    return status, head, json.loads(data)


def assert_cors(head: dict[str, str]) -> None:
    assert head["access-control-allow-origin"] == "*"


def test_a_client_flow_through_the_front_server(front: Front, app: App) -> None:
    url = front.url
    # The index and the Firmware Selector files: static, CORS, JSON.
    for path in (
        "/.versions.json",
        "/json/v1/overview.json",
        f"/json/v1//releases/{BUILD_VERSION}/targets/{BUILD_TARGET}/index.json",
        f"/releases/{BUILD_VERSION}/targets/{BUILD_TARGET}/profiles.json",
        f"/json/v1/releases/{BUILD_VERSION}/targets/{BUILD_TARGET}/{BUILD_PROFILE}.json",
    ):
        status, head, data = get(url + path)
        assert status == 200, path
        assert_cors(head)
        assert head["content-type"].startswith("application/json"), path
        json.loads(data)
    status, head, data = get(url + "/api/v1/overview")
    assert status == 200 and json.loads(data)["latest"] == [BUILD_VERSION]
    assert_cors(head)

    # LuCI's preflight, answered by the app behind the front server.
    status, head, _ = http(
        url + "/api/v1/build",
        "OPTIONS",
        headers={
            "Origin": "http://192.0.2.1",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert status == 204
    assert_cors(head)
    assert "POST" in head["access-control-allow-methods"]

    # Errors stay JSON with CORS through the front server.
    status, head, body = post(url, luci_body(profile="nosuch_device"))
    assert status == 400 and body["status"] == 400 and body["detail"]
    assert_cors(head)
    status, head, data = get(url + "/api/v1/build/" + "0" * 64)
    assert status == 404 and json.loads(data)["status"] == 404
    assert_cors(head)
    assert head["x-imagebuilder-status"]

    # A new build: queued by the app, polled through the front server until done.
    # (its own first-boot script per front server, so each one sees a fresh build)
    first_boot = f"uci set system.@system[0].hostname='{front.kind}'\n"
    status, head, body = post(url, luci_body(defaults=first_boot))
    assert status in (200, 202), body
    digest = body["request_hash"]
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert_cors(head)
    build_json = app.public / "store" / digest / "build.json"
    deadline = time.monotonic() + BUILD_DEADLINE
    while True:
        status, head, data = get(f"{url}/api/v1/build/{digest}")
        assert head["x-imagebuilder-status"] in LUCI_STEPS | {"done"}, data
        assert_cors(head)
        if status == 200:
            break
        assert status == 202, data
        assert json.loads(data)["request_hash"] == digest
        assert time.monotonic() < deadline, "the build did not finish"
        time.sleep(0.1)
    assert data == build_json.read_bytes()

    # Published: polls are the file, answered without the app.
    before = app.answered(200)
    for method in ("GET", "HEAD", "GET"):
        status, head, data = get(f"{url}/api/v1/build/{digest}", method)
        assert status == 200
        assert head["x-imagebuilder-status"] == "done"
        assert head["x-queue-position"] == "0"
        assert head["content-type"].startswith("application/json")
        assert "immutable" in head["cache-control"]
        assert head["access-control-expose-headers"] == EXPOSED
        assert_cors(head)
        if method == "HEAD":
            assert data == b""
            assert head["content-length"] == str(build_json.stat().st_size)
        else:
            assert data == build_json.read_bytes()
    assert app.answered(200) == before

    # The identical POST acts as a poll (the app answers build.json).
    status, head, body = post(url, luci_body(defaults=first_boot, packages=["tcpdump", "luci"]))
    assert status == 200 and body["request_hash"] == digest
    assert head["x-imagebuilder-status"] == "done"

    # Downloads: whole, with Content-Length, CORS and the sha256 build.json names.
    built = json.loads(build_json.read_bytes())
    assert built["images"]
    for image in built["images"]:
        status, head, data = get(f"{url}/store/{built['bin_dir']}/{image['name']}")
        assert status == 200
        assert head["content-length"] == str(len(data))
        assert "transfer-encoding" not in head
        assert_cors(head)
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
    status, head, data = get(f"{url}/store/{digest}/status.json")
    assert status == 200 and json.loads(data)["status"] == 200
    assert head["cache-control"] == "no-cache"


def test_hidden_store_names_and_odd_methods(front: Front, app: App) -> None:
    url = front.url
    staging = app.public / "store" / ".0123.abc.staging"
    staging.mkdir(parents=True, exist_ok=True)
    (staging / "image.bin").write_bytes(b"half")
    try:
        for path in ("/store/.0123.abc.staging/image.bin", "/store/x/.hidden.json"):
            status, head, data = get(url + path)
            assert status == 404, path
            assert json.loads(data)["status"] == 404
            assert_cors(head)
    finally:
        shutil.rmtree(staging)
    # A method the file server does not take goes to the app: JSON 405.
    status, head, data = http(url + "/json/v1/overview.json", "POST", b"{}")
    assert status == 405 and json.loads(data)["detail"]
    assert_cors(head)
    status, _, data = get(url + "/nosuch/file.json")
    assert status == 404 and json.loads(data)["status"] == 404

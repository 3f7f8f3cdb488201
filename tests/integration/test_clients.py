"""Each real client's flow, replayed against ``asu-ci serve`` the way PROTOCOL.md describes it.

A real server process on 127.0.0.1, builds with the test ImageBuilder from the
local mirror, and the exact requests, headers and polling habits of LuCI, auc,
owut and the OpenWrt Firmware Selector.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import re
import time
from collections.abc import Iterator

import pytest

from tests.support.clients import (
    BUILD_DEADLINE,
    LUCI_KNOWN_STEPS,
    LUCI_ORIGIN,
    Server,
    check_download,
    poll_like_luci,
    preflight_like_luci,
    serving,
)
from tests.support.mirror import MirrorServer

pytest_plugins = ["tests.support.fixtures"]

VERSION = "23.05.4"
TARGET = "ath79/generic"
BOARD = "tplink,archer-c7-v5"
PROFILE = "tplink_archer-c7-v5"
REVISION = "r24012-d8dd03c46f"


@pytest.fixture(scope="module")
def server(
    upstream_mirror: MirrorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with serving(upstream_mirror, tmp_path_factory.mktemp("clients")) as server:
        yield server


def test_luci(server: Server) -> None:
    """LuCI: JSON content type on every call (so CORS preflights), `?<ms>`, board name with a
    comma, polls every 5 s without waiting for the previous answer."""
    luci, ms = preflight_like_luci(server)
    overview = server.get(f"/api/v1/overview?{ms}", headers=luci)
    assert overview.headers["Access-Control-Allow-Origin"] == "*"
    assert overview.json()["latest"] == [VERSION]
    assert server.get(f"/api/overview?{ms}", headers=luci).json()["latest"] == [VERSION]

    body = {
        "version": VERSION,
        "target": TARGET,
        "profile": BOARD,
        "packages": ["base-files", "busybox", "dnsmasq", "luci", "-ppp", "-ppp-mod-pppoe"],
        "diff_packages": True,
        "filesystem": "squashfs",
        "client": "luci/git-24.086.45142-09d5a38",
    }
    first = server.http.post(f"{server.url}/api/v1/build?{ms}", json=body, headers=luci, timeout=10)
    assert first.status_code == 202, first.text
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    request_hash = first.json()["request_hash"]
    assert first.json()["imagebuilder_status"] in LUCI_KNOWN_STEPS

    # LuCI fires a poll on a timer and does not wait for the previous one to return.
    result = poll_like_luci(server, request_hash, luci)
    assert result["status"] == 200
    assert result["id"] == PROFILE
    assert result["request_hash"] == request_hash
    assert "luci" in result["manifest"]
    assert "ppp-mod-pppoe" not in result["manifest"]
    check_download(server, result, LUCI_ORIGIN)


def test_auc(server: Server) -> None:
    """auc: branches.json → the board file with `_` → index files → POST with only
    packages_versions → polls every 2 s → download checked against Content-Length."""
    ua = {"User-Agent": "auc/0.3.2-1"}
    branches = server.get("/json/v1/branches.json", headers=ua).json()
    branch = next(b for b in branches if VERSION in b["versions"])
    path = branch["path"].replace("{version}", VERSION)
    board_file = server.get(f"/json/v1/{path}/targets/{TARGET}/{BOARD.replace(',', '_')}.json")
    assert board_file.status_code == 200
    device = board_file.json()
    assert device["metadata_version"] == 1
    assert device["target"] == TARGET
    assert device["version_code"] == REVISION
    arch = device["arch_packages"]
    target_index = server.get(f"/json/v1/{path}/targets/{TARGET}/index.json").json()
    assert target_index["architecture"] == arch
    feeds = server.get(f"/json/v1/{path}/packages/{arch}-index.json").json()
    installed = {name: feeds[name] for name in ("luci", "dnsmasq") if name in feeds}
    installed.update({n: v for n, v in target_index["packages"].items() if n == "base-files"})
    assert installed

    body = {
        "version": VERSION,
        "version_code": device["version_code"],
        "target": TARGET,
        "profile": BOARD.replace(",", "_"),
        "packages_versions": installed,
        "diff_packages": True,
        "filesystem": "squashfs",
    }
    first = server.post(body, headers=ua)
    assert first.status_code == 202, first.text
    done = server.wait_done(first.json()["request_hash"], interval=0.5)
    assert done.status_code == 200, done.text
    result = done.json()
    for name, version in installed.items():
        assert result["manifest"][name] == version
    check_download(server, result, ua)


def test_owut(server: Server) -> None:
    """owut: overview.json, a POST with rootfs size and a first-boot script, HEAD polls
    reading only the headers, judged by the body's `status`; reads back `request`."""
    overview = server.get("/json/v1/overview.json").json()
    assert overview["server"]["allow_defaults"] is True
    assert overview["branches"]
    defaults = "uci set system.@system[0].hostname='owut-test'\nuci commit system\n"
    body = {
        "version": VERSION,
        "version_code": REVISION,
        "target": TARGET,
        "profile": PROFILE,
        "packages": ["luci", "tcpdump"],
        "diff_packages": True,
        "filesystem": "squashfs",
        "rootfs_size_mb": 128,
        "defaults": defaults,
        "client": "owut/2024.07.01~189b2721-r1",
    }
    first = server.post(body)
    assert first.json()["status"] == 202
    request_hash = first.json()["request_hash"]
    deadline = time.monotonic() + BUILD_DEADLINE
    while True:
        head = server.http.head(f"{server.url}/api/v1/build/{request_hash}", timeout=10)
        assert head.content == b""
        assert "X-Queue-Position" in head.headers
        if head.headers["X-Imagebuilder-Status"] == "done":
            assert head.status_code == 200
            break
        assert head.headers["X-Imagebuilder-Status"] in LUCI_KNOWN_STEPS
        assert time.monotonic() < deadline
        time.sleep(0.3)
    result = server.get(f"/api/v1/build/{request_hash}").json()
    assert result["status"] == 200
    assert result["request"]["version_code"] == REVISION
    assert result["request"]["rootfs_size_mb"] == 128
    # Shared with every requester of the hash: the script (passwords) only as its sha256.
    assert "defaults" not in result["request"]
    assert result["request"]["defaults_sha256"] == hashlib.sha256(defaults.encode()).hexdigest()
    sysupgrade = next(i for i in result["images"] if i["type"] == "sysupgrade")
    image = server.get(f"/store/{result['bin_dir']}/{sysupgrade['name']}").content
    assert b"owut-test" in image, "the first-boot script is inside the image"


def test_firmware_selector(server: Server) -> None:
    """OFS: the download-server files, then its POST body, then 5 s polls of the hash."""
    versions = server.get(
        "/.versions.json", headers={"Origin": "https://firmware-selector.openwrt.org"}
    )
    assert versions.headers["Access-Control-Allow-Origin"] == "*"
    assert VERSION in versions.json()["versions_list"]
    assert versions.json()["stable_version"] == VERSION
    overview = server.get(f"/releases/{VERSION}/.overview.json").json()
    entry = next(p for p in overview["profiles"] if p["id"] == PROFILE)
    assert entry["target"] == TARGET and entry["titles"]
    profiles = server.get(f"/releases/{VERSION}/targets/{TARGET}/profiles.json").json()
    device = profiles["profiles"][PROFILE]
    packages = sorted(set(profiles["default_packages"]) | set(device["device_packages"]))
    body = {
        "profile": PROFILE,
        "target": TARGET,
        "packages": [*packages, "luci"],
        "defaults": "",
        "version_code": profiles["version_code"],
        "version": VERSION,
        "diff_packages": True,
        "client": "ofs/4.1.2",
    }
    first = server.post(body)
    assert first.status_code == 202
    assert first.json()["request_hash"], "without it OFS re-POSTs every 5 s"
    done = server.wait_done(first.json()["request_hash"])
    result = done.json()
    for field in ("bin_dir", "titles", "manifest", "build_cmd", "images", "request_hash"):
        assert result[field], field
    check_download(server, result, {})


def test_a_failed_build_is_500_and_not_retried_at_once(server: Server) -> None:
    body = {
        "version": VERSION,
        "target": TARGET,
        "profile": PROFILE,
        "packages": ["dnsmasq-full"],
        "client": "test/1",
    }
    first = server.post(body)
    assert first.status_code == 202
    request_hash = first.json()["request_hash"]
    failed = server.wait_done(request_hash)
    assert failed.status_code == 500
    result = failed.json()
    assert result["status"] == 500
    assert result["imagebuilder_status"] == "failed"
    assert failed.headers["X-Imagebuilder-Status"] == "failed"
    assert "Impossible package selection" in result["detail"]
    assert "stdout" in result and "stderr" in result
    again = server.post(body)
    assert again.status_code == 500
    assert server.queue().get(request_hash).attempts == 1  # type: ignore[union-attr]
    line = server.logged(f"failed {request_hash}")
    assert f"({VERSION} {TARGET} {PROFILE})" in line and "Impossible package selection" in line


def test_200_concurrent_identical_posts_give_one_build(server: Server) -> None:
    body = {
        "version": VERSION,
        "target": TARGET,
        "profile": PROFILE,
        "packages": ["luci", "htop"],
        "client": "test/1",
    }
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda _: server.post(body), range(200)))
    assert {r.status_code for r in answers} <= {200, 202}
    hashes = {r.json()["request_hash"] for r in answers}
    assert len(hashes) == 1
    request_hash = hashes.pop()
    assert server.wait_done(request_hash).status_code == 200
    # The worker files the row as done once its build process has exited, just after
    # the build published its result.
    deadline = time.monotonic() + 30
    while (row := server.queue().get(request_hash)) is not None and row.state == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert row is not None and row.state == "done" and row.attempts == 1
    assert re.search(
        rf"built {request_hash} \({VERSION} {TARGET} {PROFILE}\) in [0-9.]+ s",
        server.logged(f"built {request_hash}"),
    )
    again = server.post(body)
    assert again.status_code == 200
    assert again.headers["X-Imagebuilder-Status"] == "done"

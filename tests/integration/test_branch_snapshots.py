"""Release-branch snapshots (``24.10-SNAPSHOT``, ``25.12-SNAPSHOT``) served by default.

One ``asu-ci serve`` process, without a ``branches`` configuration, on the
stand-in modern mirror, which publishes both branch snapshots under
``releases/<branch>-SNAPSHOT/`` in their branch's shape (24.10: opkg, kmods
feed; 25.12: apk) with signed ImageBuilders named as the real ones are. The
real clients' flows (LuCI, owut) and a plain API request build on them; a
request without ``version_code`` is pinned to the revision the index holds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from asu_ci.config import Server as ServerLimits
from asu_ci.identity.identify import identify
from asu_ci.index.catalog import Catalog
from tests.integration.test_clients_modern import (
    BOARD,
    PROFILE,
    TARGET,
    check_in_index,
    check_requested_installed,
    device_list,
    luci_build,
    offered,
    owut_build,
    revision,
)
from tests.support.clients import Server, serving
from tests.support.mirror import BRANCH_SNAPSHOTS, MirrorServer

pytest_plugins = ["tests.support.fixtures"]

#: branch -> its snapshot, as the stand-in mirror publishes them
SNAPSHOTS = {version.split("-")[0]: version for version, _ in BRANCH_SNAPSHOTS}


@pytest.fixture(scope="module")
def server(
    modern_mirror: MirrorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with serving(modern_mirror, tmp_path_factory.mktemp("branch-snapshots")) as server:
        yield server


def test_each_branch_serves_its_snapshot_last(server: Server) -> None:
    overview = server.get("/json/v1/overview.json").json()
    assert overview["branches"]["24.10"]["versions"] == ["24.10.0", "24.10-SNAPSHOT"]
    assert overview["branches"]["25.12"]["versions"] == ["25.12.0", "25.12-SNAPSHOT"]
    assert overview["branches"]["SNAPSHOT"]["versions"] == ["SNAPSHOT"]
    assert overview["latest"] == ["25.12.0", "24.10.0"]
    assert server.get("/json/v1/latest.json").json() == {"latest": ["25.12.0", "24.10.0"]}
    listed = server.get("/.versions.json").json()["versions_list"]
    assert listed == ["25.12.0", "24.10.0"]
    branches = {b["name"]: b for b in server.get("/json/v1/branches.json").json()}
    for name, version in SNAPSHOTS.items():
        branch = branches[name]
        assert branch["versions"][-1] == version and not branch["snapshot"]
        assert branch["git_branch"] == f"openwrt-{name}"
        # the branch's targets are those of its newest release, not of the snapshot
        assert branch["targets"] == {TARGET: "mips_24kc"}
        path = branch["path"].replace("{version}", version)
        assert path == f"releases/{version}"
        # what the Firmware Selector and the site read for a version of the picker
        site = server.get(f"/{path}/.overview.json").json()
        assert site["release"] == version
        assert any(p["id"] == PROFILE for p in site["profiles"])
    # the package changes of the branch are the snapshot's (one entry per branch)
    assert branches["24.10"]["package_changes"] == overview["branches"]["24.10"]["package_changes"]


def test_the_index_holds_the_branch_snapshot_kmods_feed(
    server: Server, modern_mirror: MirrorServer
) -> None:
    assert modern_mirror.info is not None
    for version in SNAPSHOTS.values():
        entry = modern_mirror.info.target(version, TARGET)
        assert entry.kmods_rel is not None
        assert entry.kmods_rel.startswith(f"releases/{version}/targets/{TARGET}/kmods/")
        index = server.get(f"/json/v1/releases/{version}/targets/{TARGET}/index.json").json()
        assert {"kmod-usb-storage", "kmod-fs-ext4"} <= set(index["packages"])
        board = server.get(
            f"/json/v1/releases/{version}/targets/{TARGET}/{BOARD.replace(',', '_')}.json"
        )
        assert board.json()["version_code"] == revision(modern_mirror, version)


def test_a_request_with_a_kmod_builds_pinned_to_the_revision(
    server: Server, modern_mirror: MirrorServer
) -> None:
    assert modern_mirror.info is not None
    version = "24.10-SNAPSHOT"
    entry = modern_mirror.info.target(version, TARGET)
    assert entry.archive_name == (
        "openwrt-imagebuilder-24.10-SNAPSHOT-ath79-generic.Linux-x86_64.tar.zst"
    )
    wanted = ["kmod-usb-storage", "kmod-fs-ext4", "block-mount"]
    body = {"version": version, "target": TARGET, "profile": PROFILE, "packages": wanted}
    first = server.post(body)
    assert first.status_code in (200, 202), first.text
    request_hash = first.json()["request_hash"]
    done = server.wait_done(request_hash)
    assert done.status_code == 200, done.text
    result = done.json()
    current = revision(modern_mirror, version)
    assert result["version_code"] == current
    assert set(wanted) <= set(result["manifest"])
    index = offered(server, version)
    assert result["manifest"]["kmod-usb-storage"] == index["kmod-usb-storage"]
    assert all(i["name"].startswith("openwrt-24.10-snapshot-") for i in result["images"])
    assert modern_mirror.count(f"/{entry.archive_rel}") >= 1
    # The revision is part of the hash: naming it gives the same request, another does not.
    catalog = Catalog(server.data.parent / "public")
    limits = ServerLimits(rate_limit_per_minute=1000)
    assert identify(body, catalog, limits).hash == request_hash
    assert identify({**body, "version_code": current}, catalog, limits).hash == request_hash
    moved = identify({**body, "version_code": "r1-0123456789"}, catalog, limits)
    assert moved.hash != request_hash
    assert identify(body, catalog, limits).request.version_code == current


def test_luci_on_a_24_10_snapshot_device(server: Server, modern_mirror: MirrorServer) -> None:
    version = "24.10-SNAPSHOT"
    # a snapshot device compares its revision with the server's
    answer = server.get(f"/api/v1/revision/{version}/{TARGET}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["revision"] == revision(modern_mirror, version)
    packages = ["base-files", "busybox", "dnsmasq", "luci", "kmod-usb-storage", "-ppp"]
    result = luci_build(server, version, [*packages, "-ppp-mod-pppoe"])
    assert {"luci", "kmod-usb-storage", "dnsmasq"} <= set(result["manifest"])
    assert "ppp" not in result["manifest"]
    assert result["version_code"] == revision(modern_mirror, version)
    check_in_index(result["manifest"], offered(server, version))


def test_owut_on_a_25_12_snapshot_device(server: Server, modern_mirror: MirrorServer) -> None:
    """owut on an apk branch snapshot: overview's branch and path, both index files,
    packages_versions through ABI suffixes, its checks after the build."""
    version = "25.12-SNAPSHOT"
    installed = device_list(modern_mirror, version, {}, ["luci", "owut", "tcpdump"])
    result, wanted, index = owut_build(server, version, installed)
    assert set(result["request"]["packages_versions"]) == set(wanted) - {"kernel", "libc"}
    check_requested_installed(result, wanted, index)
    assert any(n.startswith("kmod-") for n in result["manifest"])

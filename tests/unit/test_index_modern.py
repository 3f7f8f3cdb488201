"""The index of today's download server: kernel-module feeds, apk, provided names,
the releases served by default, old trees and the background re-render (issue 10).

Each test builds a small tree from the real 23.05.4 metadata, shaped like
the download server of 23.05.4, 24.10.0 (opkg, ``linux_kernel``, kmods feed),
25.12.0-rc1 and snapshots (apk ``index.json`` v2, kmods feed) and 19.07.10
(no ``.targets.json``), and serves it on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from asu_ci import knowledge
from asu_ci.api.app import create_app
from asu_ci.build.imagebuilder import find_archive
from asu_ci.config import Branch, Index, Settings
from asu_ci.errors import UnknownPackagesError, UpstreamError
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import normalize
from asu_ci.index.catalog import Catalog
from asu_ci.index.refresh import Refresher, moving_versions
from asu_ci.index.render import render_tree
from asu_ci.upstream.metadata import (
    Versions,
    is_moving,
    newest_first,
    releases,
    resolve_branches,
)
from tests.support.imagebuilder import UPSTREAM_FIXTURES
from tests.support.mirror import MirrorServer
from tests.support.packages import PackageRecord, format_packages, write_apk_index, write_text

pytest_plugins = ["tests.support.fixtures"]

OLD = "releases/23.05.4"
KERNEL = {"version": "6.6.73", "release": "1", "vermagic": "0a1b2c3d4e5f"}
KMODS = "kmods/6.6.73-1-0a1b2c3d4e5f"
APK_KERNEL = {"version": "6.12.40", "release": "1", "vermagic": "77aa88bb99cc"}
APK_KMODS = "kmods/6.12.40-1-77aa88bb99cc"
#: The 13 packages of a 24.10.0 ath79/generic ``packages/`` folder: no kmod among them.
TARGET_PACKAGES = (
    "base-files",
    "busybox",
    "dnsmasq",
    "dropbear",
    "firewall4",
    "fstools",
    "kernel",
    "libc",
    "libgcc",
    "logd",
    "mtd",
    "netifd",
    "uci",
)
KMOD_PACKAGES = ("kmod-ath9k", "kmod-fs-ext4", "kmod-gpio-button-hotplug", "kmod-usb-storage")


def _opkg(folder: Path, arch: str, records: list[tuple[str, str, dict[str, Any]]]) -> None:
    text = format_packages(
        PackageRecord(name=name, version=version, feed="base", architecture=arch, **extra)
        for name, version, extra in records
    )
    write_text(folder / "Packages", text)


def _profiles(target: str, kernel: dict[str, str] | None, version: str) -> bytes:
    doc = json.loads((UPSTREAM_FIXTURES / OLD / "targets" / target / "profiles.json").read_bytes())
    doc["version_number"] = version
    if kernel is not None:
        doc["linux_kernel"] = kernel
    return json.dumps(doc).encode()


def _write(path: Path, data: bytes | str | Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    elif not isinstance(data, bytes):
        data = json.dumps(data).encode()
    path.write_bytes(data)


def _feeds_2305(root: Path) -> None:
    """23.05.4: ath79/generic only, kmods in the target's packages/, nftables provided."""
    rel = root / OLD
    _write(rel / ".targets.json", {"ath79/generic": "mips_24kc"})
    _opkg(
        rel / "targets/ath79/generic/packages",
        "mips_24kc",
        [("kernel", "5.15.162-1-abc", {}), ("kmod-usb-storage", "5.15.162-1", {})],
    )
    _opkg(
        rel / "packages/mips_24kc/base",
        "mips_24kc",
        [
            ("nftables-json", "1.0.8-1", {"provides": ("nftables",)}),
            ("nftables-nojson", "1.0.8-1", {"provides": ("nftables",)}),
            (
                "libustream-mbedtls20201210",
                "2023.05.20~f3e9fd6b-1",
                {"provides": ("libustream-mbedtls",), "abi_version": "20201210"},
            ),
            ("firewall4", "2023-09-01-598d9fbb-1", {}),
        ],
    )


def _feeds_2410(root: Path, version: str = "24.10.0") -> None:
    """24.10: opkg, linux_kernel in profiles.json, kmods in their own feed."""
    rel = root / "releases" / version
    _write(rel / ".targets.json", {"ath79/generic": "mips_24kc"})
    target = rel / "targets/ath79/generic"
    _write(target / "profiles.json", _profiles("ath79/generic", KERNEL, version))
    _opkg(target / "packages", "mips_24kc", [(n, "1.0-r1", {}) for n in TARGET_PACKAGES])
    _opkg(target / KMODS, "mips_24kc", [(n, "6.6.73-r1", {}) for n in KMOD_PACKAGES])
    _opkg(
        rel / "packages/mips_24kc/base",
        "mips_24kc",
        [("block-mount", "2024.07.14~408c2cc4-r1", {}), ("owut", "2024.07.01~3ab1b8e0-r1", {})],
    )


def _feeds_apk(root: Path, path: str, version: str) -> None:
    """25.12 and snapshots: apk index.json v2 (names without ABI suffix), kmods feed."""
    rel = root / path
    _write(rel / ".targets.json", {"x86/64": "x86_64"})
    target = rel / "targets/x86/64"
    _write(target / "profiles.json", _profiles("x86/64", APK_KERNEL, version))
    write_apk_index(target / "packages", "x86_64", {"base-files": "1700-r1", "apk-mbedtls": "3-r1"})
    write_apk_index(target / APK_KMODS, "x86_64", {"kmod-e1000e": "6.12.40-r1"})
    write_apk_index(rel / "packages/x86_64/base", "x86_64", {"libustream-mbedtls": "2025.07.18-r1"})


def _tree_1907(root: Path) -> None:
    """19.07.10: no .targets.json; .overview.json and profiles.json with arch_packages."""
    rel = root / "releases/19.07.10"
    doc = json.loads(_profiles("ath79/generic", None, "19.07.10"))
    _write(rel / "targets/ath79/generic/profiles.json", doc)
    profiles = [{"id": pid, "target": "ath79/generic"} for pid in sorted(doc["profiles"])]
    _write(rel / ".overview.json", {"release": "19.07.10", "profiles": profiles})


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "upstream"
    shutil.copytree(
        UPSTREAM_FIXTURES / OLD / "targets/ath79/generic", root / OLD / "targets/ath79/generic"
    )
    _feeds_2305(root)
    _feeds_2410(root)
    _feeds_apk(root, "releases/25.12.0-rc1", "25.12.0-rc1")
    _feeds_apk(root, "snapshots", "SNAPSHOT")
    _tree_1907(root)
    _write(
        root / ".versions.json",
        {
            "versions_list": ["25.12.0-rc1", "24.10.0", "23.05.4", "19.07.10"],
            "stable_version": "24.10.0",
            "oldstable_version": "23.05.4",
            "upcoming_version": "25.12.0-rc1",
        },
    )
    return root


@pytest.fixture
def served(tree: Path) -> Iterator[MirrorServer]:
    with MirrorServer([tree]) as mirror:
        yield mirror


def _settings(mirror: MirrorServer, home: Path, **extra: Any) -> Settings:
    return Settings(upstream=mirror.url, public=home / "public", data=home / "data", **extra)


def _load(public: Path, relpath: str) -> Any:
    return json.loads((public / relpath).read_bytes())


def _request(version: str, target: str, profile: str, packages: list[str]) -> BuildRequest:
    return BuildRequest(version=version, target=target, profile=profile, packages=packages)


def test_served_by_default_and_latest(served: MirrorServer, tmp_path: Path) -> None:
    settings = _settings(served, tmp_path)
    summary = render_tree(settings)
    public = settings.public_dir
    assert summary.versions == 4
    overview = _load(public, "json/v1/overview.json")
    assert {name: b["versions"] for name, b in overview["branches"].items()} == {
        "SNAPSHOT": ["SNAPSHOT"],
        "25.12": ["25.12.0-rc1"],
        "24.10": ["24.10.0"],
        "23.05": ["23.05.4"],
    }
    assert _load(public, "json/v1/latest.json") == {"latest": ["25.12.0-rc1", "24.10.0", "23.05.4"]}
    assert not (public / "releases/19.07.10").exists()
    # An older branch is one setting away; its targets come from .overview.json.
    older = _settings(served, tmp_path, index=Index(extra_branches=("19.07",)))
    render_tree(older)
    assert _load(public, "releases/19.07.10/.targets.json") == {"ath79/generic": "mips_24kc"}
    catalog = Catalog(public)
    assert catalog.profile("19.07.10", "ath79/generic", "8dev_carambola2") is not None
    assert _load(public, "json/v1/latest.json")["latest"] == ["25.12.0-rc1", "24.10.0", "23.05.4"]


def test_a_release_without_targets_is_an_error_naming_it(
    served: MirrorServer, tree: Path, tmp_path: Path
) -> None:
    (tree / "releases/19.07.10/.overview.json").unlink()
    settings = _settings(served, tmp_path, branches=(Branch(name="19.07"),))
    with pytest.raises(UpstreamError, match=r"^19\.07\.10: upstream has neither .*\.targets\.json"):
        render_tree(settings)


def test_kmods_feed_is_in_the_index_and_validates(served: MirrorServer, tmp_path: Path) -> None:
    settings = _settings(served, tmp_path)
    render_tree(settings)
    public = settings.public_dir
    index = _load(public, "json/v1/releases/24.10.0/targets/ath79/generic/index.json")
    assert index["architecture"] == "mips_24kc"
    assert set(index["packages"]) == set(TARGET_PACKAGES) | set(KMOD_PACKAGES)
    assert index["packages"]["kmod-usb-storage"] == "6.6.73-r1"
    catalog = Catalog(public)
    request = _request(
        "24.10.0",
        "ath79/generic",
        "8dev_carambola2",
        ["kmod-usb-storage", "kmod-fs-ext4", "block-mount"],
    )
    assert normalize(request, catalog, settings.server).packages
    bad = _request("24.10.0", "ath79/generic", "8dev_carambola2", ["kmod-no-such"])
    with pytest.raises(UnknownPackagesError, match="kmod-no-such"):
        normalize(bad, catalog, settings.server)
    # apk releases and snapshots: the kmods index.json beside packages/index.json.
    for json_dir in ("json/v1/releases/25.12.0-rc1", "json/v1/snapshots"):
        apk = _load(public, f"{json_dir}/targets/x86/64/index.json")
        assert apk == {
            "architecture": "x86_64",
            "packages": {
                "apk-mbedtls": "3-r1",
                "base-files": "1700-r1",
                "kmod-e1000e": "6.12.40-r1",
            },
        }
    assert "kmod-e1000e" in (catalog.package_names("SNAPSHOT", "x86/64") or ())


def test_provided_and_abi_names_validate_but_are_not_listed(
    served: MirrorServer, tmp_path: Path
) -> None:
    settings = _settings(served, tmp_path)
    render_tree(settings)
    public = settings.public_dir
    arch = _load(public, f"json/v1/{OLD}/packages/mips_24kc-index.json")
    assert "nftables" not in arch and "libustream-mbedtls20201210" not in arch
    assert arch["libustream-mbedtls"] == "2023.05.20~f3e9fd6b-1"
    assert _load(public, f"json/v1/{OLD}/packages/mips_24kc-names.json") == {
        "abi": {"libustream-mbedtls20201210": "libustream-mbedtls"},
        "provides": {"nftables": ["nftables-json", "nftables-nojson"]},
    }
    catalog = Catalog(public)
    names = catalog.package_names("23.05.4", "ath79/generic") or frozenset()
    assert {"nftables", "libustream-mbedtls20201210", "libustream-mbedtls"} <= names
    assert catalog.aliases("23.05.4", "ath79/generic") == {
        "libustream-mbedtls20201210": ["libustream-mbedtls"],
        "nftables": ["nftables-json", "nftables-nojson"],
    }
    for packages in (["nftables"], ["libustream-mbedtls20201210"]):
        request = _request("23.05.4", "ath79/generic", "8dev_carambola2", packages)
        assert normalize(request, catalog, settings.server)
    # A request made of everything the index offers validates, for every release.
    for version, target in (
        ("23.05.4", "ath79/generic"),
        ("24.10.0", "ath79/generic"),
        ("25.12.0-rc1", "x86/64"),
        ("SNAPSHOT", "x86/64"),
    ):
        path = catalog.path_of(version)
        target_index = _load(public, f"json/v1/{path}/targets/{target}/index.json")
        arch_index = _load(
            public, f"json/v1/{path}/packages/{target_index['architecture']}-index.json"
        )
        offered = sorted(set(target_index["packages"]) | set(arch_index))
        profile = "generic" if target == "x86/64" else "8dev_carambola2"
        assert len(offered) > 2
        assert normalize(_request(version, target, profile, offered), catalog, settings.server)


def _paths(mirror: MirrorServer) -> list[str]:
    return [record.path for record in mirror.log]


def _moves(path: str) -> bool:
    """A request a refresh cycle makes: .versions.json, SNAPSHOT or a branch snapshot
    (this tree has none: each costs a 404 for .targets.json and .overview.json)."""
    return (
        path == "/.versions.json"
        or re.match(r"/(snapshots|releases/\d+\.\d+-SNAPSHOT)/", path) is not None
    )


def test_a_refresh_cycle_asks_for_what_moves_only(
    served: MirrorServer, tree: Path, tmp_path: Path
) -> None:
    settings = _settings(served, tmp_path)
    cold = render_tree(settings)
    refresher = Refresher(settings)
    served.reset()
    summary = refresher.cycle()
    assert summary is not None
    asked = _paths(served)
    assert asked and summary.requests == len(asked)
    assert all(_moves(p) for p in asked), asked
    assert len(asked) < cold.requests / 2
    # A moved snapshot is seen: its kmods feed and packages are read again.
    write_apk_index(
        tree / "snapshots/targets/x86/64" / APK_KMODS, "x86_64", {"kmod-igc": "6.12.40-r2"}
    )
    served.reset()
    assert refresher.cycle() is not None
    public = settings.public_dir
    snapshot = _load(public, "json/v1/snapshots/targets/x86/64/index.json")["packages"]
    assert "kmod-igc" in snapshot and "kmod-e1000e" not in snapshot
    # A new point release appears in .versions.json: every release is asked again, once.
    _feeds_2410(tree, "24.10.1")
    versions = json.loads((tree / ".versions.json").read_bytes())
    versions["versions_list"].insert(0, "24.10.1")
    versions["stable_version"] = "24.10.1"
    _write(tree / ".versions.json", versions)
    served.reset()
    assert refresher.cycle() is not None
    asked = _paths(served)
    assert any(p.startswith("/releases/24.10.1/") for p in asked)
    assert any(p.startswith("/releases/23.05.4/") for p in asked)
    assert _load(public, "json/v1/latest.json")["latest"] == ["25.12.0-rc1", "24.10.1", "23.05.4"]
    status = refresher.status()
    assert status["renders_since_start"] == 3 and status["last_error"] == ""
    assert status["last_render_requests"] == len(asked)
    # The next cycle is quiet again.
    served.reset()
    assert refresher.cycle() is not None
    assert all(_moves(p) for p in _paths(served))


def test_one_release_can_be_read_again_alone(served: MirrorServer, tmp_path: Path) -> None:
    settings = _settings(served, tmp_path)
    render_tree(settings)
    served.reset()
    summary = render_tree(settings, only={"24.10.0"})
    asked = _paths(served)
    assert summary.versions == 4
    # (and the branch snapshots this tree lacks: a version not served is looked for again)
    missing = (
        "/releases/23.05-SNAPSHOT/",
        "/releases/24.10-SNAPSHOT/",
        "/releases/25.12-SNAPSHOT/",
    )
    assert all(
        p == "/.versions.json" or p.startswith(("/releases/24.10.0/", *missing)) for p in asked
    ), asked
    assert "/releases/24.10.0/targets/ath79/generic/profiles.json" in asked
    # The releases not read again keep their files.
    assert (settings.public_dir / f"json/v1/{OLD}/packages/mips_24kc-index.json").is_file()


def test_a_missing_file_makes_a_release_read_again(served: MirrorServer, tmp_path: Path) -> None:
    settings = _settings(served, tmp_path)
    render_tree(settings)
    lost = settings.public_dir / f"json/v1/{OLD}/targets/ath79/generic/index.json"
    lost.unlink()
    served.reset()
    render_tree(settings, only=set())
    assert lost.is_file()
    assert any(p.startswith(f"/{OLD}/") for p in _paths(served))


def test_a_failed_cycle_is_shown_and_the_tree_kept(
    served: MirrorServer, tree: Path, tmp_path: Path
) -> None:
    settings = _settings(served, tmp_path)
    render_tree(settings)
    before = (settings.public_dir / "json/v1/overview.json").read_bytes()
    (tree / "snapshots/.targets.json").write_text("{broken")
    refresher = Refresher(settings)
    assert refresher.cycle() is None
    status = refresher.status()
    assert "snapshots/.targets.json" in status["last_error"]
    assert status["renders_since_start"] == 1 and status["last_render_requests"] is None
    assert (settings.public_dir / "json/v1/overview.json").read_bytes() == before


def test_stats_show_the_background_render(served: MirrorServer, tmp_path: Path) -> None:
    settings = _settings(served, tmp_path, index=Index(refresh_seconds=3600))
    render_tree(settings)
    app = create_app(settings, dispatch=False, refresher=Refresher(settings))
    with TestClient(app) as client:
        deadline = time.monotonic() + 30
        index: dict[str, Any] = {}
        while time.monotonic() < deadline:
            index = client.get("/api/v1/stats").json()["index"]
            if index["renders_since_start"]:
                break
            time.sleep(0.05)
        assert index["renders_since_start"] == 1, index
        assert index["refresh_seconds"] == 3600
        assert index["last_render_requests"] > 0 and index["last_error"] == ""
        assert index["last_render_at"] <= index["next_render_at"]
    plain = create_app(settings, dispatch=False)
    with TestClient(plain) as client:
        assert client.get("/api/v1/stats").json()["index"] == {"refresh_seconds": 0}


def test_the_modern_stand_in_mirror(modern_mirror: MirrorServer, tmp_path: Path) -> None:
    """The stand-ins' 23.05.4, 24.10.0 (opkg), 25.12.0 and SNAPSHOT (apk) trees."""
    assert modern_mirror.info is not None
    settings = _settings(modern_mirror, tmp_path)
    render_tree(settings)
    public = settings.public_dir
    assert _load(public, "json/v1/latest.json") == {"latest": ["25.12.0", "24.10.0"]}
    catalog = Catalog(public)
    wanted = ["kmod-usb-storage", "kmod-fs-ext4", "block-mount"]
    for version in ("24.10.0", "25.12.0", "SNAPSHOT"):
        entry = modern_mirror.info.target(version, "ath79/generic")
        assert entry.kmods_rel is not None
        path = catalog.path_of(version)
        index = _load(public, f"json/v1/{path}/targets/ath79/generic/index.json")
        kmods = [name for name in index["packages"] if name.startswith("kmod-")]
        assert "kmod-usb-storage" in kmods and "kmod-fs-ext4" in kmods, version
        request = _request(version, "ath79/generic", "tplink_archer-c7-v5", wanted)
        assert normalize(request, catalog, settings.server).packages
        arch = _load(public, f"json/v1/{path}/packages/mips_24kc-index.json")
        offered = sorted(set(index["packages"]) | set(arch))
        assert len(offered) > 1000
        for start in range(0, len(offered), 1000):  # a request holds at most 1,024 names
            chunk = _request(
                version, "ath79/generic", "tplink_archer-c7-v5", offered[start:][:1000]
            )
            assert normalize(chunk, catalog, settings.server)
    assert not (public / "releases/23.05.4").exists()  # 23.05 is no longer named upstream


def test_a_broken_linux_kernel_costs_its_target_the_kmods_only(
    served: MirrorServer, tree: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    profiles = tree / "releases/24.10.0/targets/ath79/generic/profiles.json"
    doc = json.loads(profiles.read_bytes())
    doc["linux_kernel"] = {**KERNEL, "vermagic": "../../x"}
    profiles.write_text(json.dumps(doc))
    settings = _settings(served, tmp_path)
    assert render_tree(settings).versions == 4
    index = _load(settings.public_dir, "json/v1/releases/24.10.0/targets/ath79/generic/index.json")
    assert set(index["packages"]) == set(TARGET_PACKAGES)
    assert "linux_kernel is not" in caplog.text and "kernel modules are not indexed" in caplog.text


# --- release-branch snapshots (24.10-SNAPSHOT) ------------------------------------------------


def test_the_default_choice_adds_each_branch_snapshot(caplog: pytest.LogCaptureFixture) -> None:
    versions = Versions(
        versions_list=("25.12.0-rc1", "24.10.1", "24.10.0", "23.05.4", "22.03.7"),
        stable_version="24.10.1",
        oldstable_version="23.05.4",
        upcoming_version="25.12.0-rc1",
    )
    chosen = resolve_branches(None, versions, extra=("22.03",))
    assert {b.name: b.versions for b in chosen} == {
        "SNAPSHOT": ["SNAPSHOT"],
        "25.12": ["25.12.0-rc1", "25.12-SNAPSHOT"],
        "24.10": ["24.10.1", "24.10.0", "24.10-SNAPSHOT"],
        "23.05": ["23.05.4", "23.05-SNAPSHOT"],
        "22.03": ["22.03.7", "22.03-SNAPSHOT"],
    }
    paths = {r.version: r.path for r in releases(chosen)}
    assert paths["24.10-SNAPSHOT"] == "releases/24.10-SNAPSHOT"
    assert paths["SNAPSHOT"] == "snapshots"
    branch = next(b for b in chosen if b.name == "24.10")
    assert branch.git_branch == "openwrt-24.10" and not branch.snapshot
    # A configured list keeps full control: no implicit branch snapshot, one when listed.
    configured = resolve_branches(
        [Branch(name="24.10"), Branch(name="25.12", versions=["25.12-SNAPSHOT", "25.12.0-rc1"])],
        versions,
    )
    assert [b.versions for b in configured] == [
        ["24.10.1", "24.10.0"],
        ["25.12.0-rc1", "25.12-SNAPSHOT"],
    ]
    assert is_moving("SNAPSHOT") and is_moving("24.10-SNAPSHOT")
    assert not is_moving("24.10.0") and not is_moving("main-SNAPSHOT")
    # Newest first, a branch snapshot comes after its branch's releases and candidates.
    assert newest_first(["24.10-SNAPSHOT", "24.10.0-rc2", "24.10.0", "23.05.5", "SNAPSHOT"]) == [
        "SNAPSHOT",
        "24.10.0",
        "24.10.0-rc2",
        "24.10-SNAPSHOT",
        "23.05.5",
    ]


def test_a_branch_snapshot_is_a_member_of_its_branch() -> None:
    assert knowledge.branch_of("24.10-SNAPSHOT") == "24.10"
    assert knowledge.series("24.10-SNAPSHOT") == knowledge.series("24.10.1") == (24, 10)
    known = knowledge.load()
    for target, profile in (("ath79/generic", "tplink_archer-c6-v2"), ("x86/64", "generic")):
        rules = known.rules_for("24.10-SNAPSHOT", target, profile)
        assert rules == known.rules_for("24.10.0", target, profile)
    assert any(
        "ipq-wifi-tplink_archer-c6-v2" in r.add
        for r in known.rules_for("24.10-SNAPSHOT", "ath79/generic", "tplink_archer-c6-v2")
    )
    # The ImageBuilder keeps VERSION_NUMBER's case in its name (target/imagebuilder IB_NAME).
    sums = {
        "openwrt-imagebuilder-24.10-SNAPSHOT-ath79-generic.Linux-x86_64.tar.zst": "a" * 64,
        "openwrt-imagebuilder-24.10.0-ath79-generic.Linux-x86_64.tar.zst": "b" * 64,
    }
    assert find_archive(sums, "24.10-SNAPSHOT", "ath79/generic") == (
        "openwrt-imagebuilder-24.10-SNAPSHOT-ath79-generic.Linux-x86_64.tar.zst",
        "a" * 64,
    )
    assert find_archive(sums, "24.10.1", "ath79/generic") is None


def test_missing_branch_snapshots_are_skipped_with_one_warning_each(
    served: MirrorServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = _settings(served, tmp_path)
    with caplog.at_level(logging.WARNING, logger="asu_ci.index.render"):
        assert render_tree(settings).versions == 4
    for version in ("25.12-SNAPSHOT", "24.10-SNAPSHOT", "23.05-SNAPSHOT"):
        lines = [r.getMessage() for r in caplog.records if r.getMessage().endswith(version)]
        assert lines == [
            f"{served.url}/releases/{version}: no .targets.json upstream; not serving {version}"
        ], lines
    overview = _load(settings.public_dir, "json/v1/overview.json")
    assert all(
        "SNAPSHOT" not in v
        for b in overview["branches"].values()
        for v in b["versions"]
        if b["name"] != "SNAPSHOT"
    )
    # Configured, a missing branch snapshot is an error naming it, never skipped.
    configured = _settings(
        served,
        tmp_path / "configured",
        branches=(Branch(name="24.10", versions=["24.10-SNAPSHOT"]),),
    )
    with pytest.raises(UpstreamError, match=r"^24\.10-SNAPSHOT: upstream has neither"):
        render_tree(configured)


def test_a_branch_snapshot_upstream_is_served_in_its_branch_and_moves(
    served: MirrorServer, tree: Path, tmp_path: Path
) -> None:
    _feeds_2410(tree, "24.10-SNAPSHOT")
    settings = _settings(served, tmp_path)
    assert render_tree(settings).versions == 5
    public = settings.public_dir
    overview = _load(public, "json/v1/overview.json")
    assert overview["branches"]["24.10"]["versions"] == ["24.10.0", "24.10-SNAPSHOT"]
    assert overview["branches"]["24.10"]["path"] == "releases/{version}"
    branches = {b["name"]: b for b in _load(public, "json/v1/branches.json")}
    assert branches["24.10"]["versions"] == ["24.10.0", "24.10-SNAPSHOT"]
    assert branches["24.10"]["branch_off_rev"] == 27990
    assert _load(public, "json/v1/latest.json") == {"latest": ["25.12.0-rc1", "24.10.0", "23.05.4"]}
    assert "24.10-SNAPSHOT" not in _load(public, ".versions.json")["versions_list"]
    assert _load(public, "releases/24.10-SNAPSHOT/.targets.json") == {"ath79/generic": "mips_24kc"}
    index = _load(public, "json/v1/releases/24.10-SNAPSHOT/targets/ath79/generic/index.json")
    assert set(KMOD_PACKAGES) <= set(index["packages"])
    catalog = Catalog(public)
    assert catalog.path_of("24.10-SNAPSHOT") == "releases/24.10-SNAPSHOT"
    assert catalog.package_changes("24.10-SNAPSHOT") == catalog.package_changes("24.10.0")
    request = _request("24.10-SNAPSHOT", "ath79/generic", "8dev_carambola2", ["kmod-usb-storage"])
    assert normalize(request, catalog, settings.server).packages
    # A refresh cycle reads it again (and never the 24.10.0 release beside it).
    assert {"SNAPSHOT", "24.10-SNAPSHOT"} <= moving_versions(catalog)
    kmods = tree / "releases/24.10-SNAPSHOT/targets/ath79/generic" / KMODS
    _opkg(kmods, "mips_24kc", [("kmod-usb-net", "6.6.74-r1", {})])
    served.reset()
    assert Refresher(settings).cycle() is not None
    asked = _paths(served)
    assert f"/releases/24.10-SNAPSHOT/targets/ath79/generic/{KMODS}/Packages" in asked
    assert not any(p.startswith("/releases/24.10.0/") for p in asked), asked
    index = _load(public, "json/v1/releases/24.10-SNAPSHOT/targets/ath79/generic/index.json")
    assert "kmod-usb-net" in index["packages"] and "kmod-usb-storage" not in index["packages"]
    # Gone upstream again: skipped with a warning, the branch keeps its release.
    shutil.rmtree(tree / "releases/24.10-SNAPSHOT")
    assert Refresher(settings).cycle() is not None
    assert _load(public, "json/v1/overview.json")["branches"]["24.10"]["versions"] == ["24.10.0"]
    assert not (public / "json/v1/releases/24.10-SNAPSHOT").exists()

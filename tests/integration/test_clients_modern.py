"""The real clients' flows on today's releases: 24.10.0 (opkg, kmods feed), 25.12.0 and
SNAPSHOT (apk), and upgrades across releases (23.05 → 24.10, 24.10 → 25.12).

One ``asu-ci serve`` process on the stand-in modern mirror (``modern_mirror``);
LuCI, auc, owut and the Firmware Selector are replayed as PROTOCOL.md and their
sources describe them, including owut's check after a build: every package the
image holds must be one the target and architecture index offers, in the same
version (kernel modules come from the kmods feed, apk names libraries with their
ABI suffix), and every package it asked for must be in the image in the version
the index promised.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

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

TARGET = "ath79/generic"
BOARD = "tplink,archer-c7-v5"
PROFILE = "tplink_archer-c7-v5"
RELEASES = ["24.10.0", "25.12.0", "SNAPSHOT"]
#: owut never compares these with the index (its ``non_upgradable``).
NON_UPGRADABLE = {"kernel", "libgcc", "libc"}


@pytest.fixture(scope="module")
def server(
    modern_mirror: MirrorServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    with serving(modern_mirror, tmp_path_factory.mktemp("clients-modern")) as server:
        yield server


def revision(mirror: MirrorServer, version: str) -> str:
    assert mirror.info is not None
    return mirror.info.target(version, TARGET).revision


def release_dir(version: str) -> str:
    return "snapshots" if version == "SNAPSHOT" else f"releases/{version}"


def revision_number(version_code: str) -> int:
    found = re.match(r"r(\d+)-", version_code)
    assert found, version_code
    return int(found.group(1))


def offered(server: Server, version: str) -> dict[str, str]:
    """What owut downloads: the architecture index overlaid with the target index."""
    overview = server.get("/json/v1/overview.json").json()
    branch = next(b for b in overview["branches"].values() if version in b["versions"])
    path = branch["path"].replace("{version}", version)
    target = server.get(f"/json/v1/{path}/targets/{TARGET}/index.json")
    assert target.status_code == 200
    arch = server.get(f"/json/v1/{path}/packages/{target.json()['architecture']}-index.json")
    assert arch.status_code == 200
    return {**arch.json(), **target.json()["packages"]}


def index_name(installed: str, index: dict[str, str]) -> str | None:
    """The index's name of an installed package: the same, or the name without the ABI
    suffix apk and opkg append to libraries (``libustream-mbedtls20201210``, ``libfoo2-3``)."""
    if installed in index:
        return installed
    found = [
        name
        for name in index
        if installed.startswith(name) and re.fullmatch(r"-?\d[0-9a-z.]*", installed[len(name) :])
    ]
    return max(found, key=len) if found else None


def check_in_index(manifest: dict[str, str], index: dict[str, str]) -> None:
    """owut's after-build view: every installed package is offered in that very version
    (stricter than owut, which skips kernel, libc and libgcc)."""
    wrong = {}
    for name, version in manifest.items():
        known = index_name(name, index)
        if known is None or index[known] != version:
            wrong[name] = (version, known and index[known])
    assert not wrong, f"installed but not offered so: {wrong}"
    assert any(n.startswith("kmod-") for n in manifest), "no kernel module to check"


def poll_like_owut(server: Server, request_hash: str) -> dict[str, Any]:
    """HEAD polls reading only the headers, then one GET judged by the body's status."""
    deadline = time.monotonic() + BUILD_DEADLINE
    while True:
        head = server.http.head(f"{server.url}/api/v1/build/{request_hash}", timeout=10)
        assert head.content == b""
        assert "X-Queue-Position" in head.headers
        if head.headers["X-Imagebuilder-Status"] == "done":
            assert head.status_code == 200
            break
        assert head.headers["X-Imagebuilder-Status"] in LUCI_KNOWN_STEPS, head.headers
        assert time.monotonic() < deadline
        time.sleep(0.3)
    body: dict[str, Any] = server.get(f"/api/v1/build/{request_hash}").json()
    assert body["status"] == 200, body
    return body


def luci_build(server: Server, version: str, packages: list[str]) -> dict[str, Any]:
    """LuCI: JSON content type on every call (so CORS preflights), ``?<ms>``, the board
    name with a comma, the device's top-level packages, concurrent 5 s polls."""
    luci, ms = preflight_like_luci(server)
    body = {
        "version": version,
        "target": TARGET,
        "profile": BOARD,
        "packages": packages,
        "diff_packages": True,
        "filesystem": "squashfs",
        "client": "luci/git-24.086.45142-09d5a38",
    }
    first = server.http.post(f"{server.url}/api/v1/build?{ms}", json=body, headers=luci, timeout=10)
    assert first.status_code in (200, 202), first.text
    assert first.headers["Access-Control-Allow-Origin"] == "*"
    assert first.json()["imagebuilder_status"] in LUCI_KNOWN_STEPS | {"done"}
    result = poll_like_luci(server, first.json()["request_hash"], luci)
    assert result["status"] == 200
    assert result["id"] == PROFILE
    check_download(server, result, LUCI_ORIGIN)
    return result


def owut_build(
    server: Server, version: str, installed: list[str], **extra: Any
) -> tuple[dict[str, Any], list[str], dict[str, str]]:
    """owut: overview.json (branch, path, package_changes), profiles.json from the
    upstream it names, both index files; the branch's package changes applied to the
    device's top-level packages; ``packages_versions`` when the index has a version for
    every one, else ``packages``; HEAD polls; the image checked against its sha256.
    Returns the 200 body, the top-level packages asked for and the index."""
    overview = server.get("/json/v1/overview.json").json()
    assert overview["server"]["allow_defaults"] is True
    branch = next(
        b
        for b in overview["branches"].values()
        if b.get("enabled", True) and b["targets"] and version in b["versions"]
    )
    directory = branch["path"].replace("{version}", version)
    assert directory == release_dir(version)
    platform = server.http.get(
        f"{overview['upstream_url']}/{directory}/targets/{TARGET}/profiles.json", timeout=10
    ).json()
    assert BOARD.replace(",", "_") in platform["profiles"]
    assert platform["linux_kernel"]["version"]  # owut's kernel of the new release
    rev_num = revision_number(platform["version_code"])
    wanted = list(installed)
    for change in branch["package_changes"]:
        if change["revision"] > rev_num or change["source"] not in wanted:
            continue
        wanted.remove(change["source"])
        if change.get("target"):
            wanted.append(change["target"])
    wanted = sorted(set(wanted))
    index = offered(server, version)
    versions = {name: index.get(name) for name in wanted if name not in ("kernel", "libc")}
    body: dict[str, Any] = {
        "client": "owut/2024.07.01~189b2721-r1",
        "target": TARGET,
        "profile": BOARD.replace(",", "_"),
        "version": version,
        "version_code": platform["version_code"],
        "filesystem": "squashfs",
        "diff_packages": True,
        **extra,
    }
    if None in versions.values():
        body["packages"] = wanted
    else:
        body["packages_versions"] = versions
    first = server.post(body)
    assert first.json()["status"] in (200, 202), first.text
    result = poll_like_owut(server, first.json()["request_hash"])
    assert result["version_code"] == platform["version_code"]
    sysupgrade = next(i for i in result["images"] if i["type"] == "sysupgrade")
    check_download(server, {**result, "images": [sysupgrade]}, {})
    check_in_index(result["manifest"], index)
    return result, wanted, index


def check_requested_installed(
    result: dict[str, Any], wanted: list[str], index: dict[str, str]
) -> None:
    """owut's check of its request: each top-level package is in the image in the index's
    version; one the server renamed by a release rule (recorded in ``package_changes``)
    under its new name."""
    renamed = {c["source"]: c.get("target") for c in result["package_changes"]}
    manifest = result["manifest"]
    for name in wanted:
        if name in NON_UPGRADABLE:
            continue
        if name in renamed:
            name = renamed[name] or ""
            if not name:
                continue
        installed = [m for m in manifest if index_name(m, index) == name]
        assert installed, f"{name} is not in the image"
        assert manifest[installed[0]] == index[name], name


def device_list(
    mirror: MirrorServer, version: str, swap: dict[str, str], extras: list[str]
) -> list[str]:
    """A device's top-level packages: the profile's default and device packages (with the
    user's swaps; a name only a package provides as the package the device holds) and the
    user's extras, as its release published them."""
    assert mirror.info is not None
    profiles = mirror.info.target(version, TARGET).profiles
    device = profiles["profiles"][PROFILE]["device_packages"]
    removed = {p[1:] for p in device if p.startswith("-")}
    base = {*profiles["default_packages"], *(p for p in device if not p.startswith("-"))}
    swap = {**PROVIDERS, **swap}
    return sorted({swap.get(p, p) for p in base - removed} | set(extras))


#: What a device holds for a name in ``default_packages`` that only a package provides.
PROVIDERS = {"nftables": "nftables-json"}
WOLFSSL = {"libustream-mbedtls": "libustream-wolfssl", "wpad-basic-mbedtls": "wpad-basic-wolfssl"}


# --- each client on each release shape ------------------------------------------------------


@pytest.mark.parametrize("version", RELEASES)
def test_luci(server: Server, modern_mirror: MirrorServer, version: str) -> None:
    luci = {"Content-Type": "application/json", "Origin": "http://192.168.1.1"}
    ms = int(time.time() * 1000)
    latest = server.get(f"/api/v1/overview?{ms}", headers=luci).json()["latest"]
    assert latest == server.get(f"/api/overview?{ms}", headers=luci).json()["latest"]
    if version == "SNAPSHOT":
        # a snapshot device compares its revision with the server's
        answer = server.get(f"/api/v1/revision/SNAPSHOT/{TARGET}?{ms}", headers=luci)
        assert answer.json()["revision"] == revision(modern_mirror, version)
    else:
        assert version in latest
    packages = ["base-files", "busybox", "dnsmasq", "luci", "kmod-usb-storage", "-ppp"]
    result = luci_build(server, version, [*packages, "-ppp-mod-pppoe"])
    manifest = result["manifest"]
    assert {"luci", "kmod-usb-storage", "dnsmasq"} <= set(manifest)
    assert "ppp-mod-pppoe" not in manifest and "ppp" not in manifest
    assert result["version_code"] == revision(modern_mirror, version)
    check_in_index(manifest, offered(server, version))


@pytest.mark.parametrize("version", RELEASES)
def test_auc(server: Server, version: str) -> None:
    """auc: branches.json → the board file with `_` → index files → POST with only
    packages_versions (a library by its ABI-free name, a kmod of the kmods feed) →
    polls every 2 s → download checked against Content-Length and sha256."""
    ua = {"User-Agent": "auc/0.3.2-1"}
    branches = server.get("/json/v1/branches.json", headers=ua).json()
    branch = next(b for b in branches if version in b["versions"])
    assert branch["snapshot"] is (version == "SNAPSHOT")
    path = branch["path"].replace("{version}", version)
    board = server.get(f"/json/v1/{path}/targets/{TARGET}/{BOARD.replace(',', '_')}.json")
    assert board.status_code == 200
    device = board.json()
    assert device["metadata_version"] == 1 and device["target"] == TARGET
    target_index = server.get(f"/json/v1/{path}/targets/{TARGET}/index.json").json()
    assert target_index["architecture"] == device["arch_packages"]
    feeds = server.get(f"/json/v1/{path}/packages/{device['arch_packages']}-index.json").json()
    index = {**feeds, **target_index["packages"]}
    names = ["base-files", "dnsmasq", "luci", "libustream-mbedtls", "kmod-usb-storage"]
    installed = {name: index[name] for name in names}
    assert "kmod-usb-storage" in target_index["packages"], "kmods feed not in the target index"

    body = {
        "version": version,
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
    manifest = result["manifest"]
    for name, wanted in installed.items():
        got = [m for m in manifest if index_name(m, index) == name]
        assert got and manifest[got[0]] == wanted, (name, got)
    check_download(server, result, ua)


@pytest.mark.parametrize("version", RELEASES)
def test_owut(server: Server, modern_mirror: MirrorServer, version: str) -> None:
    """owut on a device of that release: the same version, rootfs size and first-boot
    script, its checks after the build."""
    installed = device_list(modern_mirror, version, {}, ["luci", "owut", "tcpdump"])
    script = "uci set system.@system[0].hostname='owut-test'\nuci commit system\n"
    result, wanted, index = owut_build(
        server, version, installed, rootfs_size_mb=128, defaults=script
    )
    # on its own release every package it holds has a version in the index
    assert set(result["request"]["packages_versions"]) == set(wanted) - {"kernel", "libc"}
    assert result["request"]["rootfs_size_mb"] == 128
    # shared with every requester of the hash: the script (passwords) only as its sha256
    assert "defaults" not in result["request"]
    assert result["request"]["defaults_sha256"] == hashlib.sha256(script.encode()).hexdigest()
    check_requested_installed(result, wanted, index)
    sysupgrade = next(i for i in result["images"] if i["type"] == "sysupgrade")
    image = server.get(f"/store/{result['bin_dir']}/{sysupgrade['name']}").content
    assert b"owut-test" in image, "the first-boot script is inside the image"


@pytest.mark.parametrize("version", RELEASES)
def test_firmware_selector(server: Server, version: str) -> None:
    """OFS: the download-server files (a snapshot's through ``snapshots//``), its POST
    body with every default and device package, 5 s polls of the hash."""
    ofs = {"Origin": "https://firmware-selector.openwrt.org"}
    versions = server.get("/.versions.json", headers=ofs)
    assert versions.headers["Access-Control-Allow-Origin"] == "*"
    overview_path = (
        "/snapshots//.overview.json"
        if version == "SNAPSHOT"
        else f"/releases/{version}/.overview.json"
    )
    if version != "SNAPSHOT":
        assert version in versions.json()["versions_list"]
    overview = server.get(overview_path, headers=ofs).json()
    entry = next(p for p in overview["profiles"] if p["id"] == PROFILE)
    assert entry["target"] == TARGET and entry["titles"]
    folder = "snapshots" if version == "SNAPSHOT" else f"releases/{version}"
    profiles = server.get(f"/{folder}/targets/{TARGET}/profiles.json", headers=ofs).json()
    device = profiles["profiles"][PROFILE]
    packages = sorted(set(profiles["default_packages"]) | set(device["device_packages"]))
    body = {
        "profile": PROFILE,
        "target": TARGET,
        "packages": [*packages, "luci", "kmod-fs-ext4"],
        "defaults": "",
        "version_code": profiles["version_code"],
        "version": version,
        "diff_packages": True,
        "client": "ofs/4.1.2",
    }
    first = server.post(body, headers=ofs)
    assert first.status_code == 202, first.text
    assert first.json()["request_hash"], "without it OFS re-POSTs every 5 s"
    result = server.wait_done(first.json()["request_hash"]).json()
    for field in ("bin_dir", "titles", "manifest", "build_cmd", "images", "request_hash"):
        assert result[field], field
    assert "kmod-fs-ext4" in result["manifest"]
    check_download(server, result, ofs)


# --- upgrades across releases ---------------------------------------------------------------


@pytest.fixture(scope="module")
def device_2305(modern_mirror: MirrorServer) -> list[str]:
    packages = device_list(
        modern_mirror,
        "23.05.4",
        WOLFSSL,
        ["auc", "luci", "luci-app-opkg", "luci-i18n-opkg-de", "px5g-wolfssl", "tcpdump"],
    )
    assert {"opkg", "libustream-wolfssl", "wpad-basic-wolfssl"} <= set(packages)
    return packages


@pytest.fixture(scope="module")
def device_2410(modern_mirror: MirrorServer) -> list[str]:
    packages = device_list(modern_mirror, "24.10.0", {}, ["luci", "luci-app-opkg", "owut"])
    assert "opkg" in packages
    return packages


def check_2305_to_2410(result: dict[str, Any], renamed_by_client: bool) -> None:
    """The 24.10 image of a 23.05 device; the renames are in ``package_changes`` unless the
    client (owut) made them itself: then only the server's own rules are recorded."""
    manifest = result["manifest"]
    names = {re.sub(r"\d{8}$", "", m) for m in manifest}
    assert {"owut", "luci-app-package-manager", "luci-i18n-package-manager-de"} <= names
    assert {"libustream-mbedtls", "px5g-mbedtls", "wpad-basic-mbedtls", "opkg"} <= names
    assert {"kmod-nft-nat6", "luci-app-diag-core"} <= names  # mandatory since r20282, r25984
    gone = {"auc", "luci-app-opkg", "luci-i18n-opkg-de", "px5g-wolfssl", "wpad-basic-wolfssl"}
    assert not gone & names and not any("wolfssl" in m for m in manifest)
    changes = {(c["source"], c.get("target")) for c in result["package_changes"]}
    renames = {
        ("auc", "owut"),
        ("luci-app-opkg", "luci-app-package-manager"),
        ("px5g-wolfssl", "px5g-mbedtls"),
        ("wpad-basic-wolfssl", "wpad-basic-mbedtls"),
    }
    assert ("luci-i18n-opkg-de", "luci-i18n-package-manager-de") in changes  # a release rule
    assert (renames & changes) == (set() if renamed_by_client else renames)
    assert ("opkg", "apk-mbedtls") not in changes  # r28056 is after 24.10's branch-off


def check_2410_to_2512(result: dict[str, Any], renamed_by_client: bool) -> None:
    manifest = result["manifest"]
    assert {"apk-mbedtls", "luci-app-package-manager", "owut"} <= set(manifest)
    assert not {"opkg", "luci-app-opkg"} & set(manifest)
    changes = {(c["source"], c.get("target")) for c in result["package_changes"]}
    renames = {("opkg", "apk-mbedtls"), ("luci-app-opkg", "luci-app-package-manager")}
    assert (renames & changes) == (set() if renamed_by_client else renames)


def stored_build(server: Server, result: dict[str, Any]) -> dict[str, Any]:
    """The published ``build.json`` of a result: it records what the server changed."""
    answer = server.get(f"/store/{result['bin_dir']}/build.json")
    assert answer.status_code == 200
    stored: dict[str, Any] = answer.json()
    assert stored["package_changes"] == result["package_changes"]
    assert stored["manifest"] == result["manifest"]
    return stored


def test_upgrade_2305_to_2410_through_luci(
    server: Server, modern_mirror: MirrorServer, device_2305: list[str]
) -> None:
    """LuCI sends the 23.05 device's list unchanged; the server carries it across."""
    result = luci_build(server, "24.10.0", device_2305)
    assert {"auc", "luci-app-opkg", "px5g-wolfssl"} <= set(result["request"]["packages"])
    check_2305_to_2410(stored_build(server, result), renamed_by_client=False)
    check_in_index(result["manifest"], offered(server, "24.10.0"))


def test_upgrade_2305_to_2410_through_owut(server: Server, device_2305: list[str]) -> None:
    """owut applies the branch's package changes itself before it asks; the server's
    release rules (the language pack) come on top."""
    result, wanted, index = owut_build(server, "24.10.0", device_2305)
    assert "auc" not in wanted and "owut" in wanted
    check_2305_to_2410(stored_build(server, result), renamed_by_client=True)
    check_requested_installed(result, wanted, index)


def test_upgrade_2410_to_2512_through_luci(server: Server, device_2410: list[str]) -> None:
    result = luci_build(server, "25.12.0", device_2410)
    check_2410_to_2512(stored_build(server, result), renamed_by_client=False)
    check_in_index(result["manifest"], offered(server, "25.12.0"))


def test_upgrade_2410_to_2512_through_owut(server: Server, device_2410: list[str]) -> None:
    result, wanted, index = owut_build(server, "25.12.0", device_2410)
    assert "apk-mbedtls" in wanted and "opkg" not in wanted
    assert "packages_versions" in result["request"], "every name has a 25.12 version"
    check_2410_to_2512(stored_build(server, result), renamed_by_client=True)
    check_requested_installed(result, wanted, index)

"""Tests of the release shapes of the stand-ins: the 24.10-shaped (opkg, kmods
feed, ``linux_kernel``, ``.tar.zst``) and 25.12/SNAPSHOT-shaped (apk) trees of
``build_mirror`` and the test ImageBuilder's apk mode (tests/support/)."""

from __future__ import annotations

import dataclasses
import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.support import ib_tool
from tests.support.imagebuilder import unpack_imagebuilder
from tests.support.mirror import (
    MODERN_TARGETS,
    MirrorServer,
    add_target,
    build_mirror,
    derive_profiles,
    json_of,
)
from tests.support.packages import (
    KMODS,
    apk_index_document,
    apk_version,
    generate_apk_key,
    parse_packages,
    release_shape,
    sign_apk_index,
)

pytest_plugins = ["tests.support.fixtures"]

TARGET = "ath79/generic"
PROFILE = "tplink_archer-c7-v5"
MANIFEST_LINE = re.compile(r"(\S+) (\S+)")
"""One line of ``apk list --quiet --manifest``: ``<name> <version>``."""


def make(ib_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ImageBuilder's make with an argv list (never a shell)."""
    return subprocess.run(
        ["make", "-s", *args], cwd=ib_dir, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def apk_ib(modern_mirror: MirrorServer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 25.12.0 ImageBuilder of the modern mirror, unpacked once (do not change it)."""
    assert modern_mirror.info is not None
    archive = modern_mirror.info.target("25.12.0", TARGET).archive_path
    assert archive is not None
    return unpack_imagebuilder(archive, tmp_path_factory.mktemp("apk-ib"))


@pytest.fixture
def apk_ib_copy(apk_ib: Path, tmp_path: Path) -> Path:
    """A private copy of the 25.12.0 ImageBuilder a test may change."""
    return Path(shutil.copytree(apk_ib, tmp_path / apk_ib.name))


# --------------------------------------------------------------------------- shapes


def test_release_shape_follows_the_version() -> None:
    old, kmods_2305, opkg, apk, snap = (
        release_shape(v) for v in ("23.05.4", "23.05.6", "24.10.0", "25.12.0", "SNAPSHOT")
    )
    assert (old.package_manager, old.kmods_feed, old.compression) == ("opkg", False, "xz")
    assert old.linux_kernel is None
    assert kmods_2305.kmods_feed and kmods_2305.linux_kernel is not None
    assert (opkg.package_manager, opkg.kmods_feed, opkg.compression) == ("opkg", True, "zst")
    assert (apk.package_manager, apk.kmods_feed, apk.compression) == ("apk", True, "zst")
    assert snap.apk and snap.era == "25.12"
    assert opkg.revision == "r28427-6df0e3d02a"
    assert re.fullmatch(r"[0-9a-f]{32}", opkg.vermagic)
    assert opkg.kmods_dir == f"6.6.73-1-{opkg.vermagic}"
    assert release_shape("24.10.0", compression="xz").compression == "xz"


def test_apk_era_versions() -> None:
    assert apk_version("2.90-2") == "2.90-r2"
    assert apk_version("2023-09-01-598d9fbb-1") == "2023.09.01~598d9fbb-r1"
    assert apk_version("git-24.073.29889-cd7e519") == "24.073.29889~cd7e519"
    assert apk_version("26") == "26"


def test_modern_versions_json(modern_mirror: MirrorServer) -> None:
    document = requests.get(modern_mirror.url_for(".versions.json"), timeout=10).json()
    assert document == {
        "stable_version": "25.12.0",
        "oldstable_version": "24.10.0",
        "upcoming_version": "",
        "versions_list": ["25.12.0", "24.10.0", "23.05.4"],
    }


@pytest.mark.parametrize("version", ["24.10.0", "25.12.0", "SNAPSHOT"])
def test_profiles_derive_from_the_real_23_05_4(modern_mirror: MirrorServer, version: str) -> None:
    assert modern_mirror.info is not None
    entry = modern_mirror.info.target(version, TARGET)
    base = "snapshots" if version == "SNAPSHOT" else f"releases/{version}"
    document = requests.get(
        modern_mirror.url_for(f"{base}/targets/{TARGET}/profiles.json"), timeout=10
    ).json()
    real = json_of(modern_mirror, f"releases/23.05.4/targets/{TARGET}/profiles.json")
    assert document["version_number"] == version
    assert document["version_code"] == entry.revision == entry.shape.revision  # type: ignore[union-attr]
    assert set(document["profiles"]) == set(real["profiles"])
    kernel = document["linux_kernel"]
    assert set(kernel) == {"version", "release", "vermagic"}
    assert entry.kmods_version == f"{kernel['version']}-{kernel['release']}-{kernel['vermagic']}"
    prefix = document["profiles"][PROFILE]["image_prefix"]
    expected = "openwrt-" if version == "SNAPSHOT" else f"openwrt-{version}-"
    assert prefix == f"{expected}ath79-generic-{PROFILE}"
    defaults = set(document["default_packages"])
    if version == "24.10.0":
        assert defaults == set(real["default_packages"])
    else:
        assert defaults == set(real["default_packages"]) - {"opkg"} | {"apk-mbedtls"}
    targets = requests.get(modern_mirror.url_for(f"{base}/.targets.json"), timeout=10).json()
    assert targets == {TARGET: "mips_24kc"}
    overview = requests.get(modern_mirror.url_for(f"{base}/.overview.json"), timeout=10).json()
    assert overview["release"] == version
    assert len(overview["profiles"]) == len(real["profiles"])


def test_24_10_kmods_feed_and_renames(modern_mirror: MirrorServer) -> None:
    assert modern_mirror.info is not None
    entry = modern_mirror.info.target("24.10.0", TARGET)
    assert entry.kmods_rel is not None
    assert entry.kmods_rel.startswith("releases/24.10.0/targets/ath79/generic/kmods/6.6.73-1-")
    feeds: dict[str, set[str]] = {}
    for feed, rel in entry.feed_rels.items():
        for suffix in ("Packages", "Packages.gz", "Packages.sig"):
            assert requests.get(modern_mirror.url_for(f"{rel}/{suffix}"), timeout=10).ok, rel
        text = gzip.decompress(
            requests.get(modern_mirror.url_for(f"{rel}/Packages.gz"), timeout=10).content
        ).decode()
        feeds[feed] = {p.name for p in parse_packages(text)}
        v1 = requests.get(modern_mirror.url_for(f"{rel}/index.json"), timeout=10).json()
        assert set(v1) == {"architecture", "packages"}  # "version 1": no version key
        assert set(v1["packages"]) == feeds[feed]  # names keep their ABI suffix
    assert feeds[KMODS] and all(name.startswith("kmod-") for name in feeds[KMODS])
    assert not any(
        name.startswith("kmod-") for feed, names in feeds.items() if feed != KMODS for name in names
    )
    assert "kernel" in feeds["core"]
    every = set().union(*feeds.values())
    assert {"owut", "luci-app-package-manager", "luci-app-diag-core", "opkg"} <= every
    assert not {"auc", "luci-app-opkg", "apk-mbedtls"} & every
    assert {"wpad-basic-wolfssl", "wpad-basic-mbedtls", "libustream-mbedtls20201210"} <= every
    kmod = next(p for p in entry.packages if p.name == "kmod-usb-storage")
    assert kmod.version == "6.6.73-r1"
    kernel = next(p for p in entry.packages if p.name == "kernel")
    assert any(d.replace(" ", "") == f"kernel(={kernel.version})" for d in kmod.depends)
    assert kernel.version == f"6.6.73~{entry.shape.vermagic}-r1"  # type: ignore[union-attr]


def test_23_05_4_keeps_its_shape(modern_mirror: MirrorServer) -> None:
    assert modern_mirror.info is not None
    entry = modern_mirror.info.target("23.05.4", TARGET)
    assert entry.kmods_rel is None and entry.kmods_version is None
    assert entry.archive_name is not None and entry.archive_name.endswith(".tar.xz")
    names = {p.name for p in entry.packages}
    assert {"auc", "luci-app-opkg", "opkg", "wpad-basic-wolfssl", "firewall4"} <= names
    assert not {"owut", "luci-app-package-manager"} & names
    core = next(p for p in entry.packages if p.name == "kmod-usb-storage")
    assert core.feed == "core"


@pytest.mark.parametrize("version", ["25.12.0", "SNAPSHOT"])
def test_apk_feeds_are_packages_adb_with_index_json_v2(
    modern_mirror: MirrorServer, version: str
) -> None:
    assert modern_mirror.info is not None
    entry = modern_mirror.info.target(version, TARGET)
    assert set(entry.feed_rels) == {
        "core",
        "base",
        KMODS,
        "luci",
        "packages",
        "routing",
        "telephony",
    }
    by_name = {p.name: p for p in entry.packages}
    seen: dict[str, str] = {}
    for feed, rel in entry.feed_rels.items():
        index = requests.get(modern_mirror.url_for(f"{rel}/index.json"), timeout=10).json()
        assert set(index) == {"version", "architecture", "packages"}
        assert index["version"] == 2 and index["architecture"] == "mips_24kc"
        assert isinstance(index["packages"], dict) and index["packages"]
        adb = requests.get(modern_mirror.url_for(f"{rel}/packages.adb"), timeout=10).json()
        assert adb["format"] == "asu-ci test stand-in for apk-tools packages.adb"
        assert adb["signature"]["key_id"] == modern_mirror.info.apk_key.key_id  # type: ignore[union-attr]
        assert not requests.get(modern_mirror.url_for(f"{rel}/Packages"), timeout=10).ok
        # index.json names are the ADB names with the ABI suffix removed (make-index-json.py)
        stripped = {}
        for package in adb["packages"]:
            name = package["name"]
            for tag in package["tags"]:
                if tag.startswith("openwrt:abiversion="):
                    name = name.removesuffix(tag.split("=", 1)[1])
            stripped[name] = package["version"]
        assert index["packages"] == stripped
        if feed == KMODS:
            assert all(name.startswith("kmod-") for name in index["packages"])
        seen.update(index["packages"])
    assert "libustream-mbedtls" in seen and "libustream-mbedtls20201210" not in seen
    assert "libgcc" in seen and "libgcc1" not in seen
    assert "nftables" not in seen  # only provided, never listed
    assert {"apk-mbedtls", "owut", "luci-app-package-manager"} <= set(seen)
    assert not {"opkg", "auc", "luci-app-opkg"} & set(seen)
    lib = by_name["libustream-mbedtls20201210"]
    assert lib.abi_version == "20201210" and "libustream-mbedtls" in lib.provides
    assert entry.archive_name == (
        "openwrt-imagebuilder-ath79-generic.Linux-x86_64.tar.zst"
        if version == "SNAPSHOT"
        else f"openwrt-imagebuilder-{version}-ath79-generic.Linux-x86_64.tar.zst"
    )
    assert (entry.dir / "sha256sums.sig").is_file()
    sums = (entry.dir / "sha256sums").read_text()
    assert f" *{entry.archive_name}\n" in sums and " *profiles.json\n" in sums


def test_opkg_24_10_imagebuilder_lists_the_kmods_feed(
    modern_mirror: MirrorServer, tmp_path: Path
) -> None:
    assert modern_mirror.info is not None
    entry = modern_mirror.info.target("24.10.0", TARGET)
    assert entry.archive_path is not None and entry.archive_name.endswith(".tar.zst")  # type: ignore[union-attr]
    ib = unpack_imagebuilder(entry.archive_path, tmp_path)
    lines = (ib / "repositories.conf").read_text().splitlines()
    feeds = [line.split()[1] for line in lines if line.startswith("src/gz ")]
    assert feeds == [
        "openwrt_core",
        "openwrt_base",
        "openwrt_kmods",
        "openwrt_luci",
        "openwrt_packages",
        "openwrt_routing",
        "openwrt_telephony",
    ]
    assert f"/{entry.kmods_rel}" in lines[2]
    assert not (ib / "repositories").exists()
    result = make(ib, "manifest", f"PROFILE={PROFILE}", "PACKAGES=kmod-usb-storage owut")
    assert result.returncode == 0, result.stderr
    installed = dict(line.split(" - ") for line in result.stdout.splitlines())
    assert installed["kmod-usb-storage"] == "6.6.73-r1" and "owut" in installed


# --------------------------------------------------------------------------- apk ImageBuilder


def test_apk_imagebuilder_layout(apk_ib: Path, modern_mirror: MirrorServer) -> None:
    assert modern_mirror.info is not None and modern_mirror.info.apk_key is not None
    entry = modern_mirror.info.target("25.12.0", TARGET)
    assert not (apk_ib / "repositories.conf").exists()
    urls = (apk_ib / "repositories").read_text().splitlines()
    assert urls == [
        f"https://downloads.openwrt.org/{rel}/packages.adb" for rel in entry.feed_rels.values()
    ]
    assert "/kmods/" in urls[2]
    pems = sorted((apk_ib / "keys").glob("*.pem"))
    assert [p.read_text() for p in pems] == [modern_mirror.info.apk_key.public_pem]
    assert "CONFIG_USE_APK=y" in (apk_ib / ".config").read_text()


def test_apk_make_info(apk_ib: Path) -> None:
    result = make(apk_ib, "info")
    assert result.returncode == 0, result.stderr
    assert 'Current Target: "ath79/generic"' in result.stdout
    defaults = next(line for line in result.stdout.splitlines() if line.startswith("Default"))
    assert "apk-mbedtls" in defaults.split() and "opkg" not in defaults.split()
    assert f"{PROFILE}:" in result.stdout


def test_apk_manifest_lines_are_apk_list_manifest(apk_ib: Path) -> None:
    result = make(apk_ib, "manifest", f"PROFILE={PROFILE}", "PACKAGES=luci kmod-usb-storage")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and all(MANIFEST_LINE.fullmatch(line) for line in lines), lines
    installed = dict(line.split(" ") for line in lines)
    # ABI suffixes stay in apk's names; provided names resolve to their provider
    assert "libustream-mbedtls20201210" in installed and "libustream-mbedtls" not in installed
    assert "libgcc1" in installed and "nftables-json" in installed
    assert installed["kmod-usb-storage"].startswith("6.12.57-r")
    assert "apk-mbedtls" in installed and "luci-app-package-manager" in installed
    # STRIP_ABI is an opkg option: apk prints the real names anyway
    stripped = make(apk_ib, "manifest", f"PROFILE={PROFILE}", "STRIP_ABI=1")
    assert "libustream-mbedtls20201210 " in stripped.stdout


def test_apk_unknown_package_message(apk_ib: Path) -> None:
    result = make(apk_ib, "manifest", f"PROFILE={PROFILE}", "PACKAGES=no-such-thing")
    assert result.returncode != 0
    assert (
        "ERROR: unable to select packages:\n"
        "  no-such-thing (no such package):\n"
        "    required by: world[no-such-thing]\n"
    ) in result.stderr


def test_apk_virtual_name_message(apk_ib: Path) -> None:
    result = make(apk_ib, "manifest", f"PROFILE={PROFILE}", "PACKAGES=wpad")
    assert result.returncode != 0
    assert "  wpad (virtual):\n" in result.stderr
    assert "    note: please select one of the 'provided by' packages explicitly\n" in (
        result.stderr
    )
    assert "    provided by: wpad-basic-mbedtls wpad-basic-openssl" in result.stderr
    assert "    required by: world[wpad]\n" in result.stderr
    assert all(len(line) < 80 for line in result.stderr.splitlines() if "make" not in line)


def test_apk_conflict_message(apk_ib: Path, modern_mirror: MirrorServer) -> None:
    assert modern_mirror.info is not None
    version = next(
        p.version
        for p in modern_mirror.info.target("25.12.0", TARGET).packages
        if p.name == "nftables-json"
    )
    result = make(apk_ib, "manifest", f"PROFILE={PROFILE}", "PACKAGES=nftables-nojson")
    assert result.returncode != 0
    assert result.stderr.startswith("ERROR: unable to select packages:\n")
    assert (
        f"  nftables-nojson-{version}:\n"
        f"    conflicts: nftables-json-{version}[nftables={version}]\n"
        "    satisfies: world[nftables-nojson]\n"
    ) in result.stderr
    assert f"  nftables-json-{version}:\n    conflicts: nftables-nojson-{version}" in (
        result.stderr
    )


@pytest.mark.parametrize("command", ["manifest", "image"])
def test_apk_overwrite_message(apk_ib: Path, tmp_path: Path, command: str) -> None:
    result = make(
        apk_ib, command, f"PROFILE={PROFILE}", "PACKAGES=tc-tiny tc-full", f"BIN_DIR={tmp_path}"
    )
    assert result.returncode != 0
    assert re.search(
        r"^ERROR: tc-tiny-\S+: trying to overwrite usr/sbin/tc owned by tc-full-\S+\.$",
        result.stderr,
        re.MULTILINE,
    ), result.stderr
    # apk's summary goes to stdout, which `make manifest` sends to /dev/null
    summary = re.search(r"^1 error; \d+ MiB in \d+ packages$", result.stdout, re.MULTILINE)
    assert (summary is not None) == (command == "image")
    assert not list(tmp_path.glob("*.bin"))


def test_apk_image(apk_ib: Path, tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "etc").mkdir(parents=True)
    (files / "etc" / "marker").write_text("hello\n")
    bin_dir = tmp_path / "bin"
    result = make(
        apk_ib,
        "image",
        f"PROFILE={PROFILE}",
        "PACKAGES=luci -dnsmasq",
        f"BIN_DIR={bin_dir}",
        f"FILES={files}",
        "EXTRA_IMAGE_NAME=asu",
        "ROOTFS_PARTSIZE=128",
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\(1/\d+\) Installing \S+ \(\S+\)$", result.stdout, re.MULTILINE)
    assert re.search(r"^OK: \d+ MiB in \d+ packages$", result.stdout, re.MULTILINE)
    prefix = f"openwrt-25.12.0-asu-ath79-generic-{PROFILE}"
    sysupgrade = bin_dir / f"{prefix}-squashfs-sysupgrade.bin"
    assert sysupgrade.is_file()
    body = sysupgrade.read_bytes()
    assert b"== begin etc/marker ==\nhello\n" in body and b"rootfs_partsize: 128" in body
    manifest = (bin_dir / f"{prefix}.manifest").read_text().splitlines()
    assert manifest == sorted(manifest)
    assert all(re.fullmatch(r"\S+ - \S+", line) for line in manifest)
    names = {line.split(" - ")[0] for line in manifest}
    assert "luci" in names and "dnsmasq" not in names and "libustream-mbedtls20201210" in names
    profiles = json.loads((bin_dir / "profiles.json").read_text())
    assert profiles["version_number"] == "25.12.0" and "linux_kernel" in profiles


def test_apk_image_too_big(apk_ib: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        ["make", "-s", "image", f"PROFILE={PROFILE}", f"BIN_DIR={tmp_path}"],
        cwd=apk_ib,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={"PATH": "/usr/bin:/bin", "ASU_TEST_IB_MAX_IMAGE_SIZE": "1000"},
    )
    assert result.returncode == 0, result.stderr
    assert re.search(
        r"WARNING: Image file \S+-squashfs-sysupgrade\.bin is too big: \d+ > 1000", result.stderr
    )
    assert not list(tmp_path.glob("*-sysupgrade.bin"))


def test_apk_custom_repository_needs_a_trusted_key(
    apk_ib_copy: Path, modern_mirror: MirrorServer, tmp_path: Path
) -> None:
    """A loopback feed is read only when a PEM key in keys/ verifies its index."""
    assert modern_mirror.info is not None
    records = [p for p in modern_mirror.info.target("25.12.0", TARGET).packages if p.name == "zlib"]
    extra = [dataclasses.replace(r, name="asu-extra", feed="extra") for r in records]
    key = generate_apk_key(b"custom-feed", "custom.pem")
    feed = modern_mirror.root / "custom" / "apk"
    feed.mkdir(parents=True, exist_ok=True)
    (feed / "packages.adb").write_text(json.dumps(sign_apk_index(apk_index_document(extra), key)))
    url = modern_mirror.url_for("custom/apk/packages.adb")
    with (apk_ib_copy / "repositories").open("a") as handle:
        handle.write(url + "\n")
    untrusted = make(apk_ib_copy, "manifest", f"PROFILE={PROFILE}", "PACKAGES=asu-extra")
    assert untrusted.returncode != 0
    assert f"WARNING: opening {url}: UNTRUSTED signature" in untrusted.stderr
    assert "  asu-extra (no such package):" in untrusted.stderr
    (apk_ib_copy / "keys" / "custom.pem").write_text(key.public_pem)
    trusted = make(apk_ib_copy, "manifest", f"PROFILE={PROFILE}", "PACKAGES=asu-extra")
    assert trusted.returncode == 0, trusted.stderr
    assert f"asu-extra {records[0].version}" in trusted.stdout.splitlines()
    (apk_ib_copy / "repositories").write_text(
        (apk_ib_copy / "repositories").read_text().replace(url, url + ".missing")
    )
    gone = make(apk_ib_copy, "manifest", f"PROFILE={PROFILE}", "PACKAGES=asu-extra")
    assert f"WARNING: opening {url}.missing: HTTP 404: Not Found" in gone.stderr


def test_ecdsa_verify_rejects_tampering() -> None:
    key = generate_apk_key(b"tamper")
    document = sign_apk_index(apk_index_document([]), key)
    parsed = ib_tool.pem_public_key(key.public_pem)
    assert parsed is not None
    keys = {key.key_id: parsed[1]}
    assert ib_tool._apk_verified(document, keys)
    document["packages"] = [{"name": "evil", "version": "1"}]
    assert not ib_tool._apk_verified(document, keys)


def test_modern_targets_all_have_imagebuilders(modern_mirror: MirrorServer) -> None:
    assert modern_mirror.info is not None
    for version, target in MODERN_TARGETS:
        entry = modern_mirror.info.target(version, target)
        assert entry.archive_rel is not None
        head = requests.head(modern_mirror.url_for(entry.archive_rel), timeout=10)
        assert head.status_code == 200 and int(head.headers["Content-Length"]) > 1000


def test_upgrade_flow_packages_exist_in_each_era(modern_mirror: MirrorServer) -> None:
    """What a 23.05 → 24.10 → 25.12 upgrade renames is there on each side."""
    assert modern_mirror.info is not None
    names = {
        version: {p.name for p in modern_mirror.info.target(version, TARGET).packages}
        for version in ("23.05.4", "24.10.0", "25.12.0")
    }
    tls = {
        "libustream-wolfssl20201210",
        "libustream-mbedtls20201210",
        "px5g-wolfssl",
        "px5g-mbedtls",
        "wpad-basic-wolfssl",
        "wpad-basic-mbedtls",
        "kmod-nft-nat6",
    }
    for version in names:
        assert tls <= names[version], version
    assert {"auc", "luci-app-opkg", "luci-i18n-opkg-de", "opkg", "firewall4"} <= names["23.05.4"]
    later = {
        "owut",
        "luci-app-package-manager",
        "luci-i18n-package-manager-de",
        "luci-app-diag-core",
        "ipq-wifi-tplink_archer-c6-v2",
    }
    assert later <= names["24.10.0"] and later <= names["25.12.0"]
    assert "opkg" in names["24.10.0"] and "apk-mbedtls" not in names["24.10.0"]
    assert "apk-mbedtls" in names["25.12.0"] and "opkg" not in names["25.12.0"]
    for version in ("24.10.0", "25.12.0"):
        assert not {"auc", "luci-app-opkg", "luci-i18n-opkg-de"} & names[version]
        profiles = modern_mirror.info.target(version, TARGET).profiles["profiles"]
        assert "ipq-wifi-tplink_archer-c6-v2" in profiles["tplink_archer-c6-v2"]["device_packages"]


def test_snapshot_imagebuilder_builds(modern_mirror: MirrorServer, tmp_path: Path) -> None:
    assert modern_mirror.info is not None
    entry = modern_mirror.info.target("SNAPSHOT", TARGET)
    assert entry.rel == "snapshots/targets/ath79/generic"
    assert entry.archive_path is not None
    ib = unpack_imagebuilder(entry.archive_path, tmp_path / "ib")
    assert ib.name == "openwrt-imagebuilder-ath79-generic.Linux-x86_64"
    lines = (ib / "repositories").read_text().splitlines()
    assert all(line.startswith("https://downloads.openwrt.org/snapshots/") for line in lines)
    bin_dir = tmp_path / "bin"
    result = make(ib, "image", f"PROFILE={PROFILE}", f"BIN_DIR={bin_dir}", "EXTRA_IMAGE_NAME=x")
    assert result.returncode == 0, result.stderr
    assert (bin_dir / f"openwrt-x-ath79-generic-{PROFILE}-squashfs-sysupgrade.bin").is_file()
    profiles = json.loads((bin_dir / "profiles.json").read_text())
    assert profiles["version_number"] == "SNAPSHOT"
    assert profiles["linux_kernel"]["version"] == entry.shape.kernel  # type: ignore[union-attr]


def test_linux_kernel_of_the_profiles_names_the_kmods_feed(tmp_path: Path) -> None:
    info = build_mirror(tmp_path, targets=())
    document = derive_profiles("24.10.1", TARGET, release_shape("24.10.1"))
    document["linux_kernel"] = {"version": "6.6.86", "release": "2", "vermagic": "ab" * 16}
    entry = add_target(
        info, "24.10.1", TARGET, profiles=document, package_count=600, with_imagebuilder=False
    )
    assert entry.kmods_version == "6.6.86-2-" + "ab" * 16
    assert entry.kmods_rel == f"releases/24.10.1/targets/{TARGET}/kmods/{entry.kmods_version}"
    feed = info.root / entry.kmods_rel / "Packages"
    kmods = parse_packages(feed.read_text())
    assert kmods and all(p.name.startswith("kmod-") for p in kmods)
    assert {p.version for p in kmods} == {"6.6.86-r1"}
    del document["linux_kernel"]
    plain = add_target(
        info, "24.10.2", TARGET, profiles=document, package_count=600, with_imagebuilder=False
    )
    assert plain.kmods_rel is None
    core = parse_packages((info.root / plain.feed_rels["core"] / "Packages").read_text())
    assert any(p.name.startswith("kmod-") for p in core)


def test_vermagic_differs_per_target(tmp_path: Path) -> None:
    info = build_mirror(
        tmp_path,
        targets=(("24.10.0", TARGET), ("24.10.0", "x86/64")),
        package_count=600,
        with_imagebuilder=False,
    )
    ath79, x86 = info.target("24.10.0", TARGET), info.target("24.10.0", "x86/64")
    assert ath79.kmods_version != x86.kmods_version
    assert ath79.kmods_version is not None and x86.kmods_version is not None
    assert ath79.kmods_version.startswith("6.6.73-1-") and x86.kmods_version.startswith("6.6.73-1-")
    for entry in (ath79, x86):
        kernel = next(p for p in entry.packages if p.name == "kernel")
        assert entry.kmods_version.rsplit("-", 1)[1] in kernel.version  # type: ignore[union-attr]
        assert (info.root / str(entry.kmods_rel) / "Packages.sig").is_file()


def test_apk_unsatisfiable_version_message(apk_ib: Path, modern_mirror: MirrorServer) -> None:
    assert modern_mirror.info is not None
    busybox = next(
        p for p in modern_mirror.info.target("25.12.0", TARGET).packages if p.name == "busybox"
    )
    result = make(apk_ib, "manifest", f"PROFILE={PROFILE}", "PACKAGES=busybox>=99")
    assert result.returncode != 0
    assert (
        "ERROR: unable to select packages:\n"
        f"  busybox-{busybox.version}:\n"
        "    breaks: world[busybox>=99]\n"
    ) in result.stderr

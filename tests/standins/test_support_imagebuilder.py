"""Tests of the test stand-ins: the test ImageBuilder, usign, the package
generators and the local upstream mirror (tests/support/)."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import json
import os
import re
import shutil
import subprocess
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tests.support import ib_tool
from tests.support.imagebuilder import (
    HOSTILE_KINDS,
    imagebuilder_basename,
    load_profiles,
    make_hostile_archive,
    make_imagebuilder,
    unpack_imagebuilder,
    write_files_dir,
)
from tests.support.mirror import MirrorServer, link_tree, normalise_path
from tests.support.packages import (
    apk_index_json,
    opkg_packages,
    package_records,
    parse_packages,
    write_packages,
)
from tests.support.usign import generate_keypair, parse_public_key, sign, verify

pytest_plugins = ["tests.support.fixtures"]

TARGET_REL = "releases/23.05.4/targets/ath79/generic"
IB_NAME = "openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64"


def make(
    ib_dir: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ImageBuilder's make with an argv list (never a shell)."""
    return subprocess.run(
        ["make", *args],
        cwd=ib_dir,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def manifest_of(stdout: str) -> dict[str, str]:
    lines = [line for line in stdout.splitlines() if line]
    pairs = [re.fullmatch(r"(\S+) - (\S+)", line) for line in lines]
    assert all(pairs), stdout
    return {m.group(1): m.group(2) for m in pairs if m}


@pytest.fixture
def own_imagebuilder(upstream_mirror: MirrorServer, tmp_path: Path) -> Path:
    """A private unpacked copy of the session ImageBuilder (safe to modify)."""
    assert upstream_mirror.info is not None and upstream_mirror.info.archive_path is not None
    return unpack_imagebuilder(upstream_mirror.info.archive_path, tmp_path / "ib")


# --------------------------------------------------------------------------- archive


def test_archive_name_and_layout(upstream_mirror: MirrorServer) -> None:
    info = upstream_mirror.info
    assert info is not None and info.archive_path is not None
    assert info.archive_path.name == f"{IB_NAME}.tar.xz"
    assert info.arch == "mips_24kc"
    with tarfile.open(info.archive_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert all(name == IB_NAME or name.startswith(IB_NAME + "/") for name in members)
    assert all(m.isfile() or m.isdir() for m in members.values())
    for rel in ("Makefile", "scripts/ib_tool.py", "repositories.conf", "packages/Packages"):
        assert f"{IB_NAME}/{rel}" in members
    assert f"{IB_NAME}/keys/{info.keynum}" in members
    makefile = tar_text(info.archive_path, f"{IB_NAME}/Makefile")
    assert "export PROFILE PACKAGES BIN_DIR FILES EXTRA_IMAGE_NAME" in makefile
    recipes = [line for line in makefile.splitlines() if line.startswith("\t")]
    assert not any("$(PACKAGES)" in line or "$(PROFILE)" in line for line in recipes)


def tar_text(archive: Path, member: str) -> str:
    with tarfile.open(archive) as tar:
        handle = tar.extractfile(member)
        assert handle is not None
        return handle.read().decode()


def test_zst_imagebuilder_and_bare_profiles(tmp_path: Path) -> None:
    document = load_profiles()
    two = {pid: document["profiles"][pid] for pid in ("8dev_carambola2", "tplink_archer-c7-v5")}
    archive = make_imagebuilder(tmp_path, profiles=two, compression="zst")
    assert archive.name == f"{IB_NAME}.tar.zst"
    assert archive.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    ib = unpack_imagebuilder(archive, tmp_path / "unpacked")
    info = make(ib, "info")
    assert info.returncode == 0, info.stderr
    assert re.findall(r"^(\S+):$", info.stdout, re.M) == list(two)
    result = make(ib, "manifest", "PROFILE=tplink_archer-c7-v5")
    assert result.returncode == 0, result.stderr
    assert "ath10k-firmware-qca988x-ct" in manifest_of(result.stdout)


# --------------------------------------------------------------------------- make info


def test_make_info_format(unpacked_imagebuilder: Path) -> None:
    result = make(unpacked_imagebuilder, "info")
    assert result.returncode == 0, result.stderr
    document = load_profiles()
    lines = result.stdout.splitlines()
    assert lines[:3] == [
        'Current Target: "ath79/generic"',
        'Current Architecture: "mips"',
        'Current Revision: "r24012-d8dd03c46f"',
    ]
    assert lines[3] == "Default Packages: " + " ".join(document["default_packages"])
    assert lines[4:6] == ["Available Profiles:", ""]
    assert "\n".join(lines[6:11]) == (
        "8dev_carambola2:\n"
        "    8devices Carambola2\n"
        "    Packages: kmod-usb-chipidea2\n"
        "    hasImageMetadata: 1\n"
        "    SupportedDevices: 8dev,carambola2 carambola2"
    )
    profiles = re.findall(r"^(\S+):\n {4}.*\n {4}Packages: (.*)\n", result.stdout, re.M)
    assert len(profiles) == len(document["profiles"]) == 349
    assert dict(profiles)["adtran_bsap1800-v2"] == "-swconfig -uboot-envtools fconfig"


# --------------------------------------------------------------------------- make manifest


def test_manifest_resolves_dependencies(
    unpacked_imagebuilder: Path, upstream_mirror: MirrorServer
) -> None:
    result = make(unpacked_imagebuilder, "manifest", "PROFILE=8dev_carambola2")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    manifest = manifest_of(result.stdout)
    assert list(manifest) == sorted(manifest)
    info = upstream_mirror.info
    assert info is not None
    published = {r.name: r.version for r in info.first.packages}
    for name, version in manifest.items():
        assert published[name] == version
    default = set(load_profiles()["default_packages"]) - {
        "libgcc",
        "libustream-mbedtls",
        "nftables",
    }
    assert default <= set(manifest)
    # device package, virtual names through Provides, transitive ABI libraries, the kernel
    assert {"kmod-usb-chipidea2", "libgcc1", "nftables-json", "kernel"} <= set(manifest)
    assert {"libubus20230605", "libubox20230523", "kmod-mac80211", "libmnl0"} <= set(manifest)
    assert "luci" not in manifest

    stripped = make(
        unpacked_imagebuilder,
        "manifest",
        "PROFILE=8dev_carambola2",
        "PACKAGES=luci-ssl tcpdump -ppp -ppp-mod-pppoe -kmod-usb-chipidea2",
        "STRIP_ABI=1",
    )
    assert stripped.returncode == 0, stripped.stderr
    names = manifest_of(stripped.stdout)
    assert {"libubus", "libubox", "libgcc", "luci-ssl", "luci-base", "tcpdump", "libpcap"} <= set(
        names
    )
    assert "libubus20230605" not in names
    assert not {"ppp", "ppp-mod-pppoe", "kmod-usb-chipidea2"} & set(names)


def test_manifest_unknown_package(unpacked_imagebuilder: Path) -> None:
    result = make(
        unpacked_imagebuilder,
        "manifest",
        "PROFILE=8dev_carambola2",
        "PACKAGES=tcpdump no-such-pkg other-missing",
    )
    assert result.returncode != 0
    assert "Collected errors:\n * opkg_install_cmd: Cannot install package no-such-pkg." in (
        result.stderr
    )
    assert " * opkg_install_cmd: Cannot install package other-missing." in result.stderr
    assert "tcpdump" not in result.stdout


def test_manifest_conflict(unpacked_imagebuilder: Path) -> None:
    result = make(unpacked_imagebuilder, "manifest", "PACKAGES=wpad-openssl")
    assert result.returncode != 0
    assert (
        " * check_conflicts_for: The following packages conflict with wpad-openssl:\n"
        " * check_conflicts_for: \twpad-basic-mbedtls * \n"
        " * opkg_install_cmd: Cannot install package wpad-openssl."
    ) in result.stderr
    swapped = make(unpacked_imagebuilder, "manifest", "PACKAGES=-wpad-basic-mbedtls wpad-openssl")
    assert swapped.returncode == 0, swapped.stderr
    assert {"wpad-openssl", "libopenssl3"} <= set(manifest_of(swapped.stdout))


def test_unknown_profile_and_unexpanded_variables(
    unpacked_imagebuilder: Path, tmp_path: Path
) -> None:
    result = make(unpacked_imagebuilder, "manifest", "PROFILE=no_such_device")
    assert result.returncode != 0
    assert 'Profile "no_such_device" does not exist!' in result.stdout
    marker = tmp_path / "pwned"
    hostile = f"$(shell touch {marker}) `touch {marker}` $$(touch {marker})"
    result = make(unpacked_imagebuilder, "manifest", f"PACKAGES={hostile}")
    assert result.returncode != 0
    assert "Cannot install package $(shell." in result.stderr
    assert not marker.exists()


# --------------------------------------------------------------------------- make image


def build(ib: Path, bin_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return make(ib, "image", "PROFILE=8dev_carambola2", f"BIN_DIR={bin_dir}", *extra)


def test_image_outputs_are_consistent(unpacked_imagebuilder: Path, tmp_path: Path) -> None:
    files = write_files_dir(tmp_path / "files", "uci set system.@system[0].hostname='asu'\n")
    bin_dir = tmp_path / "bin"
    result = build(
        unpacked_imagebuilder,
        bin_dir,
        "PACKAGES=luci -ppp-mod-pppoe -ppp",
        "EXTRA_IMAGE_NAME=0123abcd",
        f"FILES={files}",
        "ROOTFS_PARTSIZE=104",
    )
    assert result.returncode == 0, result.stderr
    assert "Building images for ath79 - 8devices Carambola2" in result.stdout
    prefix = "openwrt-23.05.4-0123abcd-ath79-generic-8dev_carambola2"
    sysupgrade = bin_dir / f"{prefix}-squashfs-sysupgrade.bin"
    kernel = bin_dir / f"{prefix}-initramfs-kernel.bin"
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(
        [sysupgrade.name, kernel.name, f"{prefix}.manifest", "profiles.json", "sha256sums"]
    )

    profiles = json.loads((bin_dir / "profiles.json").read_text())
    assert profiles["target"] == "ath79/generic"
    assert profiles["version_code"] == "r24012-d8dd03c46f"
    assert list(profiles["profiles"]) == ["8dev_carambola2"]
    profile = profiles["profiles"]["8dev_carambola2"]
    assert profile["image_prefix"] == prefix
    assert profile["titles"] == [{"model": "Carambola2", "vendor": "8devices"}]
    by_name = {image["name"]: image for image in profile["images"]}
    assert by_name[sysupgrade.name]["type"] == "sysupgrade"
    assert by_name[sysupgrade.name]["filesystem"] == "squashfs"
    assert by_name[kernel.name]["filesystem"] == "initramfs"
    for name, image in by_name.items():
        assert image["sha256"] == hashlib.sha256((bin_dir / name).read_bytes()).hexdigest()
    assert by_name[sysupgrade.name]["sha256_unsigned"] != by_name[sysupgrade.name]["sha256"]
    assert by_name[kernel.name]["sha256_unsigned"] == by_name[kernel.name]["sha256"]

    sums: dict[str, str] = {}
    for line in (bin_dir / "sha256sums").read_text().splitlines():
        digest, name = line.split(" *", 1)
        sums[name] = digest
    assert set(sums) == {p.name for p in bin_dir.iterdir()} - {"sha256sums"}
    for name, digest in sums.items():
        assert hashlib.sha256((bin_dir / name).read_bytes()).hexdigest() == digest

    manifest = manifest_of((bin_dir / f"{prefix}.manifest").read_text())
    expected = make(
        unpacked_imagebuilder,
        "manifest",
        "PROFILE=8dev_carambola2",
        "PACKAGES=luci -ppp-mod-pppoe -ppp",
    )
    assert manifest == manifest_of(expected.stdout)
    text = sysupgrade.read_bytes().decode("utf-8", "replace")
    for name, version in manifest.items():
        assert f"\n  {name} {version}\n" in text
    assert "rootfs_partsize: 104" in text
    assert "etc/uci-defaults/99-asu-defaults" in text
    assert "uci set system.@system[0].hostname='asu'" in text


def test_files_content_changes_image_bytes(unpacked_imagebuilder: Path, tmp_path: Path) -> None:
    digests = []
    for n, defaults in enumerate(("echo one\n", "echo two\n", "echo two\n")):
        files = write_files_dir(tmp_path / f"files{n}", defaults)
        bin_dir = tmp_path / f"bin{n}"
        result = build(unpacked_imagebuilder, bin_dir, f"FILES={files}")
        assert result.returncode == 0, result.stderr
        digests.append(
            {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in bin_dir.glob("*.bin")}
        )
    assert digests[0] != digests[1]
    assert digests[1] == digests[2]  # reproducible
    plain = build(unpacked_imagebuilder, tmp_path / "plain", "PACKAGES=tcpdump")
    assert plain.returncode == 0
    with_luci = build(unpacked_imagebuilder, tmp_path / "luci", "PACKAGES=tcpdump luci")
    assert with_luci.returncode == 0
    size = {
        d: next((tmp_path / d).glob("*sysupgrade.bin")).stat().st_size for d in ("plain", "luci")
    }
    assert size["luci"] > size["plain"]


def test_image_too_big(unpacked_imagebuilder: Path, tmp_path: Path) -> None:
    packages = (unpacked_imagebuilder / "packages" / "Packages").read_text()
    many = [p.name for p in parse_packages(packages) if p.name.startswith("python3-")][:250]
    bin_dir = tmp_path / "bin"
    result = build(unpacked_imagebuilder, bin_dir, "PACKAGES=" + " ".join(many))
    assert result.returncode == 0, result.stderr
    match = re.search(r"WARNING: Image file (/\S+) is too big: (\d+) > (\d+)", result.stderr)
    assert match, result.stderr
    assert match.group(1).endswith("-8dev_carambola2-squashfs-sysupgrade.bin")
    assert int(match.group(2)) > int(match.group(3)) == 65536
    assert not list(bin_dir.glob("*sysupgrade*"))
    profile = json.loads((bin_dir / "profiles.json").read_text())["profiles"]["8dev_carambola2"]
    assert [image["type"] for image in profile["images"]] == ["kernel"]

    # the limit can also be lowered from the environment
    env = {**os.environ, "ASU_TEST_IB_MAX_IMAGE_SIZE": "1000"}
    small = make(
        unpacked_imagebuilder,
        "image",
        "PROFILE=8dev_carambola2",
        f"BIN_DIR={tmp_path / 'small'}",
        env=env,
    )
    assert small.returncode == 0
    assert "is too big" in small.stderr and "> 1000" in small.stderr


def test_custom_repository_and_keys(
    own_imagebuilder: Path,
    upstream_mirror_clean: MirrorServer,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    mirror = upstream_mirror_clean
    secret, public = generate_keypair()
    feed = mirror.root / "custom" / "feed"
    request.addfinalizer(lambda: shutil.rmtree(mirror.root / "custom", ignore_errors=True))
    stanza = "Package: asu-custom-tool\nVersion: 1.0-1\nDepends: libc, libubus\n"
    plain, _ = write_packages(feed, stanza + "Architecture: mips_24kc\n")
    (feed / "Packages.sig").write_text(sign(secret, plain.read_bytes()))
    conf = own_imagebuilder / "repositories.conf"
    conf.write_text(
        conf.read_text() + f"src/gz custom {mirror.url}/custom/feed\n# src/gz off {mirror.url}/x\n"
    )
    args = ("PROFILE=8dev_carambola2", "PACKAGES=asu-custom-tool", f"BIN_DIR={tmp_path / 'b'}")
    refused = make(own_imagebuilder, "image", *args)
    assert refused.returncode != 0
    assert "Signature check failed." in refused.stdout
    assert "Cannot install package asu-custom-tool." in refused.stderr

    keynum, _ = parse_public_key(public)
    (own_imagebuilder / "keys" / keynum).write_text(public)
    result = make(own_imagebuilder, "image", *args)
    assert result.returncode == 0, result.stderr
    assert f"Downloading {mirror.url}/custom/feed/Packages.gz" in result.stdout
    assert f"{mirror.url}/x" not in result.stdout
    assert mirror.count("/custom/feed/Packages.gz") == 2
    manifest = next((tmp_path / "b").glob("*.manifest")).read_text()
    assert "asu-custom-tool - 1.0-1\n" in manifest


# --------------------------------------------------------------------------- mirror


def test_mirror_layout_and_signatures(upstream_mirror: MirrorServer) -> None:
    info = upstream_mirror.info
    assert info is not None and info.public_key is not None and info.archive_sha256 is not None
    base = upstream_mirror.url + "/"
    sums = requests.get(base + f"{TARGET_REL}/sha256sums", timeout=10)
    sig = requests.get(base + f"{TARGET_REL}/sha256sums.sig", timeout=10)
    assert sig.text.startswith(f"untrusted comment: signed by key {info.keynum}\n")
    assert verify(info.public_key, sums.content, sig.text)
    assert f"{info.archive_sha256} *{IB_NAME}.tar.xz\n" in sums.text
    assert re.fullmatch(r"([0-9a-f]{64} \*\S+\n)+", sums.text)
    archive = requests.get(base + f"{TARGET_REL}/{IB_NAME}.tar.xz", timeout=10)
    assert hashlib.sha256(archive.content).hexdigest() == info.archive_sha256
    # real upstream metadata shines through the overlay
    profiles = requests.get(base + f"{TARGET_REL}/profiles.json", timeout=10).json()
    assert profiles["arch_packages"] == "mips_24kc"
    assert requests.get(base + ".versions.json", timeout=10).json()["stable_version"] == "23.05.4"
    assert requests.get(base + "releases//23.05.4//.targets.json", timeout=10).status_code == 200

    names: set[str] = set()
    for feed, rel in info.first.feed_rels.items():
        packed = requests.get(base + rel + "/Packages.gz", timeout=10).content
        text = gzip.decompress(packed)
        feed_sig = requests.get(base + rel + "/Packages.sig", timeout=10).text
        assert verify(info.public_key, text, feed_sig), feed
        names.update(p.name for p in parse_packages(text.decode()))
    assert len(names) == 9000
    core = parse_packages((info.root / TARGET_REL / "packages" / "Packages").read_text())
    assert {p.name for p in core} <= names
    assert all(
        p.name == "kernel" or p.name.startswith("kmod-") or p.name == "base-files" for p in core
    )
    assert {r.name for r in info.first.packages} == names


def test_mirror_etag_304_head_and_errors(upstream_mirror_clean: MirrorServer) -> None:
    mirror = upstream_mirror_clean
    url = mirror.url_for(f"{TARGET_REL}/sha256sums")
    first = requests.get(url, timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Length"] == str(len(first.content))
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    again = requests.get(url, headers={"If-None-Match": etag}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    since = requests.get(url, headers={"If-Modified-Since": modified}, timeout=10)
    assert since.status_code == 304
    other = requests.get(url, headers={"If-None-Match": '"other"'}, timeout=10)
    assert other.status_code == 200
    head = requests.head(url, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(first.content))
    assert mirror.count(url) == 5
    assert mirror.downloads_of(url) == 2

    assert requests.get(mirror.url_for("releases/none.json"), timeout=10).status_code == 404
    connection = http.client.HTTPConnection("127.0.0.1", mirror.port, timeout=10)
    for raw in ("/releases/../../etc/passwd", "/releases/%2e%2e/%2e%2e/etc/passwd"):
        connection.request("GET", raw)
        response = connection.getresponse()
        response.read()
        assert response.status == 400
    connection.close()
    with pytest.raises(ValueError, match=r"\.\."):
        normalise_path("/a/../b")

    # a changed file gets a new ETag
    target = mirror.root / "changing.txt"
    target.write_text("one")
    tag_one = requests.get(mirror.url_for("changing.txt"), timeout=10).headers["ETag"]
    time.sleep(0.01)
    target.write_text("two!")
    answer = requests.get(
        mirror.url_for("changing.txt"), headers={"If-None-Match": tag_one}, timeout=10
    )
    assert answer.status_code == 200 and answer.text == "two!"


def test_mirror_faults(upstream_mirror_clean: MirrorServer) -> None:
    mirror = upstream_mirror_clean
    url = mirror.url_for(f"{TARGET_REL}/sha256sums")
    mirror.fail_next(f"/{TARGET_REL}/sha256sums", times=2, status=503)
    assert [requests.get(url, timeout=10).status_code for _ in range(3)] == [503, 503, 200]
    good = requests.get(url, timeout=10).content
    mirror.corrupt_next(url)
    bad = requests.get(url, timeout=10).content
    assert len(bad) == len(good) and bad != good
    mirror.delay_next("/releases/*", 0.3)
    started = time.monotonic()
    assert requests.get(url, timeout=10).status_code == 200
    assert time.monotonic() - started >= 0.3
    mirror.fail_next("*", status=500)
    assert requests.get(mirror.url_for(".versions.json"), timeout=10).status_code == 500
    assert mirror.count(url) == 6
    assert [r.status for r in mirror.log][:3] == [503, 503, 200]


# --------------------------------------------------------------------------- formats


def test_usign_file_formats() -> None:
    secret, public = generate_keypair(b"fixed")
    assert generate_keypair(b"fixed")[1] == public
    lines = public.splitlines()
    assert re.fullmatch(r"untrusted comment: public key [0-9a-f]{16}", lines[0])
    keynum, raw = parse_public_key(public)
    assert keynum == secret.keynum_hex and len(raw) == 32
    signature = sign(secret, b"data")
    assert signature.splitlines()[0] == f"untrusted comment: signed by key {keynum}"
    assert len(signature.splitlines()[1]) == 100  # base64 of 2 + 8 + 64 bytes
    assert verify(public, b"data", signature)
    assert not verify(public, b"datA", signature)
    assert not verify(generate_keypair()[1], b"data", signature)


def test_package_generator() -> None:
    text = opkg_packages("mips_24kc", 3000, seed=7)
    assert text == opkg_packages("mips_24kc", 3000, seed=7)
    assert text != opkg_packages("mips_24kc", 3000, seed=8)
    parsed = parse_packages(text)
    assert len(parsed) == 3000
    fields = {p.name: p.fields for p in parsed}
    busybox = fields["busybox"]
    for key in (
        "Version",
        "Depends",
        "Source",
        "SourceName",
        "License",
        "Section",
        "Architecture",
        "Installed-Size",
        "Filename",
        "Size",
        "SHA256sum",
        "Description",
    ):
        assert key in busybox
    assert fields["libubus20230605"]["ABIVersion"] == "20230605"
    assert fields["libubus20230605"]["Provides"] == "libubus"
    assert fields["wpad-openssl"]["Conflicts"]
    assert any("(>=" in f.get("Depends", "") for f in fields.values())
    assert fields["luci-app-firewall"]["Architecture"] == "all"

    # every dependency resolves inside the generated universe
    index = ib_tool.Index()
    index.add(ib_tool.parse_packages(text, "all"))
    for pkg in index.by_name.values():
        for group in pkg[0].depends:
            assert any(
                any(
                    ib_tool.version_satisfies(p.version, d.op, d.version)
                    for p in index.by_name.get(d.name, [])
                )
                or (d.op is None and d.name in index.providers)
                for d in group
            ), (pkg[0].name, group)

    records = package_records("aarch64_generic", 500, required=["kmod-foo-bar", "-fancy-tool"])
    assert {"kmod-foo-bar", "fancy-tool"} <= {r.name for r in records}
    assert apk_index_json("x86_64", {"b": "2", "a": "1"}) == {
        "version": 2,
        "architecture": "x86_64",
        "packages": {"a": "1", "b": "2"},
    }


def test_version_comparison() -> None:
    cmp = ib_tool.compare_versions
    assert cmp("1.2.4-4", "1.2") > 0
    assert cmp("2.4.9.git-2021-01-04-4", "2.4.9") > 0
    assert cmp("1.0~rc1-1", "1.0-1") < 0
    assert cmp("1:0.1-1", "9.9-1") > 0
    assert cmp("2023-06-05-f787c97b-1", "2023-06-05-f787c97b-1") == 0
    assert ib_tool.version_satisfies("5.15.162-1-abc", "=", "5.15.162-1-abc")
    assert not ib_tool.version_satisfies("1.0-1", ">>", "1.0-1")


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_archives(tmp_path: Path, kind: str) -> None:
    archive = make_hostile_archive(tmp_path, kind)
    assert archive.name == f"{IB_NAME}.tar.xz"
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
    top = imagebuilder_basename("23.05.4", "ath79/generic")
    bad = [m for m in members if m.name != top and not m.name.startswith(top + "/Makefile")]
    assert len(bad) == 1
    member = bad[0]
    if kind == "dotdot":
        assert member.name == "../evil"
    elif kind == "absolute":
        assert member.name.startswith("/")
    elif kind == "symlink":
        assert member.issym() and member.linkname == "../../etc"
    else:
        assert member.islnk() and member.linkname.startswith("../")


def test_mirror_factory_zst_and_unsigned(
    mirror_factory: Callable[..., MirrorServer], tmp_path: Path
) -> None:
    server = mirror_factory(package_count=800, compression="zst", sign=False)
    assert isinstance(server, MirrorServer) and server.info is not None
    name = f"{IB_NAME}.tar.zst"
    sums = requests.get(server.url_for(f"{TARGET_REL}/sha256sums"), timeout=10).text
    assert f" *{name}\n" in sums
    assert (
        requests.get(server.url_for(f"{TARGET_REL}/sha256sums.sig"), timeout=10).status_code == 404
    )
    view = link_tree(server.info, tmp_path / "view")
    assert (view / TARGET_REL / name).resolve() == server.root / TARGET_REL / name
    assert (view / TARGET_REL / "profiles.json").is_symlink()
    assert json.loads((view / ".versions.json").read_text())["stable_version"] == "23.05.4"

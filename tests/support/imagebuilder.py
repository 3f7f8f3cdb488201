"""A TEST OpenWrt ImageBuilder: a real ``.tar.xz``/``.tar.zst`` archive.

:func:`make_imagebuilder` writes
``openwrt-imagebuilder-<version>-<target>-<subtarget>.Linux-x86_64.tar.xz``
(``.tar.zst`` for zstd) with one top-level folder of the same name that holds::

    Makefile               the real interface: make info | manifest | image | clean
    scripts/ib_tool.py     the backend (Python standard library only)
    .targetinfo.json       target, revision, architecture and the size limits
    .profiles.json         the target's profiles.json (download-server format)
    .config                a few CONFIG_ lines so it looks like the real thing
    include/version.mk
    repositories.conf      opkg feeds + "src imagebuilder file:packages" + option check_signature
    keys/<keynum>          usign public keys (a release key and any given ones)
    packages/Packages      the opkg index the ImageBuilder resolves against

An apk-era ImageBuilder (``shape`` with ``package_manager == "apk"``, i.e.
25.12 and SNAPSHOT) has instead, as the real one does
(openwrt/openwrt ``target/imagebuilder/files/Makefile``, ``include/feeds.mk``
``FeedSourcesAppendAPK``)::

    repositories           one ``packages.adb`` URL per line: core, base, kmods, luci, ...
    keys/<name>.pem        PEM (ECDSA P-256) public keys apk trusts
    packages/packages.adb  the bundled index (the STAND-IN format of
                           tests/support/packages.py, signed by the release key)
    .config                with CONFIG_USE_APK=y

and a 24.10-era opkg one lists the kmods feed in ``repositories.conf``
(``src/gz openwrt_kmods …/targets/<t>/<s>/kmods/<k>-<r>-<vermagic>``, right
after ``openwrt_base``, as ``FeedSourcesAppendOPKG`` writes it).

The ``Makefile`` hands its variables to the script through the environment
only (``export``); their values are taken with ``$(value ...)`` so make never
expands them and no recipe ever contains them.

:func:`make_hostile_archive` writes archives that a safe extractor must refuse.
"""

from __future__ import annotations

import io
import json
import lzma
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import zstandard

from tests.support.packages import (
    FEEDS,
    ApkKey,
    PackageRecord,
    ReleaseShape,
    apk_index_document,
    generate_apk_key,
    opkg_packages,
    sign_apk_index,
    write_text,
)
from tests.support.usign import generate_keypair, parse_public_key

DEFAULT_VERSION = "23.05.4"
DEFAULT_TARGET = "ath79/generic"
DEFAULT_REVISION = "r24012-d8dd03c46f"
UPSTREAM_URL = "https://downloads.openwrt.org"
COMPRESSIONS = ("xz", "zst")
HOSTILE_KINDS = ("dotdot", "absolute", "symlink", "hardlink")


UPSTREAM_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "upstream"
"""The read-only real 23.05.4 upstream metadata kept in the repository
(``tests/fixtures/upstream``: ``.versions.json``, ``releases/<v>/...``)."""


def version_path(version: str) -> str:
    """``releases/<version>`` or ``snapshots``, as on the download server."""
    return "snapshots" if version.upper() == "SNAPSHOT" else f"releases/{version}"


def imagebuilder_basename(version: str, target: str) -> str:
    """``openwrt-imagebuilder-[<version>-]<t>-<s>.Linux-x86_64`` (no extension)."""
    board = target.replace("/", "-")
    if version.upper() == "SNAPSHOT":
        return f"openwrt-imagebuilder-{board}.Linux-x86_64"
    return f"openwrt-imagebuilder-{version}-{board}.Linux-x86_64"


def imagebuilder_filename(version: str, target: str, compression: str = "xz") -> str:
    """The archive's file name, e.g. ``openwrt-imagebuilder-23.05.4-ath79-generic....tar.xz``."""
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {COMPRESSIONS}")
    return f"{imagebuilder_basename(version, target)}.tar.{compression}"


def load_profiles(
    version: str = DEFAULT_VERSION,
    target: str = DEFAULT_TARGET,
    fixtures: Path | None = None,
) -> dict[str, Any]:
    """Read the real ``profiles.json`` of a target from the upstream fixtures."""
    root = fixtures or UPSTREAM_FIXTURES
    path = root / version_path(version) / "targets" / target / "profiles.json"
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def cpu_arch(arch_packages: str) -> str:
    """The ``ARCH`` ``make info`` prints for a package arch (``mips_24kc`` → ``mips``)."""
    if arch_packages.startswith("x86_64"):
        return "x86_64"
    if arch_packages.startswith("i386"):
        return "i386"
    return arch_packages.split("_", 1)[0]


def required_packages(profiles_doc: Mapping[str, Any]) -> list[str]:
    """Default packages plus every device package of every profile (without ``-``)."""
    names = set(profiles_doc.get("default_packages", []))
    for profile in profiles_doc.get("profiles", {}).values():
        names.update(p.lstrip("-") for p in profile.get("device_packages", []))
    return sorted(names)


MAKEFILE = """\
# OpenWrt ImageBuilder -- TEST STAND-IN for asu-ci (same interface as the real one).
#
# The variables below reach scripts/ib_tool.py through the environment only.
# $(value VAR) keeps their text literal: make never expands what a caller
# passed, and no recipe line ever contains it.

override PROFILE := $(value PROFILE)
override PACKAGES := $(value PACKAGES)
override BIN_DIR := $(value BIN_DIR)
override FILES := $(value FILES)
override EXTRA_IMAGE_NAME := $(value EXTRA_IMAGE_NAME)
override ROOTFS_PARTSIZE := $(value ROOTFS_PARTSIZE)
override STRIP_ABI := $(value STRIP_ABI)
override DISABLED_SERVICES := $(value DISABLED_SERVICES)
override ADD_LOCAL_KEY := $(value ADD_LOCAL_KEY)
export PROFILE PACKAGES BIN_DIR FILES EXTRA_IMAGE_NAME ROOTFS_PARTSIZE STRIP_ABI
export DISABLED_SERVICES ADD_LOCAL_KEY

PYTHON ?= python3
IB_TOOL := scripts/ib_tool.py

.PHONY: help info manifest image clean

help:
\t@echo 'Available Commands:'
\t@echo '\thelp:\tThis help text'
\t@echo '\tinfo:\tShow a list of available target profiles'
\t@echo '\tclean:\tRemove images and temporary build files'
\t@echo '\timage:\tBuild an image (see below for more information).'
\t@echo '\tmanifest:\tShow the packages an image would contain'
\t@echo ''
\t@echo 'Building images:'
\t@echo '\tmake image PROFILE="<profilename>" PACKAGES="<pkg1> [<pkg2> [<pkg3> ...]]"'
\t@echo '\t  FILES="<path>" BIN_DIR="<path>" EXTRA_IMAGE_NAME="<string>"'
\t@echo '\t  DISABLED_SERVICES="<svc1> [<svc2> ...]" ROOTFS_PARTSIZE="<size>"'
\t@echo ''
\t@echo 'Print manifest:'
\t@echo '\tmake manifest PROFILE="<profilename>" PACKAGES="<pkg1> ..." STRIP_ABI=1'

info manifest image clean:
\t@$(PYTHON) $(IB_TOOL) $@
"""


def feed_paths(
    version: str, target: str, arch: str, shape: ReleaseShape | None = None
) -> dict[str, str]:
    """Feed name → URL path (no leading slash) in the order the real
    ``FeedSourcesAppend*`` write them: core, base, [kmods,] luci, packages, …"""
    base = version_path(version)
    paths = {"core": f"{base}/targets/{target}/packages"}
    for feed in FEEDS:
        paths[feed] = f"{base}/packages/{arch}/{feed}"
        if feed == "base" and shape is not None and shape.kmods_feed:
            paths["kmods"] = f"{base}/targets/{target}/kmods/{shape.kmods_dir}"
    return paths


def _apk_repositories(
    version: str, target: str, arch: str, upstream_url: str, shape: ReleaseShape
) -> str:
    root = upstream_url.rstrip("/")
    return "".join(
        f"{root}/{path}/packages.adb\n"
        for path in feed_paths(version, target, arch, shape).values()
    )


def _repositories_conf(
    version: str, target: str, arch: str, upstream_url: str, shape: ReleaseShape | None = None
) -> str:
    root = upstream_url.rstrip("/")
    lines = [
        f"src/gz openwrt_{feed} {root}/{path}"
        for feed, path in feed_paths(version, target, arch, shape).items()
    ]
    lines += [
        "## This is the local package repository, do not remove!",
        "src imagebuilder file:packages",
        "",
        "option check_signature",
        "",
    ]
    return "\n".join(lines)


def _dot_config(version: str, target: str, arch: str, revision: str, apk: bool = False) -> str:
    board, _, sub = target.partition("/")
    return "\n".join(
        [
            *(["CONFIG_USE_APK=y"] if apk else []),
            f"CONFIG_TARGET_{board}=y",
            f"CONFIG_TARGET_{board}_{sub}=y",
            f'CONFIG_TARGET_BOARD="{board}"',
            f'CONFIG_TARGET_SUBTARGET="{sub}"',
            f'CONFIG_TARGET_ARCH_PACKAGES="{arch}"',
            f'CONFIG_VERSION_NUMBER="{version}"',
            f'CONFIG_VERSION_CODE="{revision}"',
            "CONFIG_TARGET_ROOTFS_SQUASHFS=y",
            "CONFIG_TARGET_ROOTFS_PARTSIZE=104",
            "CONFIG_SIGNATURE_CHECK=y",
            "CONFIG_JSON_OVERVIEW_IMAGE_INFO=y",
            "",
        ]
    )


class _TarWriter:
    """Add files and folders to a tar archive with reproducible metadata."""

    def __init__(self, tar: tarfile.TarFile, mtime: int) -> None:
        self.tar = tar
        self.mtime = mtime

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.mtime = self.mtime
        info.uname = info.gname = "builder"
        return info

    def folder(self, name: str) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, 0o755))

    def file(self, name: str, data: bytes | str, mode: int = 0o644) -> None:
        raw = data.encode("utf-8") if isinstance(data, str) else data
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(raw)
        self.tar.addfile(info, io.BytesIO(raw))

    def link(self, name: str, target: str, *, hard: bool = False) -> None:
        info = self._info(name, tarfile.LNKTYPE if hard else tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)


def _write_archive(
    path: Path, compression: str, members: list[tuple[str, str, Any]], mtime: int, xz_preset: int
) -> None:
    """Write ``members`` = [(kind, name, payload)] as a compressed tar at ``path``."""

    def fill(tar: tarfile.TarFile) -> None:
        writer = _TarWriter(tar, mtime)
        for kind, name, payload in members:
            if kind == "dir":
                writer.folder(name)
            elif kind == "file":
                data, mode = payload
                writer.file(name, data, mode)
            elif kind in {"symlink", "hardlink"}:
                writer.link(name, payload, hard=kind == "hardlink")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if compression == "xz":
        with (
            lzma.open(tmp, "wb", preset=xz_preset) as xz_out,
            tarfile.open(fileobj=xz_out, mode="w|") as tar,
        ):
            fill(tar)
    elif compression == "zst":
        with (
            tmp.open("wb") as raw,
            zstandard.ZstdCompressor(level=3).stream_writer(raw) as packed,
            tarfile.open(fileobj=packed, mode="w|") as tar,
        ):
            fill(tar)
    else:
        raise ValueError(f"compression must be one of {COMPRESSIONS}")
    tmp.replace(path)


def make_imagebuilder(
    dest_dir: Path,
    *,
    version: str = DEFAULT_VERSION,
    target: str = DEFAULT_TARGET,
    revision: str | None = None,
    profiles: Mapping[str, Any] | None = None,
    packages_stanzas: str | None = None,
    compression: str = "xz",
    max_image_size: int = 65536,
    bytes_per_package: int = 256,
    keys: Iterable[str] = (),
    upstream_url: str = UPSTREAM_URL,
    xz_preset: int = 0,
    shape: ReleaseShape | None = None,
    records: Iterable[PackageRecord] | None = None,
    apk_key: ApkKey | None = None,
    apk_keys: Iterable[ApkKey] = (),
) -> Path:
    """Build a test ImageBuilder archive in ``dest_dir`` and return its path.

    ``profiles`` is the target's ``profiles.json`` document (default: the real
    one from the upstream fixtures); a bare ``{id: profile}`` mapping is wrapped
    into the real document's metadata. ``packages_stanzas`` is the opkg
    ``Packages`` text the ImageBuilder resolves against (default: 2000
    generated packages covering every default and device package).

    An image is ``len(description) + bytes_per_package * <number of packages>``
    bytes; a sysupgrade/factory image larger than ``max_image_size`` is not
    written ("is too big" warning, exit 0). The environment variable
    ``ASU_TEST_IB_MAX_IMAGE_SIZE`` overrides the limit at build time.
    ``keys`` are usign public key texts to add to ``keys/``.

    With an apk ``shape`` the ImageBuilder is apk-shaped (see the module
    docstring): ``records`` are the packages of its bundled
    ``packages/packages.adb`` (signed with ``apk_key``, default: a key of
    the release), ``apk_keys`` further keys for ``keys/``. With a kmods
    ``shape`` ``repositories.conf`` lists the kmods feed.
    """
    if profiles is None:
        document = load_profiles(version, target)
    elif "profiles" in profiles:
        document = dict(profiles)
    else:
        document = load_profiles(version, target)
        document["profiles"] = dict(profiles)
    arch = str(document.get("arch_packages", "mips_24kc"))
    revision = revision or str(document.get("version_code") or DEFAULT_REVISION)
    apk = shape is not None and shape.apk
    if packages_stanzas is None and not apk:
        packages_stanzas = opkg_packages(
            arch, 2000, revision=revision, required=required_packages(document)
        )
    top = imagebuilder_basename(version, target)
    settings = {
        "target": target,
        "version": version,
        "revision": revision,
        "arch_packages": arch,
        "cpu_arch": cpu_arch(arch),
        "max_image_size": max_image_size,
        "bytes_per_package": bytes_per_package,
        "package_manager": "apk" if apk else "opkg",
    }
    key_files: dict[str, str] = {}
    if apk:
        signer = apk_key or generate_apk_key(f"openwrt-{version}-release".encode())
        for key in (signer, *apk_keys):
            key_files[key.name] = key.public_pem
        index = sign_apk_index(apk_index_document(records or ()), signer)
        repositories = _apk_repositories(version, target, arch, upstream_url, shape)  # type: ignore[arg-type]
        feed_members: list[tuple[str, str, Any]] = [
            ("file", f"{top}/repositories", (repositories, 0o644)),
            ("dir", f"{top}/packages", None),
            ("file", f"{top}/packages/packages.adb", (json.dumps(index, indent=1) + "\n", 0o644)),
        ]
    else:
        release_key = generate_keypair(f"openwrt-{version}-release".encode())[1]
        for text in (release_key, *keys):
            keynum, _ = parse_public_key(text)
            key_files[keynum] = text
        conf = _repositories_conf(version, target, arch, upstream_url, shape)
        feed_members = [
            ("file", f"{top}/repositories.conf", (conf, 0o644)),
            ("dir", f"{top}/packages", None),
            ("file", f"{top}/packages/Packages", (packages_stanzas or "", 0o644)),
        ]
    tool = (Path(__file__).parent / "ib_tool.py").read_text(encoding="utf-8")
    members: list[tuple[str, str, Any]] = [
        ("dir", top, None),
        ("file", f"{top}/Makefile", (MAKEFILE, 0o644)),
        ("dir", f"{top}/scripts", None),
        ("file", f"{top}/scripts/ib_tool.py", (tool, 0o755)),
        ("file", f"{top}/.targetinfo.json", (json.dumps(settings, indent=2) + "\n", 0o644)),
        ("file", f"{top}/.profiles.json", (json.dumps(document, indent=2) + "\n", 0o644)),
        ("file", f"{top}/.config", (_dot_config(version, target, arch, revision, apk), 0o644)),
        ("dir", f"{top}/include", None),
        (
            "file",
            f"{top}/include/version.mk",
            (f"VERSION_NUMBER:={version}\nVERSION_CODE:={revision}\n", 0o644),
        ),
        ("dir", f"{top}/keys", None),
        *[("file", f"{top}/keys/{k}", (v, 0o644)) for k, v in sorted(key_files.items())],
        *feed_members,
    ]
    path = Path(dest_dir) / imagebuilder_filename(version, target, compression)
    mtime = int(document.get("source_date_epoch") or 1721081658)
    _write_archive(path, compression, members, mtime, xz_preset)
    return path


def make_hostile_archive(
    dest: Path,
    kind: str,
    *,
    version: str = DEFAULT_VERSION,
    target: str = DEFAULT_TARGET,
    compression: str = "xz",
) -> Path:
    """Write an ImageBuilder-named archive that a safe extractor must refuse.

    ``kind`` is one of :data:`HOSTILE_KINDS`:

    * ``dotdot``: a member named ``../evil``;
    * ``absolute``: a member ``/tmp/asu-ci-test-absolute-evil``;
    * ``symlink``: ``<top>/staging_dir`` → ``../../etc`` (escapes the folder);
    * ``hardlink``: ``<top>/passwd`` hard link to ``../../etc/passwd``.

    Besides the hostile member it holds an ordinary top folder with a Makefile.
    """
    top = imagebuilder_basename(version, target)
    members: list[tuple[str, str, Any]] = [
        ("dir", top, None),
        ("file", f"{top}/Makefile", ("info:\n\t@echo hostile\n", 0o644)),
    ]
    if kind == "dotdot":
        members.append(("file", "../evil", ("escaped via ..\n", 0o644)))
    elif kind == "absolute":
        members.append(("file", "/tmp/asu-ci-test-absolute-evil", ("absolute\n", 0o644)))
    elif kind == "symlink":
        members.append(("symlink", f"{top}/staging_dir", "../../etc"))
    elif kind == "hardlink":
        members.append(("hardlink", f"{top}/passwd", "../../etc/passwd"))
    else:
        raise ValueError(f"kind must be one of {HOSTILE_KINDS}")
    path = Path(dest) / imagebuilder_filename(version, target, compression)
    _write_archive(path, compression, members, 1721081658, 0)
    return path


def unpack_imagebuilder(archive: Path, dest: Path) -> Path:
    """Unpack a (trusted, test-made) archive into ``dest``; return the top folder."""
    dest.mkdir(parents=True, exist_ok=True)
    if archive.name.endswith(".tar.zst"):
        with (
            archive.open("rb") as raw,
            zstandard.ZstdDecompressor().stream_reader(raw) as plain,
            tarfile.open(fileobj=plain, mode="r|") as tar,
        ):
            tar.extractall(dest, filter="data")
    else:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, filter="data")
    name = archive.name
    for suffix in (".tar.xz", ".tar.zst"):
        name = name.removesuffix(suffix)
    return dest / name


def write_files_dir(dest: Path, defaults: str) -> Path:
    """Make a FILES folder with ``etc/uci-defaults/99-asu-defaults`` (like asu-ci does)."""
    write_text(dest / "etc" / "uci-defaults" / "99-asu-defaults", defaults)
    return dest

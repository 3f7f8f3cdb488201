"""A local OpenWrt download server on 127.0.0.1 for tests.

Two parts:

* :func:`build_mirror` writes generated files in the real download-server
  layout into a fresh folder: opkg package feeds, ImageBuilder archives,
  ``sha256sums`` and its usign signature ``sha256sums.sig``;
* :class:`MirrorServer` serves an OVERLAY of folders over real HTTP
  (``http.server.ThreadingHTTPServer`` in a background thread): the generated
  folder first, then the read-only real metadata in
  ``tests/fixtures/upstream`` (never copied, never written). It answers
  ``ETag``/``Last-Modified`` with 304 to ``If-None-Match``/``If-Modified-Since``,
  always sends ``Content-Length``, supports HEAD, refuses ``..``, counts the
  requests per path and injects faults (status codes, delays, corrupt bodies).

Layout written for each (version, target), ``<v>`` = ``releases/23.05.4``::

    <v>/targets/<t>/<s>/packages/Packages{,.gz,.sig}        kernel + kmods ("core")
    <v>/packages/<arch>/{base,luci,packages,routing,telephony}/Packages{,.gz,.sig}
    <v>/targets/<t>/<s>/openwrt-imagebuilder-<v>-<t>-<s>.Linux-x86_64.tar.xz
    <v>/targets/<t>/<s>/sha256sums, sha256sums.sig

Release shapes. Each version is published in the shape of the real release
line, chosen by :func:`release_shape` (``tests/support/packages.py``) from
the version and overridable with ``build_mirror(shapes={version: shape})``:

* 23.05.x (x < 6): the layout above, no ``linux_kernel``, ``.tar.xz``;
* 24.10.x (and 23.05.6+): opkg; ``profiles.json`` has ``linux_kernel``
  ``{version, release, vermagic}``; every ``kmod-*`` is only in
  ``<v>/targets/<t>/<s>/kmods/<version>-<release>-<vermagic>/Packages{,.gz,.sig}``
  (:attr:`TargetInfo.kmods_rel`); every feed also has the "version 1"
  ``index.json`` of ``package/Makefile`` (no ``version`` key, ABI suffixes
  kept); ImageBuilder ``.tar.zst`` whose ``repositories.conf`` lists the kmods
  feed;
* 25.12.x and SNAPSHOT: apk; every feed (core, kmods, arch feeds) is a
  ``packages.adb`` (a STAND-IN, see ``packages.py``; signed with the
  mirror's ECDSA key :attr:`MirrorInfo.apk_key`) with the real
  ``index.json`` v2 beside it; ImageBuilder ``.tar.zst`` with a
  ``repositories`` file and ``keys/*.pem``. SNAPSHOT lives under
  ``snapshots/`` and its ImageBuilder name has no version.
* release-branch snapshots (``24.10-SNAPSHOT``, ``25.12-SNAPSHOT``): the shape
  of their branch, under ``releases/<branch>-SNAPSHOT/``, with a revision
  newer than the branch's releases.

A version without real metadata in ``tests/fixtures/upstream`` gets a
``profiles.json`` derived from the real 23.05.4 one of the same target
(:func:`derive_profiles`: ``version_number``, ``version_code``, image names,
the era's ``default_packages``, ``linux_kernel``), and its release folder
gets ``.targets.json`` and ``.overview.json``. ``build_mirror(versions=…)``
writes the mirror's ``.versions.json`` (which releases it holds and which is
stable / oldstable / upcoming).
"""

from __future__ import annotations

import contextlib
import dataclasses
import email.utils
import fnmatch
import hashlib
import html
import io
import json
import mimetypes
import os
import shutil
import sys
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.imagebuilder import (
    UPSTREAM_FIXTURES,
    feed_paths,
    imagebuilder_filename,
    load_profiles,
    make_imagebuilder,
    required_packages,
    version_path,
)
from tests.support.packages import (
    CORE,
    KMODS,
    ApkKey,
    PackageRecord,
    ReleaseShape,
    era_default_packages,
    format_packages,
    generate_apk_key,
    package_records,
    release_shape,
    split_feeds,
    write_apk_feed,
    write_apk_index,
    write_opkg_index_json,
    write_packages,
)
from tests.support.usign import SecretKey, generate_keypair, sign

DEFAULT_TARGETS: tuple[tuple[str, str], ...] = (("23.05.4", "ath79/generic"),)

BRANCH_SNAPSHOTS: tuple[tuple[str, str], ...] = (
    ("24.10-SNAPSHOT", "ath79/generic"),
    ("25.12-SNAPSHOT", "ath79/generic"),
)
"""The release-branch snapshots of the ``modern_mirror`` fixture: ``releases/<b>-SNAPSHOT``
in the shape of their branch (24.10: opkg, kmods feed, ``.tar.zst``; 25.12: apk),
ImageBuilder ``openwrt-imagebuilder-24.10-SNAPSHOT-<t>-<s>…``, images
``openwrt-24.10-snapshot-<revision>-<t>-<s>-…``. ``.versions.json`` does not list
them, as upstream's does not."""

MODERN_TARGETS: tuple[tuple[str, str], ...] = (
    ("23.05.4", "ath79/generic"),
    ("24.10.0", "ath79/generic"),
    ("25.12.0", "ath79/generic"),
    ("SNAPSHOT", "ath79/generic"),
    *BRANCH_SNAPSHOTS,
)
"""What the ``modern_mirror`` fixture publishes."""

MODERN_VERSIONS: dict[str, Any] = {
    "stable": "25.12.0",
    "oldstable": "24.10.0",
    "upcoming": "",
    "versions": ("25.12.0", "24.10.0", "23.05.4"),
}
"""The ``.versions.json`` of the ``modern_mirror`` fixture (:func:`write_versions` arguments)."""


def sha256_file(path: Path) -> str:
    """The hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- building


@dataclass
class TargetInfo:
    """What the mirror publishes for one (version, target)."""

    version: str
    target: str
    arch: str
    revision: str
    profiles: dict[str, Any]
    dir: Path
    """``<root>/releases/<v>/targets/<t>/<s>`` in the generated overlay folder."""
    archive_path: Path | None = None
    archive_sha256: str | None = None
    packages: list[PackageRecord] = field(default_factory=list)
    """Every package the target's feeds publish (core + arch feeds); the IB resolves them."""
    shape: ReleaseShape | None = None
    """How the release is published (``release_shape(version)`` unless overridden)."""

    @property
    def kmods_rel(self) -> str | None:
        """URL path of the kmods feed (``…/kmods/<version>-<release>-<vermagic>``),
        None for a release without one."""
        return self.feed_rels.get(KMODS)

    @property
    def kmods_version(self) -> str | None:
        """``<version>-<release>-<vermagic>`` of the kmods feed (its folder name)."""
        return self.shape.kmods_dir if self.shape and self.shape.kmods_feed else None

    @property
    def index_name(self) -> str:
        """The index file of every feed: ``packages.adb`` (apk) or ``Packages`` (opkg)."""
        return "packages.adb" if self.shape is not None and self.shape.apk else "Packages"

    @property
    def rel(self) -> str:
        """``releases/<v>/targets/<t>/<s>`` (URL path without leading slash)."""
        return f"{version_path(self.version)}/targets/{self.target}"

    @property
    def archive_name(self) -> str | None:
        return self.archive_path.name if self.archive_path else None

    @property
    def archive_rel(self) -> str | None:
        """URL path of the ImageBuilder archive (without leading slash)."""
        return f"{self.rel}/{self.archive_path.name}" if self.archive_path else None

    @property
    def feed_rels(self) -> dict[str, str]:
        """URL paths (no leading slash) of the feeds: ``core``, :data:`FEEDS`
        and, where the release has one, ``kmods``."""
        return feed_paths(self.version, self.target, self.arch, self.shape)


@dataclass
class MirrorInfo:
    """Everything :func:`build_mirror` wrote, for assertions in tests."""

    root: Path
    """The generated overlay folder (writable; tests may add or change files)."""
    roots: tuple[Path, ...]
    """``(root, fixtures)``: the folders a :class:`MirrorServer` serves, in order."""
    secret_key: SecretKey | None
    public_key: str | None
    targets: dict[tuple[str, str], TargetInfo] = field(default_factory=dict)
    apk_key: ApkKey | None = None
    """The ECDSA key signing the apk feeds (its public PEM is in the apk ImageBuilders)."""
    shapes: dict[str, ReleaseShape] = field(default_factory=dict)
    """Shape overrides by version (see :func:`release_shape`)."""

    def shape(self, version: str) -> ReleaseShape:
        """The shape the mirror publishes ``version`` in."""
        return self.shapes.get(version) or release_shape(version)

    @property
    def keynum(self) -> str | None:
        return self.secret_key.keynum_hex if self.secret_key else None

    @property
    def first(self) -> TargetInfo:
        """The first target built (``ath79/generic`` by default)."""
        return next(iter(self.targets.values()))

    @property
    def arch(self) -> str:
        return self.first.arch

    @property
    def archive_path(self) -> Path | None:
        return self.first.archive_path

    @property
    def archive_sha256(self) -> str | None:
        return self.first.archive_sha256

    @property
    def archive_name(self) -> str | None:
        return self.first.archive_name

    def target(self, version: str, target: str) -> TargetInfo:
        return self.targets[(version, target)]


def _fake_sha(name: str) -> str:
    return hashlib.sha256(f"asu-ci-test:{name}".encode()).hexdigest()


def _sign_file(secret: SecretKey | None, path: Path) -> None:
    if secret is not None:
        path.with_name(path.name + ".sig").write_text(sign(secret, path.read_bytes()))


def write_sha256sums(info: MirrorInfo, target: TargetInfo) -> Path:
    """(Re)write ``sha256sums`` (+ ``.sig``) of a target folder in the real format.

    Lists the ImageBuilder archive (if any) and real-looking other lines: a few
    images with their real upstream hashes, the SDK, toolchain, manifest,
    ``profiles.json`` and the ``*.buildinfo`` files.
    """
    board = target.target.replace("/", "-")
    v = target.version
    entries: dict[str, str] = {}
    for profile in list(target.profiles.get("profiles", {}).values())[:3]:
        for image in profile.get("images", []):
            entries[image["name"]] = image["sha256"]
    for name in (
        f"openwrt-{v}-{board}.manifest",
        f"openwrt-sdk-{v}-{board}_gcc-12.3.0_musl.Linux-x86_64.tar.xz",
        f"openwrt-toolchain-{v}-{board}_gcc-12.3.0_musl.Linux-x86_64.tar.xz",
        "config.buildinfo",
        "feeds.buildinfo",
        "version.buildinfo",
    ):
        entries[name] = _fake_sha(f"{v}/{board}/{name}")
    fixture_profiles = UPSTREAM_FIXTURES / target.rel / "profiles.json"
    if (target.dir / "profiles.json").is_file():
        entries["profiles.json"] = sha256_file(target.dir / "profiles.json")
    elif fixture_profiles.is_file():
        entries["profiles.json"] = sha256_file(fixture_profiles)
    if target.archive_path is not None and target.archive_sha256 is not None:
        entries[target.archive_path.name] = target.archive_sha256
    path = target.dir / "sha256sums"
    path.write_text("".join(f"{entries[name]} *{name}\n" for name in sorted(entries)))
    _sign_file(info.secret_key, path)
    return path


def _write_feed(
    info: MirrorInfo,
    directory: Path,
    records: Iterable[PackageRecord],
    shape: ReleaseShape | None = None,
    arch: str = "",
) -> None:
    if shape is not None and shape.apk:
        write_apk_feed(directory, arch, list(records), info.apk_key)
        return
    records = list(records)
    plain, _ = write_packages(directory, format_packages(records))
    _sign_file(info.secret_key, plain)
    if shape is not None and shape.era == "24.10":
        write_opkg_index_json(directory, arch, records)


_LATER_DEVICE_PACKAGES: dict[tuple[str, str], tuple[str, ...]] = {
    ("ath79/generic", "tplink_archer-c6-v2"): ("ipq-wifi-tplink_archer-c6-v2",),
}
"""Device packages a profile gained in 24.10 (asu's package_changes.py)."""


def derive_profiles(version: str, target: str, shape: ReleaseShape) -> dict[str, Any]:
    """A ``profiles.json`` for ``version`` derived from the real 23.05.4 one of ``target``.

    ``version_number``, ``version_code``, image names and prefixes follow the
    version (SNAPSHOT images are named ``openwrt-<t>-<s>-…``, a branch
    snapshot's ``openwrt-24.10-snapshot-<revision>-<t>-<s>-…``), the default
    packages are the era's (:func:`era_default_packages`) and, where the
    release has a kmods feed, ``linux_kernel`` is added (its ``vermagic``
    differs per target, as the real one does). Image hashes are derived from
    the new names.
    """
    document = load_profiles("23.05.4", target)
    old_head = "openwrt-23.05.4-"
    new_head = f"openwrt-{version}-"
    if version.upper() == "SNAPSHOT":
        new_head = "openwrt-"
    elif version.upper().endswith("-SNAPSHOT"):
        # include/image.mk: the version number sanitized (lower case), then the
        # version code, as the branch buildbots name their snapshot images
        new_head = f"openwrt-{version.lower()}-{shape.revision}-"
    profiles: dict[str, Any] = {}
    for pid, profile in document["profiles"].items():
        entry = dict(profile)
        entry["image_prefix"] = str(profile["image_prefix"]).replace(old_head, new_head, 1)
        images = []
        for image in profile.get("images", []):
            renamed = dict(image)
            renamed["name"] = str(image["name"]).replace(old_head, new_head, 1)
            renamed["sha256"] = _fake_sha(f"{version}/{renamed['name']}")
            renamed["sha256_unsigned"] = (
                renamed["sha256"]
                if image.get("sha256") == image.get("sha256_unsigned")
                else _fake_sha(f"{version}/{renamed['name']}/unsigned")
            )
            images.append(renamed)
        entry["images"] = images
        profiles[pid] = entry
    if shape.era != "23.05":
        for (where, pid), extra in _LATER_DEVICE_PACKAGES.items():
            if where == target and pid in profiles:
                profiles[pid]["device_packages"] = [*profiles[pid]["device_packages"], *extra]
    document["profiles"] = profiles
    document["version_number"] = version
    document["version_code"] = shape.revision
    document["default_packages"] = era_default_packages(document["default_packages"], shape.era)
    if shape.linux_kernel is not None:
        kernel = dict(shape.linux_kernel)
        if not shape.kernel_vermagic:
            # the vermagic hashes the kernel configuration, which differs per target
            seed = f"{shape.revision}:{target}".encode()
            kernel["vermagic"] = hashlib.md5(seed, usedforsecurity=False).hexdigest()
        document["linux_kernel"] = kernel
    return document


def _write_release_metadata(info: MirrorInfo, version: str) -> None:
    """``.targets.json`` and ``.overview.json`` of a release the fixtures do not hold."""
    if (UPSTREAM_FIXTURES / version_path(version) / ".targets.json").is_file():
        return
    built = [t for (v, _), t in info.targets.items() if v == version]
    base = info.root / version_path(version)
    targets = {t.target: t.arch for t in sorted(built, key=lambda t: t.target)}
    (base / ".targets.json").write_text(json.dumps(targets, indent=2) + "\n")
    overview = {
        "release": version,
        "profiles": [
            {"id": pid, "target": t.target, "titles": profile.get("titles", [])}
            for t in built
            for pid, profile in t.profiles.get("profiles", {}).items()
        ],
    }
    (base / ".overview.json").write_text(json.dumps(overview) + "\n")


def write_versions(
    info: MirrorInfo,
    *,
    stable: str,
    oldstable: str = "",
    upcoming: str = "",
    versions: Sequence[str] = (),
) -> Path:
    """Write the mirror's ``.versions.json`` (overrides the fixture's)."""
    listed = list(versions) or [v for v in (upcoming, stable, oldstable) if v]
    document = {
        "stable_version": stable,
        "oldstable_version": oldstable,
        "upcoming_version": upcoming,
        "versions_list": listed,
    }
    path = info.root / ".versions.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def add_target(
    info: MirrorInfo,
    version: str,
    target: str,
    *,
    package_count: int = 9000,
    with_imagebuilder: bool = True,
    compression: str | None = None,
    seed: int = 0,
    max_image_size: int = 65536,
    bytes_per_package: int = 256,
    profiles: Mapping[str, Any] | None = None,
) -> TargetInfo:
    """Publish one (version, target): its feeds, ImageBuilder and ``sha256sums``.

    The release's shape is ``info.shape(version)``; ``compression`` overrides
    its archive compression. The profiles document decides the kmods feed: its
    ``linux_kernel`` names the folder, and without one there is no kmods feed
    (e.g. ``profiles=`` without ``linux_kernel`` for a 24.10 version). The
    arch feeds are (re)written for the target's architecture; several targets
    of one architecture share them (the same generated universe, which covers
    the device packages of all of them).
    """
    shape = info.shape(version)
    fixture = UPSTREAM_FIXTURES / version_path(version) / "targets" / target / "profiles.json"
    target_dir = info.root / version_path(version) / "targets" / target
    derived = False
    if profiles is not None:
        document = dict(profiles)
    elif fixture.is_file() or info.roots[-1] != UPSTREAM_FIXTURES:
        document = load_profiles(version, target, info.roots[-1])
    else:
        document = derive_profiles(version, target, shape)
        derived = True
    arch = str(document["arch_packages"])
    revision = str(document.get("version_code") or shape.revision)
    shape = dataclasses.replace(shape, revision=revision)
    kernel = document.get("linux_kernel")
    if isinstance(kernel, dict):
        shape = dataclasses.replace(
            shape,
            kmods_feed=True,
            kernel=str(kernel["version"]),
            kernel_release=str(kernel["release"]),
            kernel_vermagic=str(kernel["vermagic"]),
        )
    elif shape.kmods_feed:
        shape = dataclasses.replace(shape, kmods_feed=False)
    required = set(required_packages(document))
    for (other_version, _), other in info.targets.items():
        if other_version == version and other.arch == arch:
            required.update(required_packages(other.profiles))
    legacy = shape.era == "23.05" and not shape.kmods_feed
    records = package_records(
        arch,
        package_count,
        seed,
        revision=revision,
        required=required,
        shape=None if legacy else shape,
    )
    feeds = split_feeds(records)
    entry = TargetInfo(
        version, target, arch, revision, document, target_dir, packages=records, shape=shape
    )
    for feed, rel in entry.feed_rels.items():
        _write_feed(info, info.root / rel, feeds.get(feed, []), shape, arch)
    if derived:
        target_dir.mkdir(parents=True, exist_ok=True)
        (target_dir / "profiles.json").write_text(json.dumps(document, sort_keys=True) + "\n")
    shared = [r for r in records if r.feed not in {CORE, KMODS}]
    for (other_version, _), other in info.targets.items():
        if other_version == version and other.arch == arch:
            # the arch feeds are shared; core and kmods stay the target's own
            own = [r for r in other.packages if r.feed in {CORE, KMODS}]
            other.packages = sorted([*shared, *own], key=lambda r: r.name)
    if with_imagebuilder:
        keys = [info.public_key] if info.public_key else []
        archive = make_imagebuilder(
            target_dir,
            version=version,
            target=target,
            revision=revision,
            profiles=document,
            packages_stanzas=None if shape.apk else format_packages(records),
            compression=compression or shape.compression,
            max_image_size=max_image_size,
            bytes_per_package=bytes_per_package,
            keys=keys,
            shape=shape,
            records=records,
            apk_key=info.apk_key,
        )
        entry.archive_path = archive
        entry.archive_sha256 = sha256_file(archive)
    info.targets[(version, target)] = entry
    write_sha256sums(info, entry)
    if derived:
        _write_release_metadata(info, version)
    return entry


def build_mirror(
    tmp_path: Path,
    *,
    targets: Sequence[tuple[str, str]] = DEFAULT_TARGETS,
    package_count: int = 9000,
    with_imagebuilder: bool = True,
    compression: str | None = None,
    sign: bool = True,
    seed: int = 0,
    max_image_size: int = 65536,
    bytes_per_package: int = 256,
    fixtures: Path | None = None,
    shapes: Mapping[str, ReleaseShape] | None = None,
    versions: Mapping[str, Any] | None = None,
) -> MirrorInfo:
    """Write a mirror for ``targets`` under ``tmp_path/overlay`` and describe it.

    ``package_count`` is the size of each architecture's package universe (the
    default gives a ``mips_24kc`` with thousands of packages, like the real
    one). ``sign`` makes a usign key pair, signs every ``Packages`` and
    ``sha256sums`` and puts the public key into the ImageBuilder's ``keys/``;
    for apk releases it also makes the ECDSA key that signs every
    ``packages.adb`` (PEM in the ImageBuilder's ``keys/``). ``compression``
    overrides every release's archive compression (default: the shape's).
    ``shapes`` overrides :func:`release_shape` per version; ``versions``
    (keyword arguments of :func:`write_versions`) writes ``.versions.json``.
    """
    root = Path(tmp_path) / "overlay"
    root.mkdir(parents=True, exist_ok=True)
    secret, public = generate_keypair(b"asu-ci-test-mirror") if sign else (None, None)
    info = MirrorInfo(
        root=root,
        roots=(root, fixtures or UPSTREAM_FIXTURES),
        secret_key=secret,
        public_key=public,
        apk_key=generate_apk_key(b"asu-ci-test-mirror", "asu-ci-test-mirror.pem") if sign else None,
        shapes=dict(shapes or {}),
    )
    for version, target in targets:
        add_target(
            info,
            version,
            target,
            package_count=package_count,
            with_imagebuilder=with_imagebuilder,
            compression=compression,
            seed=seed,
            max_image_size=max_image_size,
            bytes_per_package=bytes_per_package,
        )
    if versions is not None:
        write_versions(info, **versions)
    return info


def publish_imagebuilder(info: MirrorInfo, version: str, target: str, archive: Path) -> Path:
    """Put ``archive`` (e.g. a hostile one) in place of the target's ImageBuilder.

    The file is copied into the target folder under its own name and
    ``sha256sums`` (+ signature) are rewritten to list it, so only the archive's
    content, not its checksum, is wrong.
    """
    entry = info.targets[(version, target)]
    dest = entry.dir / archive.name
    if archive.resolve() != dest.resolve():
        shutil.copyfile(archive, dest)
    if entry.archive_path is not None and entry.archive_path != dest:
        entry.archive_path.unlink(missing_ok=True)
    entry.archive_path = dest
    entry.archive_sha256 = sha256_file(dest)
    write_sha256sums(info, entry)
    return dest


def add_apk_index(
    info: MirrorInfo,
    rel_dir: str,
    arch: str,
    packages: Mapping[str, str],
) -> Path:
    """Write an apk ``index.json`` into ``<root>/<rel_dir>/`` (e.g.
    ``releases/25.12.0/packages/aarch64_generic/base`` or
    ``snapshots/targets/x86/64/packages``) and return its path."""
    return write_apk_index(info.root / rel_dir.strip("/"), arch, packages)


def link_tree(info: MirrorInfo, dest: Path) -> Path:
    """Make ``dest`` a single folder view of the overlay (for ``--upstream DIR``).

    Every file becomes a symlink to the file that the server would serve (the
    generated one wins over the fixture); nothing is copied.
    """
    for root in reversed(info.roots):
        for dirpath, _dirs, files in os.walk(root):
            rel = Path(dirpath).relative_to(root)
            (dest / rel).mkdir(parents=True, exist_ok=True)
            for name in files:
                link = dest / rel / name
                if link.is_symlink() or link.exists():
                    link.unlink()
                link.symlink_to(Path(dirpath) / name)
    return dest


# --------------------------------------------------------------------------- serving


@dataclass
class _Fault:
    pattern: str
    remaining: int
    status: int | None = None
    delay: float = 0.0
    corrupt: bool = False


def normalise_path(path: str) -> str:
    """Turn a request path (or URL) into ``/a/b/c``; raise ValueError on ``..``.

    Percent-escapes are decoded, the query is dropped, doubled slashes and
    ``.`` segments collapse (``snapshots//targets`` resolves like upstream). A
    trailing slash is kept.
    """
    parsed = urllib.parse.urlsplit(path)
    raw = urllib.parse.unquote(parsed.path)
    if "\0" in raw or "\\" in raw:
        raise ValueError("bad character in path")
    segments = [s for s in raw.split("/") if s not in {"", "."}]
    if ".." in segments:
        raise ValueError("'..' in path")
    text = "/" + "/".join(segments)
    if raw.endswith("/") and segments:
        text += "/"
    return text


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    mirror: MirrorServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client hangs up mid-answer (timeouts, aborted downloads)."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "asu-ci-test-mirror/1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _not_allowed(self) -> None:
        self.server.mirror.record(self.command, self.path, HTTPStatus.METHOD_NOT_ALLOWED)
        self._plain(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed\n", head=False)

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _plain(self, status: int, text: str, *, head: bool, ctype: str = "text/plain") -> None:
        body = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{ctype}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _serve(self, *, head: bool) -> None:
        mirror = self.server.mirror
        try:
            path = normalise_path(self.path)
        except ValueError:
            mirror.record(self.command, self.path, HTTPStatus.BAD_REQUEST)
            self._plain(HTTPStatus.BAD_REQUEST, "bad path\n", head=head)
            return
        fault = mirror.take_fault(path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status:
            mirror.record(self.command, path, fault.status)
            self._plain(fault.status, f"injected fault {fault.status}\n", head=head)
            return
        found = mirror.lookup(path)
        if found is None:
            mirror.record(self.command, path, HTTPStatus.NOT_FOUND)
            self._plain(HTTPStatus.NOT_FOUND, "404 Not Found\n", head=head)
            return
        if isinstance(found, list):
            mirror.record(self.command, path, HTTPStatus.OK)
            self._plain(HTTPStatus.OK, _listing(path, found), head=head, ctype="text/html")
            return
        self._send_file(found, path, head=head, corrupt=fault is not None and fault.corrupt)

    def _send_file(self, file: Path, path: str, *, head: bool, corrupt: bool) -> None:
        mirror = self.server.mirror
        stat = file.stat()
        etag = f'"{stat.st_mtime_ns:x}-{stat.st_size:x}"'
        modified = int(stat.st_mtime)
        if _not_modified(
            self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since"), etag, modified
        ):
            mirror.record(self.command, path, HTTPStatus.NOT_MODIFIED)
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", email.utils.formatdate(modified, usegmt=True))
            self.end_headers()
            return
        mirror.record(self.command, path, HTTPStatus.OK, download=not head)
        ctype = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if file.name.endswith((".sig", "sha256sums", "Packages", ".buildinfo", ".manifest")):
            ctype = "text/plain"
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(stat.st_size))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", email.utils.formatdate(modified, usegmt=True))
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()
        if head:
            return
        with file.open("rb") as handle:
            if corrupt:
                data = bytearray(handle.read())
                if data:
                    data[len(data) // 2] ^= 0xFF
                shutil.copyfileobj(io.BytesIO(bytes(data)), self.wfile)
            else:
                shutil.copyfileobj(handle, self.wfile)


def _not_modified(
    if_none_match: str | None, if_modified_since: str | None, etag: str, modified: int
) -> bool:
    if if_none_match is not None:
        tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
        return "*" in tags or etag in tags
    if if_modified_since:
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        return modified <= since.timestamp()
    return False


def _listing(path: str, names: list[str]) -> str:
    title = html.escape(path if path.endswith("/") else path + "/")
    rows = "".join(
        f'<a href="{urllib.parse.quote(n)}">{html.escape(n)}</a>\n' for n in ["../", *names]
    )
    return (
        f"<html><head><title>Index of {title}</title></head><body><h1>Index of {title}</h1>"
        f"<hr><pre>{rows}</pre><hr></body></html>\n"
    )


@dataclass(frozen=True)
class RequestRecord:
    """One request the mirror answered."""

    method: str
    path: str
    status: int


class MirrorServer:
    """An HTTP server on 127.0.0.1 serving an overlay of folders.

    Use as a context manager or call :meth:`start`/:meth:`stop`. Attributes:
    ``url`` (``http://127.0.0.1:<port>``, no trailing slash), ``roots``,
    ``root`` (the first, writable one), ``info`` (the :class:`MirrorInfo`,
    if built with :func:`build_mirror`), ``requests`` (Counter of every
    request per normalised path, any method and status), ``downloads``
    (Counter of GETs answered 200 with a body), ``log`` (list of
    :class:`RequestRecord`).
    """

    def __init__(self, roots: Sequence[Path], *, info: MirrorInfo | None = None) -> None:
        self.roots = tuple(Path(r) for r in roots)
        self.info = info
        self.requests: Counter[str] = Counter()
        self.downloads: Counter[str] = Counter()
        self.log: list[RequestRecord] = []
        self._faults: list[_Fault] = []
        self._lock = threading.Lock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> MirrorServer:
        server = _Server(("127.0.0.1", 0), _Handler)
        server.mirror = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> MirrorServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("mirror is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def root(self) -> Path:
        return self.roots[0]

    def url_for(self, path: str) -> str:
        """Full URL of a mirror path such as ``releases/23.05.4/.targets.json``."""
        return self.url + "/" + path.lstrip("/")

    # -- bookkeeping

    def record(self, method: str, path: str, status: int, *, download: bool = False) -> None:
        with self._lock:
            self.requests[path] += 1
            if download:
                self.downloads[path] += 1
            self.log.append(RequestRecord(method, path, int(status)))

    def count(self, path: str) -> int:
        """Requests seen for a path (any method/status); ``path`` may be a URL."""
        with self._lock:
            return self.requests[normalise_path(path)]

    def downloads_of(self, path: str) -> int:
        """GET requests answered 200 with the full body for a path."""
        with self._lock:
            return self.downloads[normalise_path(path)]

    def reset(self) -> None:
        """Forget counters, the log and every pending fault."""
        with self._lock:
            self.requests.clear()
            self.downloads.clear()
            self.log.clear()
            self._faults.clear()

    # -- faults

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    @staticmethod
    def _pattern(path: str) -> str:
        return path if path == "*" else normalise_path(path)

    def fail_next(self, path: str, times: int = 1, status: int = 500) -> None:
        """Answer the next ``times`` requests of ``path`` with ``status``.

        ``path`` may be a glob (``/releases/*``) or ``*`` for every path.
        """
        self._add_fault(_Fault(self._pattern(path), times, status=status))

    def delay_next(self, path: str, seconds: float, times: int = 1) -> None:
        """Hold the next ``times`` answers for ``path`` back by ``seconds``."""
        self._add_fault(_Fault(self._pattern(path), times, delay=seconds))

    def corrupt_next(self, path: str, times: int = 1) -> None:
        """Flip one byte in the body of the next ``times`` downloads of ``path``."""
        self._add_fault(_Fault(self._pattern(path), times, corrupt=True))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, path: str) -> _Fault | None:
        """Consume the first pending fault matching ``path`` (used by the handler)."""
        with self._lock:
            for fault in self._faults:
                if fnmatch.fnmatchcase(path, fault.pattern):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- files

    def lookup(self, path: str) -> Path | list[str] | None:
        """The file for ``path`` (first root wins), a merged listing for a folder, or None."""
        segments = [s for s in path.split("/") if s]
        listing: set[str] = set()
        is_dir = False
        for root in self.roots:
            base = root.resolve()
            candidate = root.joinpath(*segments)
            with contextlib.suppress(OSError):
                resolved = candidate.resolve()
                if not resolved.is_relative_to(base):
                    continue
                if resolved.is_file() and not is_dir:
                    return resolved
                if resolved.is_dir():
                    is_dir = True
                    listing.update(
                        child.name + ("/" if child.is_dir() else "") for child in resolved.iterdir()
                    )
        return sorted(listing) if is_dir else None


def serve(info: MirrorInfo) -> MirrorServer:
    """Start a :class:`MirrorServer` for a built mirror (call ``stop()`` when done)."""
    return MirrorServer(info.roots, info=info).start()


def json_of(server: MirrorServer, path: str) -> Any:
    """Read a JSON file straight from the served overlay (no HTTP request)."""
    found = server.lookup(normalise_path(path))
    if not isinstance(found, Path):
        raise FileNotFoundError(path)
    return json.loads(found.read_text(encoding="utf-8"))


__all__ = [
    "DEFAULT_TARGETS",
    "MODERN_TARGETS",
    "MODERN_VERSIONS",
    "MirrorInfo",
    "MirrorServer",
    "RequestRecord",
    "TargetInfo",
    "add_apk_index",
    "add_target",
    "build_mirror",
    "derive_profiles",
    "imagebuilder_filename",
    "link_tree",
    "normalise_path",
    "publish_imagebuilder",
    "release_shape",
    "serve",
    "sha256_file",
    "write_sha256sums",
    "write_versions",
]


def built(server: MirrorServer) -> MirrorInfo:
    """What :func:`build_mirror` made for ``server`` (a mirror of plain folders has none)."""
    assert server.info is not None, "this mirror serves folders only, nothing was built"
    return server.info


def mirror_key(server: MirrorServer) -> str:
    """The usign public key that signs ``server``'s sha256sums (trust it in settings)."""
    key = built(server).public_key
    assert key is not None, "this mirror was built unsigned"
    return key

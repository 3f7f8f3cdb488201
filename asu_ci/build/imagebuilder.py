"""ImageBuilder archives: find, download, verify, unpack safely, cache, evict.

Layout under ``<data>/imagebuilders/``::

    <version>/<target>/<subtarget>/<sha256>/     one verified, unpacked archive
        meta.json                                name, sha256, url, size, unpacked_at;
                                                 its mtime is the entry's last use
        root/                                    the ImageBuilder (its top folder stripped)
    <version>/<target>/<subtarget>/<sha256>.lock      shared by every build using the entry,
                                                      exclusive while evicting it
    <version>/<target>/<subtarget>/<sha256>.install   exclusive while unpacking it
    .tmp/                                        downloads and unpacks in progress

An entry is keyed by the archive's sha256 as listed in the (verified)
``sha256sums``: that is the (version, target, revision) triple made exact — a
new revision is a new archive, and an archive rebuilt under the same revision
is not mistaken for the old one.

Concurrency. Every build holds the entry's lock *shared* while it uses the
entry, so eviction (which needs it *exclusive* and never waits for it) cannot
pull the tree from under a build. The first build to find an entry missing
takes the ``.install`` lock and unpacks into ``.tmp/``; the finished tree
appears with one rename, and builds waiting on ``.install`` find it there:
an archive is downloaded and unpacked once, however many builds want it.

The unpacked ``root/`` is never built in. The real ImageBuilder writes into
its own tree on every ``make image`` (``build_dir/target-*/root-*``, ``tmp/``,
``dl/``, ``staging_dir/host`` stamps, a regenerated ``packages/Packages``),
so two builds in one tree would overwrite each other's root filesystems.
Each build therefore gets a private working copy (:func:`working_copy`):
everything is copied, the package archives (``*.ipk``, ``*.apk``, read-only
in the cache) as reflinks where the filesystem has them, so nothing a build
writes or replaces — ``repositories.conf``, ``repositories``, ``keys/``, a
package archive changed in place by a script running as root — can reach the
shared tree or another build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import lzma
import os
import re
import shutil
import stat
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any

import zstandard

from asu_ci import fsutil
from asu_ci.build import usign
from asu_ci.config import Build
from asu_ci.errors import BuildError, ImageBuilderError, UpstreamError
from asu_ci.fsutil import FileLock
from asu_ci.upstream.source import Upstream

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int | None], None]
StepFn = Callable[[str], None]

#: Package archives the ImageBuilder only ever reads: read-only in the cache, cloned
#: (copy-on-write where the filesystem can) into each working copy.
LINKABLE_SUFFIXES = (".ipk", ".apk")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_SUMS_LINE = re.compile(r"^([0-9a-f]{64}) [ *]([^/\s]+)$")
_ARCHIVE_SUFFIXES = (".tar.zst", ".tar.xz")
_KMODS_FEED = re.compile(r"/targets/[^/\s]+/[^/\s]+/kmods/[^/\s]+")
_CHUNK = 1 << 20
#: linux/fs.h ``FICLONE``: make a file share another's blocks, copy-on-write.
_FICLONE = 0x40049409


class ArchiveChangedError(ImageBuilderError):
    """The downloaded archive is not the one ``sha256sums`` listed: upstream may
    have replaced it since (a snapshot rebuild), or the download was damaged."""


@dataclass(frozen=True)
class Archive:
    """An ImageBuilder archive as ``sha256sums`` lists it."""

    name: str
    sha256: str
    relpath: str
    url: str

    def record(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "url": self.url}


@dataclass
class Prepared:
    """A verified, unpacked ImageBuilder ready to be copied for a build."""

    archive: Archive
    root: Path
    unpacked: bool
    timings: dict[str, float] = field(default_factory=dict)


def parse_sha256sums(text: str) -> dict[str, str]:
    """``{file name: sha256}`` of a ``sha256sums`` file (``<hex> *<name>`` lines)."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        match = _SUMS_LINE.match(line.strip())
        if match:
            sums[match.group(2)] = match.group(1)
    return sums


def archive_pattern(version: str, target: str) -> re.Pattern[str]:
    """The file name of the ImageBuilder of ``target`` in ``version``, with or without it.

    The name carries ``VERSION_NUMBER`` as the build set it (target/imagebuilder's
    ``IB_NAME``), so its case is not fixed: ``openwrt-imagebuilder-24.10-SNAPSHOT-…``
    for a branch snapshot, none at all for ``SNAPSHOT``.
    """
    t, s = target.split("/", 1)
    return re.compile(
        rf"^openwrt-imagebuilder-(?:(?i:{re.escape(version)})-)?"
        rf"{re.escape(t)}-{re.escape(s)}\.Linux-x86_64\.tar\.(?:xz|zst)$"
    )


def find_archive(sums: dict[str, str], version: str, target: str) -> tuple[str, str] | None:
    """``(name, sha256)`` of the target's ImageBuilder in ``sums``; the zstd one if both."""
    pattern = archive_pattern(version, target)
    found = sorted((n for n in sums if pattern.match(n)), key=lambda n: not n.endswith(".zst"))
    return (found[0], sums[found[0]]) if found else None


def locate(
    upstream: Upstream,
    path: str,
    version: str,
    target: str,
    trusted: Mapping[str, str],
    *,
    allow_unsigned: bool = False,
) -> Archive:
    """Find the target's ImageBuilder in ``<path>/targets/<t>/<s>/sha256sums``.

    The usign signature ``sha256sums.sig`` must name one of the ``trusted`` keys
    (``{key id: key text}``, :func:`asu_ci.knowledge.trusted_keys`) and verify before
    anything listed in ``sha256sums`` is trusted, so a bad or unknown signature is
    refused before the archive is downloaded. A missing signature is refused unless
    ``allow_unsigned``; a signature that is present is checked either way.
    """
    folder = f"{path}/targets/{target}"
    fetched = upstream.get(f"{folder}/sha256sums")
    if fetched is None:
        raise ImageBuilderError(
            f"No sha256sums for {version} {target} at {upstream.url(folder)}: "
            "the download server has no ImageBuilder for this target"
        )
    sums_url = upstream.url(folder + "/sha256sums")
    signature = upstream.get(f"{folder}/sha256sums.sig")
    if signature is None and not allow_unsigned:
        raise ImageBuilderError(
            f"{sums_url}.sig is missing: refusing an unsigned ImageBuilder (a mirror "
            "without signatures needs signatures.allow_unsigned in the configuration)"
        )
    if signature is None:
        log.warning("%s is not signed; used because signatures.allow_unsigned is on", sums_url)
    else:
        try:
            usign.verify_trusted(fetched.data, signature.data.decode("utf-8", "replace"), trusted)
        except ValueError as exc:
            raise ImageBuilderError(
                f"The signature of {sums_url} is not valid ({exc}); refusing the ImageBuilder"
                + ("" if "trusted" not in str(exc) else _TRUST_HINT)
            ) from None
    found = find_archive(parse_sha256sums(fetched.data.decode("utf-8", "replace")), version, target)
    if found is None:
        raise ImageBuilderError(
            f"No ImageBuilder for {version} {target} is listed in "
            f"{upstream.url(folder + '/sha256sums')}"
        )
    name, sha256 = found
    relpath = f"{folder}/{name}"
    return Archive(name=name, sha256=sha256, relpath=relpath, url=upstream.url(relpath))


_TRUST_HINT = (
    ". A mirror signed by its own key names it in signatures.trusted_keys "
    "(or the branch's signing_key)"
)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


class ImageBuilderCache:
    """Verified, unpacked ImageBuilders under ``root``, shared by every build on this machine."""

    def __init__(self, root: Path, upstream: Upstream, limits: Build) -> None:
        self.root = root
        self.upstream = upstream
        self.limits = limits

    @property
    def max_bytes(self) -> int:
        return int(self.limits.cache_max_gb * (1 << 30))

    def entry(self, version: str, target: str, archive: Archive) -> Path:
        if not _SHA256.match(archive.sha256):
            raise ValueError("not a sha256")
        return self.root / version / target / archive.sha256

    @contextlib.contextmanager
    def use(
        self,
        version: str,
        target: str,
        archive: Archive,
        *,
        on_step: StepFn | None = None,
        on_progress: ProgressFn | None = None,
    ) -> Iterator[Prepared]:
        """The unpacked ImageBuilder of ``archive``, downloaded and unpacked if needed.

        The entry stays locked shared (safe from eviction) until the block ends.
        """
        entry = self.entry(version, target, archive)
        lock = FileLock(entry.with_name(entry.name + ".lock"))
        lock.acquire(shared=True)
        try:
            prepared = Prepared(archive=archive, root=entry / "root", unpacked=False)
            if not (entry / "meta.json").is_file():
                with FileLock(entry.with_name(entry.name + ".install")):
                    if not (entry / "meta.json").is_file():
                        self._install(archive, entry, prepared, on_step, on_progress)
                        prepared.unpacked = True
            with contextlib.suppress(OSError):
                os.utime(entry / "meta.json")
            yield prepared
        finally:
            lock.release()

    def _install(
        self,
        archive: Archive,
        entry: Path,
        prepared: Prepared,
        on_step: StepFn | None,
        on_progress: ProgressFn | None,
    ) -> None:
        """Download, verify and unpack ``archive`` into ``entry`` (under the install lock)."""
        tmp = self.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        stem = f"{archive.sha256}.{os.getpid()}"
        download = tmp / f"{stem}.download"
        unpacked = tmp / f"{stem}.unpack"
        try:
            if on_step is not None:
                on_step("download_imagebuilder")
            started = time.monotonic()
            try:
                self.upstream.download(archive.relpath, download, on_progress)
            except UpstreamError as exc:
                raise ImageBuilderError(
                    f"Downloading the ImageBuilder {archive.name} failed: {exc.message}"
                ) from None
            actual = file_sha256(download)
            prepared.timings["download"] = time.monotonic() - started
            if actual != archive.sha256:
                raise ArchiveChangedError(
                    f"The ImageBuilder {archive.name} does not match its sha256sums entry "
                    f"(expected {archive.sha256}, got {actual}); refusing to unpack it"
                )
            if on_step is not None:
                on_step("unpack_imagebuilder")
            started = time.monotonic()
            shutil.rmtree(unpacked, ignore_errors=True)
            size = unpack(download, unpacked / "root", self.max_bytes, name=archive.name)
            meta = {**archive.record(), "size": size, "unpacked_at": int(time.time())}
            fsutil.write_json(unpacked / "meta.json", meta)
            entry.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(entry, ignore_errors=True)  # an incomplete leftover, never in use
            os.replace(unpacked, entry)
            prepared.timings["unpack"] = time.monotonic() - started
        finally:
            download.unlink(missing_ok=True)
            shutil.rmtree(unpacked, ignore_errors=True)

    def evict(self, *, keep: Path | None = None, now: float | None = None) -> list[Path]:
        """Remove entries unused for longer than the age limit, then the least recently
        used ones while the cache is over its size limit. Entries in use are skipped
        (the limits are targets, not guarantees), and so is ``keep``. Also clears
        unpacks and downloads that a killed process left in ``.tmp/``.
        """
        now = time.time() if now is None else now
        max_age = self.limits.cache_max_age_days * 86400
        entries: list[tuple[float, int, Path]] = []
        for meta in self.root.glob("*/*/*/*/meta.json"):
            try:
                used = meta.stat().st_mtime
                size = int(json.loads(meta.read_bytes()).get("size", 0))
            except (OSError, ValueError, AttributeError):
                continue
            entries.append((used, size, meta.parent))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        removed = []
        for used, size, entry in entries:
            if entry == keep or (now - used <= max_age and total <= self.max_bytes):
                continue
            if self._remove_entry(entry):
                removed.append(entry)
                total -= size
        self._sweep_tmp()
        return removed

    def _remove_entry(self, entry: Path) -> bool:
        lock = FileLock(entry.with_name(entry.name + ".lock"))
        if not lock.acquire(blocking=False):
            return False
        try:
            doomed = self.root / ".tmp" / f"{entry.name}.{os.getpid()}.evict"
            doomed.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(entry, doomed)
            except OSError:
                return False
            shutil.rmtree(doomed, ignore_errors=True)
            entry.with_name(entry.name + ".install").unlink(missing_ok=True)
            return True
        finally:
            lock.release(remove=True)

    def _sweep_tmp(self) -> None:
        """Remove what a killed process left in ``.tmp/`` (its pid no longer runs)."""
        tmp = self.root / ".tmp"
        if not tmp.is_dir():
            return
        for item in tmp.iterdir():
            parts = item.name.lstrip(".").split(".")
            if len(parts) < 3 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
                continue
            if item.is_dir() and not item.is_symlink():
                shutil.rmtree(item, ignore_errors=True)
            else:
                item.unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- safe unpacking -------------------------------------------------------------------


def _open_tar(path: Path, zst: bool, stack: contextlib.ExitStack) -> tarfile.TarFile:
    """A streaming reader of a ``.tar.zst`` (``zst``) or ``.tar.xz`` file."""
    fh: IO[bytes] = stack.enter_context(path.open("rb"))
    if zst:
        reader = stack.enter_context(zstandard.ZstdDecompressor().stream_reader(fh))
        return stack.enter_context(tarfile.open(fileobj=reader, mode="r|"))
    return stack.enter_context(tarfile.open(fileobj=fh, mode="r|xz"))


def _top_folder(name: str) -> str:
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def unpack(archive: Path, dest: Path, max_bytes: int, *, name: str) -> int:
    """Extract the ImageBuilder archive ``name`` (stored at ``archive``) into ``dest``.

    ``dest`` must not exist yet. The archive's top folder (``name`` without
    ``.tar.*``) is stripped. The whole archive is refused with
    :class:`ImageBuilderError` (and ``dest`` removed) for an absolute member
    name, a ``..`` component, a member written through a link, a hard link to
    anything but a regular file inside, a symbolic link that resolves outside
    ``dest``, a device file or FIFO, a duplicate member, or more than
    ``max_bytes`` of content. Owners are not restored; set-id and group/other
    write bits are dropped. Returns the bytes written.
    """
    dest.mkdir(parents=True)
    extractor = _Extractor(dest, _top_folder(name), max_bytes)
    try:
        with contextlib.ExitStack() as stack:
            tar = _open_tar(archive, name.endswith(".zst"), stack)
            for member in tar:
                extractor.add(tar, member)
        extractor.finish()
    except (tarfile.TarError, lzma.LZMAError, zstandard.ZstdError, EOFError, OSError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ImageBuilderError(
            f"The ImageBuilder archive {name} cannot be unpacked ({exc})"
        ) from None
    except BuildError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    if not (dest / "Makefile").is_file():
        shutil.rmtree(dest, ignore_errors=True)
        raise ImageBuilderError(
            f"The archive {name} is not an ImageBuilder (it has no Makefile at its top)"
        )
    return extractor.size


class _Extractor:
    """Writes tar members one by one, refusing anything that could leave ``root``."""

    def __init__(self, root: Path, top: str, max_bytes: int) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.top = top
        self.max_bytes = max_bytes
        self.size = 0
        self.dirs: set[str] = {""}
        self.links: list[Path] = []
        self.times: list[tuple[Path, int]] = []

    def refuse(self, member: tarfile.TarInfo, why: str) -> ImageBuilderError:
        name = member.name.encode("unicode_escape").decode("ascii")[:200]
        return ImageBuilderError(
            f"Refusing the ImageBuilder archive: member {name!r} {why}; none of it is used"
        )

    def relative(self, member: tarfile.TarInfo, name: str) -> tuple[str, ...] | None:
        """The member's path parts below the top folder; None for the top folder itself."""
        if "\x00" in name or name.startswith("/") or "\\" in name:
            raise self.refuse(member, "has an absolute or malformed path")
        parts = tuple(p for p in PurePosixPath(name).parts if p != ".")
        if ".." in parts:
            raise self.refuse(member, "contains '..'")
        if parts and parts[0] == self.top:
            parts = parts[1:]
        return parts or None

    def parent(self, member: tarfile.TarInfo, parts: Sequence[str]) -> Path:
        """The real folder a member goes into, created as needed; never through a link."""
        path = self.root
        for i, part in enumerate(parts):
            path = path / part
            key = "/".join(parts[: i + 1])
            if key in self.dirs:
                continue
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                path.mkdir(mode=0o755)
            else:
                if not stat.S_ISDIR(st.st_mode):
                    raise self.refuse(member, "would be written through a link or file")
            self.dirs.add(key)
        return path

    def add(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        parts = self.relative(member, member.name)
        if parts is None:
            return
        folder = self.parent(member, parts[:-1])
        path = folder / parts[-1]
        if member.isdir():
            self.parent(member, parts)
            os.chmod(path, (member.mode & 0o755) | 0o700)
            return
        if os.path.lexists(path):
            raise self.refuse(member, "appears twice")
        if member.isreg():
            self.size += member.size
            if self.size > self.max_bytes:
                raise self.refuse(member, f"takes the archive over {self.max_bytes} bytes")
            source = tar.extractfile(member)
            if source is None:
                raise self.refuse(member, "has no data")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            with source, os.fdopen(os.open(path, flags, 0o600), "wb") as out:
                shutil.copyfileobj(source, out, _CHUNK)
            # Package archives are only ever read: nobody may write them in the cache.
            read_only = parts[-1].endswith(LINKABLE_SUFFIXES)
            os.chmod(path, 0o444 if read_only else member.mode & 0o755)
            self.times.append((path, int(member.mtime)))
        elif member.issym():
            target = member.linkname
            if not target or target.startswith("/") or "\x00" in target:
                raise self.refuse(member, "is a link to an absolute path")
            lexical = os.path.normpath(os.path.join(*parts[:-1], target) if parts[:-1] else target)
            if lexical == ".." or lexical.startswith("../"):
                raise self.refuse(member, "is a link that points outside the ImageBuilder")
            os.symlink(target, path)
            self.links.append(path)
        elif member.islnk():
            source_parts = self.relative(member, member.linkname)
            if source_parts is None:
                raise self.refuse(member, "is a hard link to a folder")
            original = self.root.joinpath(*source_parts)
            if not os.path.realpath(original).startswith(self.real_root + os.sep):
                raise self.refuse(member, "is a hard link that points outside the ImageBuilder")
            try:
                st = os.lstat(original)
            except FileNotFoundError:
                raise self.refuse(member, "is a hard link to a missing file") from None
            if not stat.S_ISREG(st.st_mode):
                raise self.refuse(member, "is a hard link to something other than a file")
            os.link(original, path, follow_symlinks=False)
        else:
            raise self.refuse(member, "is a device file, FIFO or other special file")

    def finish(self) -> None:
        """Check every link against the finished tree; restore file times."""
        for link in self.links:
            real = os.path.realpath(link)
            if real != self.real_root and not real.startswith(self.real_root + os.sep):
                relative = link.relative_to(self.root).as_posix()
                raise ImageBuilderError(
                    f"Refusing the ImageBuilder archive: the link {relative!r} resolves "
                    "outside the ImageBuilder; none of it is used"
                )
        for path, mtime in self.times:
            os.utime(path, (mtime, mtime), follow_symlinks=False)


# --- per-build working copies ---------------------------------------------------------


def working_copy(source: Path, dest: Path) -> None:
    """A private copy of an unpacked ImageBuilder for one build (see the module docs)."""

    def copy(src: str, dst: str) -> Any:
        if src.endswith(LINKABLE_SUFFIXES):
            clone(src, dst)
            return dst
        return shutil.copy2(src, dst)

    shutil.copytree(source, dest, symlinks=True, copy_function=copy)


def clone(src: str, dst: str) -> None:
    """``dst`` as a copy of ``src`` that shares no inode with it: a reflink where the
    filesystem has them (btrfs, XFS: no data copied, blocks copied on write), else
    a full copy. Never a hard link: a build runs package scripts as root, and root
    writes through a read-only mode, so a link would carry an in-place write into
    the shared cache and every later build."""
    with open(src, "rb") as reading, open(dst, "xb") as writing:
        try:
            fcntl.ioctl(writing.fileno(), _FICLONE, reading.fileno())
        except OSError:
            shutil.copyfileobj(reading, writing, _CHUNK)
    shutil.copystat(src, dst)


# --- custom repositories --------------------------------------------------------------


def configure_repositories(
    ib_root: Path,
    repositories: Sequence[tuple[str, str]],
    keys: Sequence[str],
    mode: str,
) -> list[str]:
    """Add (``append``) or set (``replace``) the package feeds of a working copy.

    opkg ImageBuilders read ``repositories.conf`` (``src/gz <name> <url>``
    lines; the local ``src imagebuilder file:packages`` feed always stays),
    apk ones ``repositories`` (one URL of a ``packages.adb`` per line; local
    ``file:``/path lines stay). The kernel-module feed
    (``targets/<t>/<s>/kmods/<kernel>/``, listed by the ImageBuilders of 24.10
    and later) stays in either mode: it is made for this ImageBuilder's kernel,
    no other feed can stand in for it, and without it not even the device's
    own kernel modules install. ``keys`` go into ``keys/``: usign keys named
    after their key number (opkg), PEM keys as ``asu-<digest>.pem`` (apk).
    Files are replaced, never written in place. Returns the feed lines added.
    """
    apk = (ib_root / "repositories").is_file()
    config = ib_root / ("repositories" if apk else "repositories.conf")
    if not config.is_file():
        raise BuildError(
            "This ImageBuilder has no repositories.conf or repositories file; "
            "custom repositories cannot be used with it"
        )
    lines = config.read_text(encoding="utf-8", errors="replace").splitlines()
    if apk:
        added = [
            url if url.endswith(".adb") else f"{url.rstrip('/')}/packages.adb"
            for _, url in repositories
        ]
        remote = re.compile(r"^\s*https?://")
    else:
        added = [f"src/gz {name} {url}" for name, url in repositories]
        remote = re.compile(r"^\s*src/gz\s")
    for word in (w for line in added for w in line.split()):
        if not re.fullmatch(r"[A-Za-z0-9._~%+/:-]+", word):
            raise BuildError(f"Repository line {word!r} has characters a feed line cannot take")
    if mode == "replace":
        lines = [line for line in lines if not remote.match(line) or _KMODS_FEED.search(line)]
    remotes = [i for i, line in enumerate(lines) if remote.match(line)]
    local = [i for i, line in enumerate(lines) if not apk and re.match(r"^\s*src\s", line)]
    at = remotes[-1] + 1 if remotes else local[0] if local else len(lines)
    lines[at:at] = added
    fsutil.write_bytes(config, ("\n".join(lines) + "\n").encode(), only_if_changed=False)
    for key in keys:
        name, text = _key_file(key)
        fsutil.write_bytes(ib_root / "keys" / name, text.encode(), only_if_changed=False)
    return added


def _key_file(key: str) -> tuple[str, str]:
    """The ``keys/`` file name and content of a repository key from a request."""
    stripped = key.strip()
    if stripped.startswith("-----BEGIN PUBLIC KEY-----"):
        if not stripped.endswith("-----END PUBLIC KEY-----"):
            raise BuildError("A repository key is a PEM block without its END line")
        digest = hashlib.sha256(stripped.encode()).hexdigest()
        return f"asu-{digest}.pem", stripped + "\n"
    try:
        public = usign.parse_public_key(stripped)
    except ValueError as exc:
        raise BuildError(
            f"A repository key is neither a usign public key nor a PEM public key ({exc})"
        ) from None
    return public.fingerprint, public.text()

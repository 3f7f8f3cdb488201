"""ImageBuilder archives: locate, verify (sha256 + usign), unpack safely, cache, evict."""

from __future__ import annotations

import io
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from asu_ci.build import imagebuilder, usign
from asu_ci.build.imagebuilder import (
    Archive,
    ImageBuilderCache,
    configure_repositories,
    find_archive,
    locate,
    parse_sha256sums,
    unpack,
    working_copy,
)
from asu_ci.config import Build
from asu_ci.errors import BuildError, ImageBuilderError
from asu_ci.fsutil import FileLock
from asu_ci.upstream.source import Upstream
from tests.conftest import BUILD_TARGET, BUILD_VERSION, BuildWorld
from tests.support.imagebuilder import (
    HOSTILE_KINDS,
    imagebuilder_basename,
    make_hostile_archive,
    make_imagebuilder,
)
from tests.support.mirror import build_mirror, publish_imagebuilder, serve
from tests.support.usign import generate_keypair, sign

GIB = 1 << 30


def _archive(path: Path) -> Archive:
    return Archive(path.name, imagebuilder.file_sha256(path), path.name, path.as_uri())


@pytest.fixture
def own_mirror(build_world: BuildWorld, tmp_path: Path) -> Any:
    """A private signed mirror with the test ImageBuilder, to tamper with."""
    server = serve(build_mirror(tmp_path / "mirror", fixtures=build_world.fixtures,
                                package_count=200))  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


# --- sha256sums and signatures -------------------------------------------------------------


def test_the_archive_is_found_in_sha256sums() -> None:
    sums = parse_sha256sums(
        f"{'a' * 64} *openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64.tar.xz\n"
        f"{'b' * 64} *openwrt-sdk-23.05.4-ath79-generic_gcc-12.3.0_musl.Linux-x86_64.tar.xz\n"
        f"{'c' * 64}  openwrt-imagebuilder-x86-64.Linux-x86_64.tar.zst\n"
        f"{'d' * 64} *openwrt-imagebuilder-23.05-snapshot-ath79-nand.Linux-x86_64.tar.xz\n"
        "garbage line\n"
    )
    assert len(sums) == 4
    assert find_archive(sums, "23.05.4", "ath79/generic") == (
        "openwrt-imagebuilder-23.05.4-ath79-generic.Linux-x86_64.tar.xz",
        "a" * 64,
    )
    assert find_archive(sums, "SNAPSHOT", "x86/64") == (
        "openwrt-imagebuilder-x86-64.Linux-x86_64.tar.zst",
        "c" * 64,
    )
    assert find_archive(sums, "23.05-SNAPSHOT", "ath79/nand") is not None
    assert find_archive(sums, "23.05.4", "ath79/nand") is None
    assert find_archive(sums, "23.05.3", "ath79/generic") is None


def test_usign_verifies_only_the_right_key_and_bytes() -> None:
    secret, public = generate_keypair(b"one")
    _, other = generate_keypair(b"two")
    data = b"sha256sums content\n"
    signature = sign(secret, data)
    usign.verify(data, signature, public)
    usign.verify(data, signature, public.splitlines()[1])
    assert usign.parse_public_key(public).fingerprint == secret.keynum_hex
    assert usign.parse_public_key(public).text() == public
    with pytest.raises(ValueError, match="does not match"):
        usign.verify(data + b"x", signature, public)
    with pytest.raises(ValueError, match="expected key"):
        usign.verify(data, signature, other)
    with pytest.raises(ValueError, match="not a usign"):
        usign.verify(data, "untrusted comment: x\nnot base64!\n", public)
    with pytest.raises(ValueError, match="not a usign"):
        usign.parse_public_key("untrusted comment: x\nAAAA\n")


def test_a_bad_signature_is_refused_before_anything_is_downloaded(
    own_mirror: Any, tmp_path: Path
) -> None:
    info = own_mirror.info
    sums = info.first.dir / "sha256sums"
    sums.write_text(sums.read_text() + f"{'0' * 64} *extra-file\n")
    upstream = Upstream(own_mirror.url, tmp_path / "cache")
    with pytest.raises(ImageBuilderError, match=r"signature of .*sha256sums is not valid"):
        locate(
            upstream,
            "releases/23.05.4",
            BUILD_VERSION,
            BUILD_TARGET,
            usign.keyring([info.public_key]),
        )
    _, stranger = generate_keypair(b"stranger")
    with pytest.raises(ImageBuilderError, match="not a trusted key"):
        locate(upstream, "releases/23.05.4", BUILD_VERSION, BUILD_TARGET, usign.keyring([stranger]))
    (info.first.dir / "sha256sums.sig").unlink()
    with pytest.raises(ImageBuilderError, match="missing"):
        locate(
            upstream,
            "releases/23.05.4",
            BUILD_VERSION,
            BUILD_TARGET,
            usign.keyring([info.public_key]),
        )
    assert own_mirror.downloads_of(info.first.archive_rel) == 0
    # Unsigned, the listing is taken as it is only when the operator allows it.
    found = locate(
        upstream, "releases/23.05.4", BUILD_VERSION, BUILD_TARGET, {}, allow_unsigned=True
    )
    assert found.name == info.archive_name and found.sha256 == info.archive_sha256
    listing = sums.read_text().splitlines(True)
    sums.write_text("".join(line for line in listing if "imagebuilder" not in line))
    with pytest.raises(ImageBuilderError, match=r"No ImageBuilder for 23\.05\.4 ath79/generic is"):
        locate(upstream, "releases/23.05.4", BUILD_VERSION, BUILD_TARGET, {}, allow_unsigned=True)
    with pytest.raises(ImageBuilderError, match=r"No sha256sums for 23\.05\.4 ath79/nand"):
        locate(upstream, "releases/23.05.4", BUILD_VERSION, "ath79/nand", {})
    upstream.close()


def test_a_tampered_archive_is_refused_before_unpacking(own_mirror: Any, tmp_path: Path) -> None:
    info = own_mirror.info
    with info.archive_path.open("ab") as fh:
        fh.write(b"tampered")
    upstream = Upstream(own_mirror.url, tmp_path / "cache")
    cache = ImageBuilderCache(tmp_path / "ibs", upstream, Build())
    archive = locate(
        upstream, "releases/23.05.4", BUILD_VERSION, BUILD_TARGET, usign.keyring([info.public_key])
    )
    unpacked: list[Any] = []
    real = imagebuilder.unpack
    with pytest.MonkeyPatch.context() as patch:

        def counted(*args: Any, **kwargs: Any) -> Any:
            unpacked.append(args)
            return real(*args, **kwargs)

        patch.setattr(imagebuilder, "unpack", counted)
        with (
            pytest.raises(ImageBuilderError, match="does not match its sha256sums entry"),
            cache.use(BUILD_VERSION, BUILD_TARGET, archive),
        ):
            pass
    assert unpacked == []
    assert own_mirror.downloads_of(info.first.archive_rel) == 1
    assert not list((tmp_path / "ibs").glob("*/*/*/*/meta.json"))
    assert list((tmp_path / "ibs" / ".tmp").iterdir()) == []
    upstream.close()


# --- safe unpacking ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_archives_are_refused(kind: str, tmp_path: Path) -> None:
    archive = make_hostile_archive(tmp_path / "in", kind)
    dest = tmp_path / "out" / "root"
    with pytest.raises(ImageBuilderError, match="Refusing the ImageBuilder archive"):
        unpack(archive, dest, GIB, name=archive.name)
    assert not dest.exists()
    assert not (tmp_path / "out" / "evil").exists()
    assert not Path("/tmp/asu-ci-test-absolute-evil").exists()


def _tar(path: Path, members: list[tarfile.TarInfo], top: bool = True) -> Path:
    prefix = imagebuilder_basename(BUILD_VERSION, BUILD_TARGET) + "/" if top else ""
    with tarfile.open(path, "w:xz", preset=0) as tar:
        makefile = tarfile.TarInfo(prefix + "Makefile")
        makefile.size = 6
        tar.addfile(makefile, io.BytesIO(b"info:\n"))
        for member in members:
            member.name = prefix + member.name
            if member.islnk():
                member.linkname = prefix + member.linkname
            tar.addfile(member, io.BytesIO(b"x" * member.size) if member.isreg() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", size: int = 0) -> Any:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.size = size
    info.mode = 0o4777 if kind == tarfile.REGTYPE else 0o755
    return info


@pytest.mark.parametrize(
    ("members", "why"),
    [
        ([_member("dev/sda", tarfile.BLKTYPE)], "device file"),
        ([_member("fifo", tarfile.FIFOTYPE)], "device file, FIFO"),
        ([_member("etc", tarfile.SYMTYPE, "/etc")], "absolute path"),
        # Each link on its own stays inside; together they resolve outside.
        (
            [
                _member("a", tarfile.DIRTYPE),
                _member("a/up", tarfile.SYMTYPE, ".."),
                _member("escape", tarfile.SYMTYPE, "a/up/.."),
            ],
            "resolves outside",
        ),
        (
            [_member("lib", tarfile.SYMTYPE, "."), _member("lib/x", size=1)],
            "written through a link",
        ),
        ([_member("twice", size=1), _member("twice", size=1)], "appears twice"),
        ([_member("big", size=4096)], "takes the archive over"),
    ],
)
def test_unsafe_members_refuse_the_whole_archive(
    members: list[tarfile.TarInfo], why: str, tmp_path: Path
) -> None:
    archive = _tar(tmp_path / "ib.tar.xz", members)
    dest = tmp_path / "out" / "root"
    with pytest.raises(ImageBuilderError, match=why):
        unpack(archive, dest, 1024, name=f"{imagebuilder_basename(BUILD_VERSION, BUILD_TARGET)}"
               ".tar.xz")  # fmt: skip
    assert not dest.exists()


def test_unpack_keeps_safe_links_and_drops_setuid(tmp_path: Path) -> None:
    name = f"{imagebuilder_basename(BUILD_VERSION, BUILD_TARGET)}.tar.xz"
    archive = _tar(
        tmp_path / name,
        [
            _member("bin/tool", size=3),
            _member("bin/alias", tarfile.SYMTYPE, "tool"),
            _member("bin/hard", tarfile.LNKTYPE, "bin/tool"),
        ],
    )
    with tarfile.open(archive) as tar:
        assert tar.getmember(name.removesuffix(".tar.xz") + "/bin/tool").mode & 0o4000
    dest = tmp_path / "root"
    assert unpack(archive, dest, GIB, name=name) == 6 + 3
    assert os.readlink(dest / "bin" / "alias") == "tool"
    assert (dest / "bin" / "hard").stat().st_ino == (dest / "bin" / "tool").stat().st_ino
    assert (dest / "bin" / "tool").stat().st_mode & 0o7777 == 0o755

    # Another name: the top folder is not stripped, so no Makefile is at the top.
    with pytest.raises(ImageBuilderError, match="no Makefile"):
        unpack(archive, tmp_path / "other", GIB, name="other.tar.xz")
    assert not (tmp_path / "other").exists()
    # An archive without a top folder unpacks as it is.
    flat = _tar(tmp_path / "flat.tar.xz", [], top=False)
    unpack(flat, tmp_path / "flat", GIB, name=name)
    assert (tmp_path / "flat" / "Makefile").is_file()


def test_unpacked_package_archives_are_read_only(tmp_path: Path) -> None:
    name = f"{imagebuilder_basename(BUILD_VERSION, BUILD_TARGET)}.tar.xz"
    members = [_member("packages/a_1_all.ipk", size=1), _member("packages/b-1-r0.apk", size=1)]
    members.append(_member("packages/Packages", size=1))
    dest = tmp_path / "root"
    unpack(_tar(tmp_path / name, members), dest, GIB, name=name)
    assert (dest / "packages" / "a_1_all.ipk").stat().st_mode & 0o7777 == 0o444
    assert (dest / "packages" / "b-1-r0.apk").stat().st_mode & 0o7777 == 0o444
    assert (dest / "packages" / "Packages").stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize("compression", ["xz", "zst"])
def test_real_test_imagebuilders_unpack(compression: str, tmp_path: Path) -> None:
    archive = make_imagebuilder(tmp_path / "in", compression=compression)
    dest = tmp_path / "root"
    unpack(archive, dest, GIB, name=archive.name)
    assert (dest / "Makefile").is_file() and (
        dest / "scripts" / "ib_tool.py"
    ).stat().st_mode & 0o100
    assert (dest / "repositories.conf").is_file()
    broken = tmp_path / archive.name
    broken.write_bytes(archive.read_bytes()[:200])
    with pytest.raises(ImageBuilderError, match="cannot be unpacked"):
        unpack(broken, tmp_path / "broken", GIB, name=archive.name)
    assert not (tmp_path / "broken").exists()


def test_a_hostile_archive_from_the_mirror_fails_the_build(
    own_mirror: Any, build_world: BuildWorld, tmp_path: Path
) -> None:
    from asu_ci.build.job import run_build
    from asu_ci.identity.request import BuildRequest
    from asu_ci.identity.validate import normalize
    from asu_ci.publish.local import LocalStore

    hostile = make_hostile_archive(tmp_path / "hostile", "symlink")
    publish_imagebuilder(own_mirror.info, BUILD_VERSION, BUILD_TARGET, hostile)
    settings = build_world.settings.model_copy(
        update={"upstream": own_mirror.url, "data": tmp_path / "data"}
    )
    raw = {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": "tplink_archer-c7-v5"}
    request = normalize(BuildRequest.model_validate(raw), build_world.catalog, settings.server)
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ImageBuilderError, match="points outside"):
        run_build(request, settings=settings, store=store, catalog=build_world.catalog)
    assert not list((tmp_path / "data" / "imagebuilders").glob("*/*/*/*/meta.json"))
    assert list((tmp_path / "data" / "imagebuilders" / ".tmp").iterdir()) == []


# --- the cache -----------------------------------------------------------------------------


def test_concurrent_users_share_one_download_and_unpack(own_mirror: Any, tmp_path: Path) -> None:
    info = own_mirror.info
    upstream = Upstream(own_mirror.url, tmp_path / "cache")
    cache = ImageBuilderCache(tmp_path / "ibs", upstream, Build())
    archive = locate(
        upstream, "releases/23.05.4", BUILD_VERSION, BUILD_TARGET, usign.keyring([info.public_key])
    )
    unpacks: list[str] = []
    real = imagebuilder.unpack

    def slow_unpack(*args: Any, **kwargs: Any) -> int:
        unpacks.append(kwargs["name"])
        time.sleep(0.3)
        return real(*args, **kwargs)

    roots: list[tuple[Path, bool]] = []
    barrier = threading.Barrier(3)

    def use() -> None:
        barrier.wait()
        with cache.use(BUILD_VERSION, BUILD_TARGET, archive) as prepared:
            roots.append((prepared.root, prepared.unpacked))
            assert (prepared.root / "Makefile").is_file()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(imagebuilder, "unpack", slow_unpack)
        threads = [threading.Thread(target=use) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert unpacks == [info.archive_name]
    assert own_mirror.downloads_of(info.first.archive_rel) == 1
    assert len({root for root, _ in roots}) == 1
    assert sorted(unpacked for _, unpacked in roots) == [False, False, True]
    upstream.close()


def _entry(root: Path, sha: str, size: int, used: float) -> Path:
    entry = root / "23.05.4" / "ath79" / "generic" / sha
    (entry / "root").mkdir(parents=True)
    (entry / "meta.json").write_text(f'{{"size": {size}}}')
    os.utime(entry / "meta.json", (used, used))
    return entry


def test_eviction_by_age_and_size_skips_entries_in_use(tmp_path: Path) -> None:
    now = time.time()
    root = tmp_path / "ibs"
    limits = Build(cache_max_age_days=1, cache_max_gb=1)
    cache = ImageBuilderCache(root, Upstream(str(tmp_path), tmp_path / "cache"), limits)
    old = _entry(root, "a" * 64, 1, now - 3 * 86400)
    busy_old = _entry(root, "b" * 64, 1, now - 3 * 86400)
    big = _entry(root, "c" * 64, GIB // 2, now - 600)
    bigger = _entry(root, "d" * 64, GIB // 2 + 10, now - 60)
    fresh = _entry(root, "e" * 64, 10, now)
    (root / ".tmp").mkdir()
    (root / ".tmp" / f"{'f' * 64}.999999999.unpack").mkdir()
    (root / ".tmp" / f"{'f' * 64}.{os.getpid()}.download").write_bytes(b"mine")

    lock = FileLock(busy_old.with_name(busy_old.name + ".lock"))
    assert lock.acquire(shared=True)
    try:
        removed = cache.evict(keep=fresh, now=now)
    finally:
        lock.release()
    # Over the age limit: old (busy_old is in use); then the oldest while over 1 GiB: big.
    assert removed == [old, big]
    assert busy_old.is_dir() and bigger.is_dir() and fresh.is_dir()
    assert not old.exists() and not big.exists()
    assert [p.name for p in (root / ".tmp").iterdir()] == [f"{'f' * 64}.{os.getpid()}.download"]
    assert cache.evict(now=now) == [busy_old]


def test_file_lock_follows_a_removed_lock_file(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    first, second = FileLock(path), FileLock(path)
    assert first.acquire()
    assert not second.acquire(blocking=False)
    got: list[int] = []

    def wait() -> None:
        second.acquire()
        got.append(os.stat(path).st_ino)
        second.release(remove=True)

    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.1)
    first.release(remove=True)
    thread.join(timeout=5)
    assert got and not path.exists()
    with FileLock(path) as again:
        assert again.path.exists()


# --- working copies and repositories -------------------------------------------------------


def test_working_copy_shares_no_file_with_the_cache(tmp_path: Path) -> None:
    """What a build does to its working copy (a postinst or make step running as root,
    writing in place, appending, truncating, renaming over) never reaches the cache."""
    shared = tmp_path / "shared"
    (shared / "packages").mkdir(parents=True)
    names = [f"packages/{n}" for n in ("busybox_1.36.1-1_mips_24kc.ipk", "a.ipk", "b.apk")]
    for name in names:
        (shared / name).write_bytes(b"original package bytes")
        (shared / name).chmod(0o444)
    (shared / "repositories.conf").write_text("src imagebuilder file:packages\n")
    (shared / "staging_dir").symlink_to("packages")
    copy = tmp_path / "copy"
    working_copy(shared, copy)
    ipk, ipk2, apk = names
    for name in names:
        assert (copy / name).stat().st_ino != (shared / name).stat().st_ino
        assert (copy / name).read_bytes() == b"original package bytes"
    assert (copy / "repositories.conf").stat().st_ino != (
        shared / "repositories.conf"
    ).stat().st_ino
    # Root ignores the read-only mode: these writes succeed on the working copy.
    assert os.geteuid() == 0 or not os.access(copy / ipk, os.W_OK)
    if os.geteuid() == 0:
        with open(copy / ipk, "r+b") as inplace:
            inplace.write(b"EVIL")
        with open(copy / ipk2, "ab") as appended:
            appended.write(b"EVIL")
        os.truncate(copy / apk, 0)
        assert (copy / ipk).read_bytes().startswith(b"EVIL")
    (copy / "evil").write_bytes(b"EVIL")
    os.replace(copy / "evil", copy / ipk)
    for name in names:
        assert (shared / name).read_bytes() == b"original package bytes"
    assert os.readlink(copy / "staging_dir") == "packages"
    configure_repositories(copy, [("extra", "https://feeds.example.org/extra")], [], "append")
    assert "extra" not in (shared / "repositories.conf").read_text()


OPKG_CONF = """\
src/gz openwrt_core https://downloads.openwrt.org/releases/23.05.4/targets/ath79/generic/packages
src/gz openwrt_base https://downloads.openwrt.org/releases/23.05.4/packages/mips_24kc/base
## This is the local package repository, do not remove!
src imagebuilder file:packages

option check_signature
"""


def test_repositories_opkg_append_and_replace(tmp_path: Path) -> None:
    secret, public = generate_keypair(b"feed")
    pem = "-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----"
    for mode in ("append", "replace"):
        root = tmp_path / mode
        root.mkdir()
        (root / "repositories.conf").write_text(OPKG_CONF)
        added = configure_repositories(
            root, [("extra", "https://feeds.example.org/extra")], [public, pem], mode
        )
        assert added == ["src/gz extra https://feeds.example.org/extra"]
        lines = (root / "repositories.conf").read_text().splitlines()
        assert "src imagebuilder file:packages" in lines and "option check_signature" in lines
        assert ("src/gz openwrt_base" in "\n".join(lines)) == (mode == "append")
        assert lines.index(added[0]) < lines.index("src imagebuilder file:packages")
        assert (root / "keys" / secret.keynum_hex).read_text() == public
        assert len(list((root / "keys").glob("asu-*.pem"))) == 1
    with pytest.raises(BuildError, match="neither a usign public key nor a PEM"):
        configure_repositories(tmp_path / "append", [], ["not a key"], "append")
    with pytest.raises(BuildError, match=r"no repositories\.conf"):
        configure_repositories(tmp_path, [("x", "https://feeds.example.org/x")], [], "append")


def test_repositories_apk(tmp_path: Path) -> None:
    (tmp_path / "repositories").write_text(
        "https://downloads.openwrt.org/snapshots/targets/x86/64/packages/packages.adb\n"
        "packages/packages.adb\n"
    )
    configure_repositories(tmp_path, [("extra", "https://feeds.example.org/x86_64/extra")], [],
                           "replace")  # fmt: skip
    assert (tmp_path / "repositories").read_text().splitlines() == [
        "packages/packages.adb",
        "https://feeds.example.org/x86_64/extra/packages.adb",
    ]

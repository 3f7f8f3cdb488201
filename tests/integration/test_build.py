"""The build job: run_build against the test ImageBuilder served on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from asu_ci import proc
from asu_ci.build import job
from asu_ci.build.job import make_packages, make_path, make_var, run_build
from asu_ci.cli import app
from asu_ci.config import Settings
from asu_ci.errors import BuildError, RequestError
from asu_ci.identity.hashing import request_hash
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import NormalizedRequest, normalize
from asu_ci.publish import retention
from asu_ci.publish.local import LocalStore
from tests.conftest import (
    BUILD_PROFILE,
    BUILD_TARGET,
    BUILD_VERSION,
    BuildWorld,
    make_build_world,
)
from tests.support.imagebuilder import imagebuilder_basename, unpack_imagebuilder
from tests.support.mirror import build_mirror, built, mirror_key, publish_imagebuilder, serve
from tests.support.packages import write_packages
from tests.support.shapes import BUILT_KEYS
from tests.support.usign import generate_keypair, sign

#: Every field of the 200 body of PROTOCOL.md, plus ours.
FIELDS_200 = BUILT_KEYS | {"package_changes", "reproducibility"}


@dataclass
class Kit:
    """One test's view: the world's index, its own store, shared or own data folder."""

    world: BuildWorld
    settings: Settings
    store: LocalStore

    def request(self, **fields: Any) -> NormalizedRequest:
        raw = {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": BUILD_PROFILE}
        raw.update(fields)
        return normalize(BuildRequest.model_validate(raw), self.world.catalog, self.settings.server)

    def build(self, request: NormalizedRequest, **kwargs: Any) -> dict[str, Any]:
        return run_build(
            request, settings=self.settings, store=self.store, catalog=self.world.catalog, **kwargs
        )

    def folder(self, request: NormalizedRequest) -> Path:
        return self.store.folder(request_hash(request))


def _kit(world: BuildWorld, tmp_path: Path, *, own_data: bool = False, **changes: Any) -> Kit:
    update: dict[str, Any] = {"data": tmp_path / "data"} if own_data else {}
    update.update(changes)
    settings = world.settings.model_copy(update=update)
    return Kit(world, settings, LocalStore(tmp_path / "store"))


@pytest.fixture
def kit(build_world: BuildWorld, tmp_path: Path) -> Kit:
    """The session's world with this test's store; the data folder (and its unpacked
    ImageBuilder) is shared with every other test."""
    return _kit(build_world, tmp_path)


@pytest.fixture
def private_world(build_world: BuildWorld, tmp_path: Path) -> Iterator[Callable[..., BuildWorld]]:
    """``private_world(prepare=None, **build_mirror_kwargs)``: a world with its own mirror.

    ``prepare(info)`` may change the mirror's files before the index is rendered.
    """
    servers: list[Any] = []

    def make(prepare: Callable[[Any], None] | None = None, **kwargs: Any) -> BuildWorld:
        kwargs.setdefault("package_count", 400)
        root = tmp_path / f"world{len(servers)}"
        info = build_mirror(root / "mirror", fixtures=build_world.fixtures, **kwargs)
        if prepare is not None:
            prepare(info)
        server = serve(info)
        servers.append(server)
        return make_build_world(root, build_world.fixtures, mirror=server)

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def _image(folder: Path, body: dict[str, Any], kind: str = "sysupgrade") -> bytes:
    name: str = next(i["name"] for i in body["images"] if i["type"] == kind)
    return (folder / name).read_bytes()


# --- a full build ------------------------------------------------------------------------


def test_full_build_publishes_every_file_and_field(kit: Kit, tmp_path: Path) -> None:
    request = kit.request(packages=["luci"], client="luci/test")
    steps: list[str] = []
    body = kit.build(request, on_step=steps.append)
    key = request_hash(request)
    folder = kit.folder(request)

    assert set(body) >= FIELDS_200
    assert body["status"] == 200 and body["detail"] == "done"
    assert body["id"] == BUILD_PROFILE and body["bin_dir"] == key == body["request_hash"]
    assert body["request"] == request.public_json()
    # Shared by every requester of the hash: nothing one requester typed about itself.
    assert "client" not in body["request"] and "luci/test" not in json.dumps(body)
    assert body["titles"] and body["version_code"] == "r24012-d8dd03c46f"
    assert body["manifest"]["luci"] and body["manifest"]["busybox"]
    assert steps == [
        "download_imagebuilder",
        "unpack_imagebuilder",
        "calculate_packages_hash",
        "building_image",
    ]
    assert time.strptime(body["build_at"], "%Y-%m-%dT%H:%M:%SZ")

    # Every image named in build.json is published, with the sha256 of its bytes.
    types = {i["type"] for i in body["images"]}
    assert {"sysupgrade", "factory"} <= types
    for image in body["images"]:
        assert {"name", "type", "filesystem", "sha256", "sha256_unsigned"} <= set(image)
        data = (folder / image["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
    sums = (folder / "sha256sums").read_text().splitlines()
    assert sorted(sums) == sorted(f"{i['sha256']} *{i['name']}" for i in body["images"])
    manifest = folder / f"{body['image_prefix']}.manifest"
    assert "luci - " in manifest.read_text()
    assert json.loads((folder / "profiles.json").read_text())["profiles"][BUILD_PROFILE]
    assert json.loads((folder / "build.json").read_text()) == body
    assert json.loads((folder / "status.json").read_text()) == body

    # The reproducibility record names the exact archive, argv and timings.
    record = body["reproducibility"]
    archive = built(kit.world.mirror).archive_path
    assert archive is not None
    assert record["imagebuilder"]["name"] == archive.name
    assert record["imagebuilder"]["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert record["imagebuilder"]["url"].startswith(kit.world.mirror.url)
    assert record["make_argv"] == body["build_cmd"]
    assert set(record["timings"]) >= {"download", "unpack", "info", "manifest", "image", "total"}

    # Nothing is left behind: no hidden staging folder, no working tree.
    assert [p.name for p in kit.store.root.iterdir()] == [key]
    assert not (kit.settings.data_dir / "work" / key).exists()
    assert not (kit.settings.data_dir / "locks" / f"{key}.lock").exists()


def test_a_success_is_never_rebuilt(kit: Kit, monkeypatch: pytest.MonkeyPatch) -> None:
    request = kit.request(packages=["luci-app-firewall"])
    first = kit.build(request)

    def no_make(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("make ran again")

    monkeypatch.setattr(proc, "run", no_make)
    assert kit.build(request) == first
    assert kit.build(request, force=True) == first


def test_build_cmd_words_are_single_argv_words(kit: Kit) -> None:
    request = kit.request(packages=["luci", "-ppp"], defaults="echo hi\n", rootfs_size_mb=256)
    body = kit.build(request)
    argv = body["build_cmd"]
    assert argv[:2] == ["make", "image"]
    names = [word.split("=", 1)[0] for word in argv[2:]]
    assert names == [
        "PROFILE",
        "PACKAGES",
        "BIN_DIR",
        "EXTRA_IMAGE_NAME",
        "FILES",
        "ROOTFS_PARTSIZE",
    ]
    for word in argv:
        name, _, value = word.partition("=")
        if name == "PACKAGES":
            # kmod-nft-nat6 is a mandatory addition of the shipped changes (r20282).
            assert value.split(" ") == ["kmod-nft-nat6", "luci", "-ppp"]
        else:
            assert not any(c.isspace() or c in "$'\"`;\\" for c in word), word
    assert "ROOTFS_PARTSIZE=256" in argv
    assert b"rootfs_partsize: 256" in _image(kit.folder(request), body)
    # this machine's folders are not published
    assert "BIN_DIR=<BIN_DIR>" in argv and "FILES=<FILES>" in argv


# --- what goes into the image --------------------------------------------------------------


def test_diff_packages_removes_defaults_not_asked_for(kit: Kit) -> None:
    profile = kit.world.catalog.profile(BUILD_VERSION, BUILD_TARGET, BUILD_PROFILE)
    assert profile is not None
    builtin = set(profile["default_packages"]) | set(profile["device_packages"])
    wanted = sorted(builtin - {"ppp", "ppp-mod-pppoe"})
    kept = kit.build(kit.request(packages=wanted))
    assert "ppp" in kept["manifest"] and "ppp-mod-pppoe" in kept["manifest"]

    exact = kit.request(packages=wanted, diff_packages=True)
    body = kit.build(exact)
    assert "ppp" not in body["manifest"] and "ppp-mod-pppoe" not in body["manifest"]
    packages = next(w for w in body["build_cmd"] if w.startswith("PACKAGES=")).split("=", 1)[1]
    assert {"-ppp", "-ppp-mod-pppoe"} <= set(packages.split())
    assert b"  ppp " not in _image(
        kit.folder(kit.request(packages=wanted, diff_packages=True)), body
    )


def test_defaults_end_up_inside_the_image(kit: Kit) -> None:
    script = "uci set system.@system[0].hostname='asu-test-host'\nuci commit system\n"
    request = kit.request(defaults=script)
    body = kit.build(request)
    data = _image(kit.folder(request), body)
    assert b"etc/uci-defaults/99-asu-defaults" in data
    assert script.encode() in data


def test_filesystem_selects_the_published_images(kit: Kit) -> None:
    request = kit.request(filesystem="squashfs")
    body = kit.build(request)
    assert body["images"] and {i["filesystem"] for i in body["images"]} == {"squashfs"}
    assert not any("initramfs" in name for name in _visible(kit.folder(request)))
    with pytest.raises(RequestError, match="Unsupported filesystem: ext4"):
        kit.request(filesystem="ext4")


def test_package_renames_are_applied_and_reported(kit: Kit) -> None:
    body = kit.build(kit.request(packages=["luci-app-oldname"]))
    assert body["package_changes"] == [
        # shipped with asu-ci: added whatever the request says (mandatory)
        {"source": "kmod-nft-nat6", "target": None, "revision": 20282, "mandatory": True},
        # the operator's own entry in the branch's configuration
        {"source": "luci-app-oldname", "target": "luci", "revision": 20000},
    ]
    assert "kmod-nft-nat6" in body["manifest"]
    assert "luci" in body["manifest"] and "luci-app-oldname" not in body["manifest"]


def test_matching_packages_versions_build(kit: Kit) -> None:
    version = kit.build(kit.request())["manifest"]["busybox"]
    body = kit.build(kit.request(packages_versions={"busybox": version}))
    assert body["manifest"]["busybox"] == version


def test_provided_and_abi_names_in_packages_versions_build(kit: Kit) -> None:
    """23.05: ``nftables`` is only provided (by the installed ``nftables-json``), and
    ``libustream-mbedtls20201210`` is the ABI-suffixed name of what opkg's manifest
    (``--strip-abi``) lists as ``libustream-mbedtls``: both are names the index
    offers, so a request with them in packages_versions builds."""
    aliases = kit.world.catalog.aliases(BUILD_VERSION, BUILD_TARGET)
    assert "nftables-json" in aliases["nftables"]
    assert aliases["libustream-mbedtls20201210"] == ["libustream-mbedtls"]
    manifest = kit.build(kit.request(packages=["libustream-mbedtls"]))["manifest"]
    wanted = {
        "nftables": manifest["nftables-json"],
        "libustream-mbedtls20201210": manifest["libustream-mbedtls"],
    }
    body = kit.build(kit.request(packages=["libustream-mbedtls"], packages_versions=wanted))
    assert (
        "nftables" not in body["manifest"] and "libustream-mbedtls20201210" not in body["manifest"]
    )


# --- failures ------------------------------------------------------------------------------


def _fails(kit: Kit, request: NormalizedRequest, match: str) -> dict[str, Any]:
    with pytest.raises(BuildError, match=match) as caught:
        kit.build(request)
    status = kit.store.status(request_hash(request))
    assert status is not None
    assert status["status"] == 500 and status["imagebuilder_status"] == "failed"
    assert status["detail"] == caught.value.message and "\n" not in status["detail"]
    assert kit.store.build(request_hash(request)) is None
    assert _visible(kit.folder(request)) == ["status.json"]
    return status


def test_packages_versions_mismatch_names_the_package(kit: Kit) -> None:
    request = kit.request(packages_versions={"busybox": "0.0.1-1", "dropbear": "1-1"})
    status = _fails(kit, request, "versions differ")
    assert "busybox (requested 0.0.1-1, got 1.36.1-1)" in status["detail"]
    assert "dropbear (requested 1-1" in status["detail"]


def test_conflicting_packages_are_an_impossible_selection(kit: Kit) -> None:
    status = _fails(kit, kit.request(packages=["dnsmasq-full"]), "Impossible package selection")
    assert "conflicts (dnsmasq-full, dnsmasq)" in status["detail"]
    assert "check_conflicts_for" in status["stderr"]


def test_version_code_mismatch(kit: Kit) -> None:
    status = _fails(kit, kit.request(version_code="r1-0123456"), "Received incorrect version")
    assert "r24012-d8dd03c46f (requested r1-0123456)" in status["detail"]


def test_unknown_package_in_the_imagebuilder(
    private_world: Callable[..., BuildWorld], tmp_path: Path
) -> None:
    """A package the index lists but the ImageBuilder cannot install."""

    def add_ghost(info: Any) -> None:
        feed = info.root / "releases" / BUILD_VERSION / "packages" / info.arch / "base"
        text = (feed / "Packages").read_text()
        text += "\nPackage: asu-ghost\nVersion: 1.0-1\nDepends: libc\nArchitecture: mips_24kc\n"
        plain, _ = write_packages(feed, text)
        (feed / "Packages.sig").write_text(sign(info.secret_key, plain.read_bytes()))

    world = private_world(add_ghost)
    kit = _kit(world, tmp_path, own_data=True)
    status = _fails(kit, kit.request(packages=["asu-ghost"]), "Impossible package selection")
    assert status["detail"] == "Impossible package selection: missing (asu-ghost)"


def test_image_too_big(private_world: Callable[..., BuildWorld], tmp_path: Path) -> None:
    kit = _kit(private_world(max_image_size=20000), tmp_path, own_data=True)
    status = _fails(kit, kit.request(packages=["luci"]), "Image too big")
    assert "is too big" in status["detail"]


def test_a_failure_is_kept_until_the_retry_time(
    kit: Kit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    request = kit.request(version_code="r2-0123456")
    _fails(kit, request, "Received incorrect version")
    calls: list[Any] = []
    real = proc.run

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(proc, "run", counted)
    with pytest.raises(BuildError, match="Received incorrect version"):
        kit.build(request)
    assert calls == []
    with pytest.raises(BuildError, match="Received incorrect version"):
        kit.build(request, force=True)
    assert calls
    calls.clear()
    retry_now = _kit(kit.world, tmp_path, build=kit.settings.build.model_copy(
        update={"failure_retry_seconds": 0}))  # fmt: skip
    with pytest.raises(BuildError):
        retry_now.build(request)
    assert calls


# --- hostile input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"packages": ("$(touch /tmp/asu-ci-pwned)",)},
        {"packages": ("luci busybox",)},
        {"profile": "tplink_archer-c7-v5 FILES=/etc"},
        {"profile": "$(touch /tmp/asu-ci-pwned)"},
        {"filesystem": "squashfs;id"},
    ],
)
def test_a_hostile_request_is_refused_before_make(
    kit: Kit, change: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(proc, "run", lambda *a, **k: calls.append(a))
    hostile = replace(kit.request(), **change)
    with pytest.raises(RequestError):
        kit.build(hostile)
    assert calls == []
    status = kit.store.status(request_hash(hostile))
    assert status is not None and status["status"] == 500
    assert "\n" not in status["detail"]
    assert not Path("/tmp/asu-ci-pwned").exists()


@pytest.mark.parametrize(
    "value", ["$(touch x)", "a b", "a\nb", "a'b", 'a"b', "`id`", "a;b", "a\tb", "${X}"]
)
def test_make_words_refuse_what_make_or_a_shell_would_interpret(value: str) -> None:
    with pytest.raises(BuildError, match="Refusing"):
        make_var("PROFILE", value)
    with pytest.raises(BuildError, match="Refusing"):
        make_packages(["luci", value])
    with pytest.raises(BuildError, match="cannot be handed to make"):
        make_path("BIN_DIR", Path("/tmp") / value)
    assert make_var("PROFILE", "tplink_archer-c7-v5") == "PROFILE=tplink_archer-c7-v5"
    assert make_packages(["luci", "-ppp"]) == "PACKAGES=luci -ppp"


def test_a_data_folder_make_cannot_take_fails_clearly(
    build_world: BuildWorld, tmp_path: Path
) -> None:
    kit = _kit(build_world, tmp_path, data=tmp_path / "my data")
    with pytest.raises(BuildError, match="cannot be handed to make as BIN_DIR"):
        kit.build(kit.request())


# --- repositories --------------------------------------------------------------------------


def test_custom_repositories_reach_only_this_build(build_world: BuildWorld, tmp_path: Path) -> None:
    mirror = build_world.mirror
    secret, public = generate_keypair(b"custom-feed")
    feed = mirror.root / "custom-feed"
    plain, _ = write_packages(feed, "Package: asu-extra\nVersion: 1-1\nArchitecture: all\n")
    (feed / "Packages.sig").write_text(sign(secret, plain.read_bytes()))
    kit = _kit(build_world, tmp_path)
    request = kit.request(
        repositories={"custom": f"{mirror.url}/custom-feed"},
        repository_keys=[public.splitlines()[1]],
        repositories_mode="replace",
    )
    before = mirror.count("/custom-feed/Packages.sig")
    kit.build(request)
    assert mirror.count("/custom-feed/Packages.gz") >= 1
    assert mirror.count("/custom-feed/Packages.sig") > before
    shared = next((kit.settings.data_dir / "imagebuilders").glob("*/*/*/*/root"))
    conf = (shared / "repositories.conf").read_text()
    assert "custom" not in conf and "src/gz openwrt_core" in conf
    assert not (shared / "keys" / secret.keynum_hex).exists()

    with pytest.raises(RequestError, match="allow-list"):
        kit.request(repositories={"evil": "https://evil.example.com/feed"})


# --- concurrency and crashes ---------------------------------------------------------------


def test_concurrent_builds_of_one_request_build_once(
    build_world: BuildWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit = _kit(build_world, tmp_path)
    images: list[tuple[str, ...]] = []
    real = proc.run

    def counting(argv: Any, **kwargs: Any) -> Any:
        if list(argv[:3]) == ["make", "--no-print-directory", "image"]:
            images.append(tuple(argv))
            time.sleep(0.3)
        return real(argv, **kwargs)

    monkeypatch.setattr(proc, "run", counting)
    request = kit.request(packages=["luci-ssl"])
    results: list[dict[str, Any]] = []
    threads = [threading.Thread(target=lambda: results.append(kit.build(request))) for _ in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and results[0] == results[1]
    assert len(images) == 1


def _slow_imagebuilder(info: Any, marker: Path, tmp: Path) -> None:
    """Replace the mirror's ImageBuilder with one whose `make image` waits while ``marker``
    exists (so a test can kill the build in the middle of it)."""
    top = imagebuilder_basename(BUILD_VERSION, BUILD_TARGET)
    folder = unpack_imagebuilder(info.archive_path, tmp / "slow")
    makefile = folder / "Makefile"
    makefile.write_text(
        makefile.read_text()
        + f"\nimage: slow-down\nslow-down:\n\t@while [ -e {marker} ]; do sleep 0.05; done\n"
    )
    archive = tmp / info.archive_path.name
    with tarfile.open(archive, "w:xz", preset=0) as tar:
        tar.add(folder, arcname=top)
    publish_imagebuilder(info, BUILD_VERSION, BUILD_TARGET, archive)


def _kill_processes_under(folder: Path) -> None:
    """SIGKILL every process whose working directory is inside ``folder`` (orphaned make)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if cwd.startswith(str(folder)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.mark.slow
def test_a_build_killed_during_make_image_leaves_nothing_half_published(
    private_world: Callable[..., BuildWorld], tmp_path: Path
) -> None:
    marker = tmp_path / "hold-make-image"
    marker.touch()
    world = private_world(lambda info: _slow_imagebuilder(info, marker, tmp_path))
    settings = world.settings
    config = tmp_path / "asu-ci.yaml"
    dumped = settings.model_dump(mode="json", exclude_none=True)
    config.write_text(yaml.safe_dump(dumped))
    store = LocalStore(settings.public_dir / "store")
    raw = {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": BUILD_PROFILE,
           "packages": ["luci"]}  # fmt: skip
    request_file = tmp_path / "request.json"
    request_file.write_text(json.dumps(raw))
    key = request_hash(normalize(BuildRequest.model_validate(raw), world.catalog, settings.server))
    folder = store.folder(key)
    argv = [sys.executable, "-m", "asu_ci", "--config", str(config), "build"]
    child = subprocess.Popen(
        [*argv, "--request", str(request_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while (store.status(key) or {}).get("imagebuilder_status") != "building_image":
            assert child.poll() is None, "the build ended before make image"
            assert time.monotonic() < deadline, "the build never reached make image"
            time.sleep(0.02)
        time.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        _kill_processes_under(settings.data_dir)
        marker.unlink()

    # Killed: a 202 status, no build.json, no image, nothing half there.
    assert _visible(folder) == ["status.json"]
    assert (store.status(key) or {})["status"] == 202
    assert [p.name for p in store.root.iterdir()] == [key]

    # A stale staging folder of the killed run is cleared by the next run.
    stale = store.staging(key)
    (stale / "half.bin").write_bytes(b"half")
    result = CliRunner().invoke(app, ["--config", str(config), "build", "--request",
                                      str(request_file)])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"build {key}: 23.05.4 ath79/generic {BUILD_PROFILE}")
    assert lines[-1].startswith(f"built {key}: 3 image(s), ") and lines[-1].endswith(str(folder))
    body = store.build(key)
    assert body is not None
    assert set(_visible(folder)) >= {"build.json", "status.json", "sha256sums", "profiles.json"}
    assert [p.name for p in store.root.iterdir()] == [key]
    assert not (settings.data_dir / "work" / key).exists()


# --- the CLI -------------------------------------------------------------------------------


def _config(world: BuildWorld, tmp_path: Path) -> Path:
    settings = world.settings.model_copy(update={"public": tmp_path / "public"})
    import shutil

    shutil.copytree(world.settings.public_dir, tmp_path / "public")
    path = tmp_path / "asu-ci.yaml"
    path.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    return path


def test_cli_build_dry_run_and_failure_exit_code(build_world: BuildWorld, tmp_path: Path) -> None:
    config = _config(build_world, tmp_path)
    request = {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": "tplink,archer-c7-v5",
               "packages": ["luci"]}  # fmt: skip
    runner = CliRunner()
    dry = runner.invoke(
        app, ["--config", str(config), "build", "--request", "-", "--dry-run"],
        input=json.dumps(request),
    )  # fmt: skip
    assert dry.exit_code == 0, dry.output
    assert len(dry.output.splitlines()) == 1 and "to build" in dry.output
    assert not (tmp_path / "public" / "store").exists()

    bad = {**request, "version_code": "r3-0123456"}
    failed = runner.invoke(
        app, ["--config", str(config), "build", "--request", "-"], input=json.dumps(bad)
    )
    assert failed.exit_code == 4
    assert failed.output.splitlines()[-1].startswith("asu-ci: Received incorrect version")

    invalid = runner.invoke(
        app, ["--config", str(config), "build", "--request", "-"],
        input=json.dumps({**request, "profile": "no-such-device"}),
    )  # fmt: skip
    assert invalid.exit_code == 2
    assert "Unsupported profile: no-such-device" in invalid.output

    mismatched = runner.invoke(
        app, ["--config", str(config), "build", "--request", "-", "--expect-hash", "0" * 64],
        input=json.dumps(request),
    )  # fmt: skip
    assert mismatched.exit_code == 2
    assert "not to the expected" in mismatched.output
    assert not list((tmp_path / "public" / "store").glob("*/build.json"))


def test_parsers_read_the_real_formats() -> None:
    info = job.parse_info(
        'Current Target: "ath79/generic"\nCurrent Architecture: "mips"\n'
        'Current Revision: "r24012-d8dd03c46f"\nDefault Packages: base-files busybox\n'
        "Available Profiles:\n\n8dev_carambola2:\n    8devices Carambola2\n"
        "    Packages: kmod-usb-chipidea2 -wpad\n    hasImageMetadata: 1\n"
        "    SupportedDevices: 8dev,carambola2 carambola2\n"
    )
    assert info.revision == "r24012-d8dd03c46f"
    assert info.default_packages == ("base-files", "busybox")
    assert info.profiles == {"8dev_carambola2": ("kmod-usb-chipidea2", "-wpad")}
    assert job.parse_manifest("busybox - 1.36.1-1\nnoise\nluci - git-24.1\n") == {
        "busybox": "1.36.1-1",
        "luci": "git-24.1",
    }
    assert job.parse_manifest("busybox 1.36.1-r1\nsome other output line\n") == {
        "busybox": "1.36.1-r1"
    }
    opkg = (
        "Collected errors:\n"
        " * satisfy_dependencies_for: Cannot satisfy the following dependencies for luci:\n"
        " * \tlibfoo (>= 2) | libbar\n"
        " * opkg_install_cmd: Cannot install package luci.\n"
        " * opkg_install_cmd: Cannot install package nope.\n"
    )
    assert job.impossible_selection(opkg) == (
        "Impossible package selection: missing (libfoo, libbar, nope)"
    )
    apk = (
        "ERROR: unable to select packages:\n  nope (no such package):\n"
        "    required by: world[nope]\n  dnsmasq-full-2.90-r1:\n"
        "    conflicts: dnsmasq-2.90-r1[dnsmasq]\n"
    )
    assert job.impossible_selection(apk) == (
        "Impossible package selection: missing (nope) conflicts (dnsmasq-full, dnsmasq)"
    )
    assert job.package_words(["b", "a", "-c"], info, "8dev_carambola2", False) == ["a", "b", "-c"]
    assert job.package_words(["busybox"], info, "8dev_carambola2", True) == [
        "busybox",
        "-base-files",
        "-kmod-usb-chipidea2",
    ]


def test_signing_key_is_found_by_branch(build_world: BuildWorld) -> None:
    key = job._signing_key(build_world.settings, build_world.catalog, BUILD_VERSION)
    assert key == mirror_key(build_world.mirror)


# --- what a shared answer may hold (issue 12 points 2, 6, 12) ---------------------------


def test_a_failure_body_shows_placeholders_not_this_machines_folders(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ImageBuilder prints absolute paths (its own tree, BIN_DIR, FILES) in what
    it says when ``make image`` fails; the published failure shows placeholders."""
    real = proc.run

    def failing_image(argv: list[str], **kwargs: Any) -> proc.Result:
        result = real(argv, **kwargs)
        if "image" not in argv:
            return result
        ib = Path(kwargs["cwd"]).resolve()
        words = dict(w.split("=", 1) for w in argv if "=" in w)
        out = (
            f"mkdir -p {ib}/build_dir/target-mips_24kc_musl/root-ath79\n"
            f"cp -fpR {words['FILES']}/. {ib}/build_dir/target-mips_24kc_musl/root-ath79/\n"
            f"install -m0644 image.bin {words['BIN_DIR']}/openwrt-image.bin\n"
        )
        err = f"make[2]: *** [{ib}/include/image.mk:99: image] Error 1\n"
        return proc.Result(result.argv, 2, result.stdout + out, result.stderr + err)

    monkeypatch.setattr(proc, "run", failing_image)
    request = kit.request(packages=["luci-app-firewall"], defaults="echo placeholders\n")
    with pytest.raises(BuildError, match="make image failed"):
        kit.build(request)
    status = kit.store.status(request_hash(request))
    assert status is not None and status["status"] == 500
    text = json.dumps(status)
    for folder in (kit.settings.data_dir, kit.settings.public_dir, kit.store.root):
        assert str(folder.resolve()) not in text and str(folder.absolute()) not in text
    assert "mkdir -p <IMAGEBUILDER>/build_dir/target-mips_24kc_musl/root-ath79" in status["stdout"]
    assert "cp -fpR <FILES>/. <IMAGEBUILDER>/build_dir/" in status["stdout"]
    assert "<BIN_DIR>/openwrt-image.bin" in status["stdout"]
    assert "[<IMAGEBUILDER>/include/image.mk:99: image]" in status["stderr"]


def test_a_first_boot_script_is_published_only_as_its_sha256(kit: Kit) -> None:
    script = "uci set wireless.default_radio0.key='hunter2-wifi'\necho 'root:pw' | chpasswd\n"
    request = kit.request(defaults=script, client="evil/ download at http://evil.example/")
    body = kit.build(request)
    folder = kit.folder(request)
    shared = [json.dumps(body), *((folder / n).read_text() for n in ("build.json", "status.json"))]
    for text in shared:
        assert "hunter2" not in text and "chpasswd" not in text and "evil" not in text
    assert body["request"]["defaults_sha256"] == hashlib.sha256(script.encode()).hexdigest()
    assert "defaults" not in body["request"] and "client" not in body["request"]
    # The image holds the script, and the store marks the build for early expiry.
    assert script.encode() in _image(folder, body)
    assert (folder / retention.FIRST_BOOT).is_file()
    assert not (kit.folder(kit.request()) / retention.FIRST_BOOT).exists()
    # The hash still covers the script: another script is another image.
    assert request_hash(kit.request(defaults=script + "#\n")) != request_hash(request)


def test_a_repeated_recent_failure_says_it_is_old_and_how_to_retry(kit: Kit) -> None:
    request = kit.request(version_code="r5-0123456")
    _fails(kit, request, "Received incorrect version")
    with pytest.raises(BuildError, match="failure of an earlier run, 0 min ago") as again:
        kit.build(request)
    assert "--force tries again now" in again.value.message

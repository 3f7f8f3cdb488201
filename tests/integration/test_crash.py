"""kill -9 with real processes: the endpoint mid-build, everything mid-publish.

``asu-ci serve`` runs as a process of its own, configured by a YAML file,
against the local mirror; ``make`` on its PATH logs every run (and can hold
``make image``), so the test counts what really ran.
A watcher reads the store the whole time: whenever ``build.json`` is there,
every image it names is there whole, and the API never answers 200 before.

1. The endpoint is killed while ``make image`` runs. Its build process lives
   on; the restarted endpoint picks the request up again, waits for that
   build instead of starting another, and the request completes with exactly
   one ``make image``.
2. The endpoint and its build are killed while the build publishes (its
   files half moved into the hidden staging folder). Nothing of it is
   visible; after a restart the request is built again and published whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from asu_ci.config import Settings
from tests.conftest import BUILD_PROFILE, BUILD_TARGET, BUILD_VERSION, BuildWorld, make_build_world
from tests.support.frontends import (
    CountingMake,
    Serve,
    free_port,
    processes_mentioning,
    write_config,
)
from tests.support.frontends import request as http
from tests.support.mirror import MirrorServer

pytestmark = pytest.mark.slow

#: A build of the test ImageBuilder takes a few seconds at most; this allows for a busy machine.
DEADLINE = 90.0
#: Bytes per package in an image: ~20 MB images, so publishing takes long enough to catch.
BYTES_PER_PACKAGE = 400_000


@dataclass
class Rig:
    root: Path
    settings: Settings
    config: Path
    make: CountingMake
    port: int = field(default_factory=free_port)

    @property
    def store(self) -> Path:
        return self.settings.public_dir / "store"

    def serve(self) -> Serve:
        return Serve(self.config, self.port, self.root / "serve.log", path=(self.make.bin,)).start()


@pytest.fixture(scope="module")
def rig(build_world: BuildWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    root = tmp_path_factory.mktemp("crash")
    world = make_build_world(
        root,
        build_world.fixtures,
        package_count=400,
        bytes_per_package=BYTES_PER_PACKAGE,
        max_image_size=1 << 30,
    )
    assert isinstance(world.settings, Settings)
    dumped = world.settings.model_dump(mode="json", exclude_none=True)
    dumped["server"]["rate_limit_per_minute"] = 1000
    config = write_config(root / "asu-ci.yaml", dumped)
    try:
        yield Rig(root, world.settings, config, CountingMake(root))
    finally:
        mirror = world.mirror
        assert isinstance(mirror, MirrorServer)
        mirror.stop()
        for pid in processes_mentioning(str(root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def body(*packages: str) -> dict[str, Any]:
    return {
        "version": BUILD_VERSION,
        "target": BUILD_TARGET,
        "profile": BUILD_PROFILE,
        "packages": list(packages),
        "diff_packages": True,
    }


def post(url: str, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    status, _, data = http(
        url + "/api/v1/build",
        "POST",
        json.dumps(request).encode(),
        {"Content-Type": "application/json"},
    )
    return status, json.loads(data)


def wait_until(what: str, check: Any, deadline: float = DEADLINE, every: float = 0.02) -> Any:
    end = time.monotonic() + deadline
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(every)


class Watcher:
    """Reads the store and the API until stopped: nothing half-published, ever."""

    def __init__(self, rig: Rig, digest: str) -> None:
        self.rig = rig
        self.folder = rig.store / digest
        self.digest = digest
        self.problems: list[str] = []
        self.looks = 0
        self._checked: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert self.problems == []
        assert self.looks > 10

    def _run(self) -> None:
        deadline = time.monotonic() + 3 * DEADLINE
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.looks += 1
            self._look_at_files()
            self._look_at_api()
            time.sleep(0.01)

    def _look_at_files(self) -> None:
        try:
            raw = (self.folder / "build.json").read_bytes()
        except FileNotFoundError:
            return
        built = json.loads(raw)  # never half written
        if hash(raw) in self._checked:
            return
        for image in built["images"]:
            path = self.folder / image["name"]
            if not path.is_file():
                self.problems.append(f"build.json names {image['name']}, which is missing")
            elif hashlib.sha256(path.read_bytes()).hexdigest() != image["sha256"]:
                self.problems.append(f"{image['name']} is not whole")
        self._checked.add(hash(raw))

    def _look_at_api(self) -> None:
        try:
            status, _, data = http(f"http://127.0.0.1:{self.rig.port}/api/v1/build/{self.digest}")
        except OSError:
            return  # the endpoint is down (killed) right now
        if status == 200 and not (self.folder / "build.json").is_file():
            self.problems.append("the API answered 200 before build.json was published")
        if status not in (200, 202):
            self.problems.append(f"the API answered {status}: {data[:200]!r}")


def check_published(rig: Rig, digest: str) -> dict[str, Any]:
    folder = rig.store / digest
    built: dict[str, Any] = json.loads((folder / "build.json").read_bytes())
    assert built["request_hash"] == digest
    assert json.loads((folder / "status.json").read_bytes())["status"] == 200
    for image in built["images"]:
        data = (folder / image["name"]).read_bytes()
        assert len(data) > BYTES_PER_PACKAGE
        assert hashlib.sha256(data).hexdigest() == image["sha256"]
    assert [p.name for p in rig.store.iterdir() if p.name.startswith(".")] == []
    return built


def build_process(rig: Rig, digest: str) -> int:
    """The ``asu-ci build`` process the endpoint started for ``digest``."""
    found = processes_mentioning(f"jobs/{digest}.json")
    return found[0] if found else 0


def test_endpoint_killed_during_make_image(rig: Rig) -> None:
    rig.make.hold.touch()
    serve = rig.serve()
    try:
        status, answer = post(serve.url, body("luci"))
        assert status == 202
        digest = answer["request_hash"]
        images_before = len(rig.make.lines("image"))
        with Watcher(rig, digest):
            wait_until("make image", lambda: len(rig.make.lines("image")) > images_before)
            orphan = build_process(rig, digest)
            assert orphan
            serve.kill()
            status_file = json.loads((rig.store / digest / "status.json").read_bytes())
            assert status_file["status"] == 202
            assert status_file["imagebuilder_status"] == "building_image"
            assert not (rig.store / digest / "build.json").exists()

            serve = rig.serve()
            # The restarted endpoint knows the request: a repeat is a poll, not a new build.
            status, answer = post(serve.url, body("luci"))
            assert status == 202 and answer["request_hash"] == digest
            rig.make.hold.unlink()
            wait_until("the build", lambda: (rig.store / digest / "build.json").is_file())
            wait_until(
                "the endpoint to answer 200",
                lambda: http(f"{serve.url}/api/v1/build/{digest}")[0] == 200,
            )
    finally:
        rig.make.hold.unlink(missing_ok=True)
        serve.stop()
    check_published(rig, digest)
    image_runs = rig.make.lines("image")[images_before:]
    assert [ln.split()[0] for ln in image_runs] == ["start", "end"], image_runs
    assert image_runs[1].endswith(" 0")


def test_everything_killed_while_publishing(rig: Rig) -> None:
    serve = rig.serve()
    orphans: list[int] = []
    try:
        status, answer = post(serve.url, body("luci", "tcpdump"))
        assert status == 202
        digest = answer["request_hash"]
        folder = rig.store / digest
        with Watcher(rig, digest):
            builder = wait_until("the build process", lambda: build_process(rig, digest))
            orphans.append(builder)

            def publishing() -> bool:
                return any(
                    any(staging.iterdir())
                    for staging in rig.store.glob(f".{digest}.*.staging")
                    if staging.is_dir()
                )

            wait_until("publishing", publishing, every=0.001)
            os.kill(builder, signal.SIGSTOP)
            # Frozen halfway: files in the hidden staging folder, nothing in the store.
            assert not (folder / "build.json").exists()
            assert sorted(p.name for p in folder.iterdir()) == ["status.json"]
            status, _, _ = http(f"{serve.url}/api/v1/build/{digest}")
            assert status == 202
            staging = next(rig.store.glob(f".{digest}.*.staging"))
            hidden = next(staging.iterdir()).name
            status, _, _ = http(f"{serve.url}/store/{staging.name}/{hidden}")
            assert status == 404
            serve.kill()
            os.kill(builder, signal.SIGKILL)

            serve = rig.serve()
            wait_until(
                "the rebuilt request",
                lambda: http(f"{serve.url}/api/v1/build/{digest}")[0] == 200,
            )
    finally:
        serve.stop()
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    check_published(rig, digest)
    assert not (rig.settings.data_dir / "work" / digest).exists()

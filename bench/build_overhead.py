"""What asu-ci adds to a build beyond the ImageBuilder's own ``make image``.

    .venv/bin/python -m bench.build_overhead [--builds 20] [--profiles 20]

1. ``--builds`` different requests, one after another, through ``asu-ci
   serve`` with the test ImageBuilder: the time from the POST to the moment
   ``build.json`` is published (its mtime), minus the ``make image`` time the
   job measured (``reproducibility.timings.image`` in build.json). The first
   build also downloads, verifies and unpacks the ImageBuilder.
2. ``asu-ci prebuild`` of ``--profiles`` profiles of one target with an empty
   ImageBuilder cache: how many times the ImageBuilder was downloaded (the
   mirror's count) and unpacked (builds whose timings include an unpack).

Goals (issue 7): at most 2 s of overhead per build; one unpack per prebuild.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.common import PROFILE, TARGET, VERSION, World, machine, make_world, request_body
from tests.support.frontends import Serve, free_port, request, write_config

OVERHEAD_GOAL = 2.0
STEPS = ("download", "unpack", "workspace", "info", "manifest", "image")


def one_build(serve: Serve, world: World, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """POST ``body`` and wait for its build.json: (seconds from POST to publish, build.json)."""
    posted = time.time()
    status, _, data = request(
        serve.url + "/api/v1/build",
        "POST",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    if status != 202:
        raise RuntimeError(f"expected a new build (202), got {status}: {data[:300]!r}")
    built = world.settings.public_dir / "store" / json.loads(data)["request_hash"] / "build.json"
    deadline = time.monotonic() + 120
    while not built.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{built} did not appear in 120 s")
        time.sleep(0.005)
    return built.stat().st_mtime - posted, json.loads(built.read_bytes())


def builds(world: World, root: Path, count: int) -> list[tuple[float, dict[str, Any]]]:
    serve = Serve(world.config, free_port(), root / "serve.log").start()
    try:
        return [
            one_build(serve, world, request_body(defaults=f"# build {n}\n")) for n in range(count)
        ]
    finally:
        serve.stop()


def prebuild(world: World, root: Path, profiles: int) -> tuple[int, int, int, float, str]:
    """(entries, downloads, unpacks, seconds, summary line) of a cold prebuild."""
    folder = root / "prebuild"
    shutil.copytree(world.settings.public_dir, folder / "public", ignore=_no_store)
    dumped = world.settings.model_dump(mode="json", exclude_none=True)
    dumped.update(public=str(folder / "public"), data=str(folder / "data"))
    config = write_config(folder / "asu-ci.yaml", dumped)
    listed = json.loads(
        (
            world.settings.public_dir / "releases" / VERSION / "targets" / TARGET / "profiles.json"
        ).read_bytes()
    )["profiles"]
    names = [PROFILE, *sorted(p for p in listed if p != PROFILE)][:profiles]
    entries = [
        {"version": VERSION, "target": TARGET, "profile": p, "packages": ["luci"]} for p in names
    ]
    (folder / "list.yaml").write_text(yaml.safe_dump(entries))
    downloads_before = _archive_downloads(world)
    argv = [
        sys.executable,
        "-m",
        "asu_ci",
        "--config",
        str(config),
        "prebuild",
        str(folder / "list.yaml"),
    ]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"prebuild failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    unpacks = 0
    for built in (folder / "public" / "store").glob("*/build.json"):
        timings = json.loads(built.read_bytes())["reproducibility"]["timings"]
        unpacks += 1 if timings.get("unpack", 0) > 0 else 0
    downloads = _archive_downloads(world) - downloads_before
    return len(entries), downloads, unpacks, seconds, done.stdout.strip().splitlines()[-1]


def _no_store(folder: str, names: list[str]) -> list[str]:
    return ["store"] if os.path.basename(folder) == "public" else []


def _archive_downloads(world: World) -> int:
    counts = world.mirror.downloads
    return sum(n for path, n in counts.items() if "imagebuilder" in path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=20)
    parser.add_argument("--profiles", type=int, default=20)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="asu-ci-bench-builds-") as tmp:
        root = Path(tmp)
        world = make_world(root / "world")
        try:
            results = builds(world, root, args.builds)
            entries, downloads, unpacks, seconds, line = prebuild(world, root, args.profiles)
        finally:
            world.stop()
    overheads = []
    print(f"{'build':>5} {'POST->published':>15} {'make image':>10} {'overhead':>8}  steps (s)")
    for n, (total, built) in enumerate(results, 1):
        timings = built["reproducibility"]["timings"]
        overhead = total - timings["image"]
        overheads.append(overhead)
        steps = " ".join(f"{step} {timings.get(step, 0):.2f}" for step in STEPS)
        print(f"{n:>5} {total:>14.2f}s {timings['image']:>9.2f}s {overhead:>7.2f}s  {steps}")
    print(
        f"overhead: median {statistics.median(overheads):.2f} s, max {max(overheads):.2f} s "
        f"(first build, cold ImageBuilder cache: {overheads[0]:.2f} s)"
    )
    print(
        f"prebuild of {entries} profiles of {TARGET}: {seconds:.1f} s, ImageBuilder "
        f"downloaded {downloads}x, unpacked {unpacks}x | {line}"
    )
    met = max(overheads) <= OVERHEAD_GOAL and unpacks == 1 and downloads == 1
    print(
        f"build_overhead: {len(results)} builds, overhead median "
        f"{statistics.median(overheads):.2f} s, max {max(overheads):.2f} s; prebuild of "
        f"{entries} profiles unpacked the ImageBuilder "
        f"{unpacks}x: goals {'met' if met else 'NOT met'} (<= {OVERHEAD_GOAL:g} s, 1 unpack)"
    )


if __name__ == "__main__":
    main()

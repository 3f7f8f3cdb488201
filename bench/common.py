"""What the benchmarks share: a world on 127.0.0.1, a finished build, wrk, the figures.

A *world* is the test stand-ins of ``tests/support`` at work: a local download
server on 127.0.0.1 (the real 23.05.4 metadata of ath79/generic, generated
package feeds, the test ImageBuilder), its rendered index, and an
``asu-ci.yaml`` pointing at both. Nothing here talks to any other address.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asu_ci.config import Settings
from tests.support.frontends import write_config
from tests.support.mirror import MirrorServer

BENCH = Path(__file__).resolve().parent
WRK_SCRIPT = BENCH / "wrk.lua"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
#: wrk 4.1 waits for the body of a HEAD answer forever; hey measures HEAD instead.
HEY = shutil.which("hey") or "/usr/bin/hey"

#: The upstream ASU server (FastAPI + Redis) on a machine like ours, 64 connections.
ASU_POST_FINISHED = 120.0
ASU_GET_FINISHED = 150.0
ASU_BAD_REQUEST = 150.0
ASU_P99_MS = 1000.0

VERSION = "23.05.4"
TARGET = "ath79/generic"
PROFILE = "tplink_archer-c7-v5"


@dataclass
class World:
    root: Path
    mirror: MirrorServer
    settings: Settings
    config: Path

    def stop(self) -> None:
        self.mirror.stop()


def make_world(root: Path) -> World:
    """Serve a mirror (400 packages, the test ImageBuilder), render it, write the config."""
    from tests.conftest import build_fixtures, make_build_world

    root.mkdir(parents=True, exist_ok=True)
    built = make_build_world(root, build_fixtures(root / "fixtures"))
    settings, mirror = built.settings, built.mirror
    assert isinstance(settings, Settings) and isinstance(mirror, MirrorServer)
    config = write_config(root / "asu-ci.yaml", settings.model_dump(mode="json", exclude_none=True))
    return World(root, mirror, settings, config)


def request_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": VERSION,
        "target": TARGET,
        "profile": PROFILE,
        "packages": ["luci"],
        "diff_packages": True,
        "client": "bench/1",
    }
    body.update(changes)
    return body


def asu_ci(config: Path, *args: str, timeout: float = 600.0) -> subprocess.CompletedProcess[str]:
    """``asu-ci --config CONFIG ARGS…`` as a process; raises with its output on failure."""
    argv = [sys.executable, "-m", "asu_ci", "--config", str(config), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}):\n{done.stderr}")
    return done


def build(world: World, body: dict[str, Any]) -> str:
    """Build ``body`` with ``asu-ci build``; returns its request hash."""
    path = world.root / f"request-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(body))
    out = asu_ci(world.config, "build", "--request", str(path)).stdout
    found = re.search(r"^build ([0-9a-f]{64}):", out, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"asu-ci build printed no hash:\n{out}")
    return found.group(1)


@dataclass(frozen=True)
class Load:
    """What one wrk run measured."""

    name: str
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: int
    bad_status: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        errors = f", {self.socket_errors} socket errors" if self.socket_errors else ""
        return (
            f"{self.name:<34} {self.rps:>9,.0f} req/s  p50 {self.p50_ms:6.2f} ms  "
            f"p99 {self.p99_ms:6.2f} ms  max {self.max_ms:7.2f} ms  "
            f"({self.requests:,} requests{errors})"
        )


def wrk(
    name: str,
    url: str,
    *,
    seconds: float,
    method: str = "GET",
    body: Path | None = None,
    connections: int = 64,
    threads: int = 2,
) -> Load:
    """One bounded wrk run (``seconds`` long, hard timeout on top) against 127.0.0.1."""
    assert url.startswith("http://127.0.0.1:"), url
    env = dict(os.environ, ASU_BENCH_METHOD=method, ASU_BENCH_BODY=str(body or ""))
    argv = [WRK, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s"]
    argv += ["-s", str(WRK_SCRIPT), url]
    done = subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=seconds + 60, check=True
    )
    found = re.search(r"^WRK_JSON (.*)$", done.stdout, re.MULTILINE)
    if found is None:
        raise RuntimeError(f"wrk printed no figures:\n{done.stdout}\n{done.stderr}")
    data = json.loads(found.group(1))
    return Load(
        name=name,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        socket_errors=sum(data[k] for k in ("connect", "read", "write", "timeout")),
        bad_status=data["status"],
    )


def hey_head(name: str, url: str, *, seconds: float, connections: int = 64) -> Load:
    """One bounded HEAD run with hey (``seconds`` long, hard timeout on top)."""
    assert url.startswith("http://127.0.0.1:"), url
    argv = [HEY, "-z", f"{seconds:g}s", "-c", str(connections), "-t", "5", "-m", "HEAD", url]
    out = subprocess.run(
        argv, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout

    def number(pattern: str) -> float:
        found = re.search(pattern, out, re.MULTILINE)
        if found is None:
            raise RuntimeError(f"hey printed no {pattern!r}:\n{out}")
        return float(found.group(1))

    statuses = {
        int(c): int(n) for c, n in re.findall(r"^\s+\[(\d+)\]\s+(\d+) responses", out, re.M)
    }
    errors = re.search(r"^Error distribution:\n((?:\s+\[\d+\].*\n?)*)", out, re.MULTILINE)
    socket_errors = sum(int(n) for n in re.findall(r"\[(\d+)\]", errors.group(1))) if errors else 0
    total = number(r"^\s+Total:\s+([\d.]+) secs")
    return Load(
        name=name,
        requests=sum(statuses.values()),
        seconds=total,
        p50_ms=number(r"^\s+50% in ([\d.]+) secs") * 1000,
        p99_ms=number(r"^\s+99% in ([\d.]+) secs") * 1000,
        max_ms=number(r"^\s+Slowest:\s+([\d.]+) secs") * 1000,
        socket_errors=socket_errors,
        bad_status=sum(n for code, n in statuses.items() if not 200 <= code < 400),
    )


def machine() -> str:
    """Cores, memory and CPU model: where the figures come from."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    return (
        f"{os.cpu_count()} cores, {mem_kib / 1024 / 1024:.0f} GiB, {model}, "
        f"Python {platform.python_version()}"
    )


def peak_rss_mib(pid: int) -> float:
    """Peak resident set size (``VmHWM``) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0

"""Retention of the local store: what expires, what stays, and a prune racing a request."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from asu_ci.api.app import create_app
from asu_ci.cli import app as cli
from asu_ci.config import Settings, load_settings
from asu_ci.dispatch.queue import Queue
from asu_ci.index.render import render_tree
from asu_ci.publish.retention import ASKED, FIRST_BOOT, KEEP, prune
from tests.conftest import BUILD_PROFILE, BUILD_TARGET, BUILD_VERSION, build_fixtures

DAY = 86400.0
NOW = time.time()  # the CLI prunes at the real time


def settings_in(home: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "public": home / "public",
        "data": home / "data",
        "upstream": str(home / "upstream"),
    }
    values.update(overrides)
    return load_settings(None, values, environ={})


def folder(settings: Settings, name: str) -> Path:
    path = settings.public_dir / "store" / (name * 64)
    path.mkdir(parents=True)
    (path / "openwrt-image.bin").write_bytes(b"\0" * 1000)
    return path


def age(path: Path, days: float) -> None:
    os.utime(path, (NOW - days * DAY, NOW - days * DAY))


def finished(settings: Settings, name: str, built_days: float, asked_days: float | None) -> Path:
    path = folder(settings, name)
    (path / "build.json").write_text('{"status": 200}')
    age(path / "build.json", built_days)
    if asked_days is not None:
        (path / ASKED).touch()
        age(path / ASKED, asked_days)
    return path


def failure(settings: Settings, name: str, days: float) -> Path:
    path = folder(settings, name)
    (path / "status.json").write_text(json.dumps({"status": 500, "failed_at": NOW - days * DAY}))
    return path


@pytest.fixture
def store(tmp_path: Path) -> tuple[Settings, dict[str, Path]]:
    settings = settings_in(tmp_path, **{"store.keep_days": 30, "store.keep_failed_days": 1})
    queue = Queue(settings.data_dir / "queue.sqlite3")
    paths = {
        "old": finished(settings, "a", built_days=40, asked_days=None),
        "old_asked_long_ago": finished(settings, "b", built_days=90, asked_days=31),
        "old_asked_lately": finished(settings, "c", built_days=90, asked_days=2),
        "new": finished(settings, "d", built_days=3, asked_days=None),
        "prebuilt": finished(settings, "e", built_days=400, asked_days=None),
        "failed_long_ago": failure(settings, "f", days=2),
        "failed_lately": failure(settings, "1", days=0.5),
        "in_flight": folder(settings, "2"),
    }
    (paths["prebuilt"] / KEEP).touch()
    (paths["in_flight"] / "status.json").write_text(json.dumps({"status": 202}))
    queue.add("2" * 64, {}, limit=10)
    for name in "abf":
        queue.add(name * 64, {}, limit=10)
        queue.finish(name * 64, ok=name != "f")
    queue.close()
    return settings, paths


def test_prune_removes_exactly_what_expired(store: tuple[Settings, dict[str, Path]]) -> None:
    settings, paths = store
    summary = prune(settings, now=NOW)
    gone = {key for key, path in paths.items() if not path.exists()}
    assert gone == {"old", "old_asked_long_ago", "failed_long_ago"}
    assert sorted(summary.removed) == sorted(paths[k].name for k in gone)
    assert summary.kept == len(paths) - len(gone)
    assert summary.bytes_freed >= 3 * 1000
    assert not [p for p in (settings.public_dir / "store").iterdir() if p.name.startswith(".")]
    queue = Queue(settings.data_dir / "queue.sqlite3")
    assert queue.get("a" * 64) is None and queue.get("f" * 64) is None
    assert queue.get("2" * 64) is not None


def test_dry_run_removes_nothing(store: tuple[Settings, dict[str, Path]]) -> None:
    settings, paths = store
    summary = prune(settings, now=NOW, dry_run=True)
    assert len(summary.removed) == 3
    assert all(path.exists() for path in paths.values())


def test_a_queued_request_is_never_pruned(store: tuple[Settings, dict[str, Path]]) -> None:
    """Even with an old failure in its folder, a request queued again stays."""
    settings, paths = store
    Queue(settings.data_dir / "queue.sqlite3").add("f" * 64, {}, limit=10)
    prune(settings, now=NOW)
    assert paths["failed_long_ago"].exists()


def test_a_killed_prune_leaves_nothing_behind(store: tuple[Settings, dict[str, Path]]) -> None:
    settings, _ = store
    leftover = settings.public_dir / "store" / f".pruned-{'9' * 64}-123"
    leftover.mkdir()
    (leftover / "x.bin").write_bytes(b"x")
    prune(settings, now=NOW)
    assert not leftover.exists()


def test_cli_prune(store: tuple[Settings, dict[str, Path]]) -> None:
    settings, paths = store
    args = ["prune", "--public", str(settings.public_dir), "--data", str(settings.data_dir)]
    env = {"ASU_CI_STORE__KEEP_DAYS": "0.0001"}  # everything built before now has expired
    listed = CliRunner().invoke(cli, [*args, "--dry-run"], env=env)
    assert listed.exit_code == 0, listed.output
    assert paths["new"].name in listed.stdout and paths["prebuilt"].name not in listed.stdout
    assert paths["new"].exists()
    done = CliRunner().invoke(cli, args, env=env)
    assert done.exit_code == 0, done.output
    assert "removed" in done.stdout
    assert not paths["new"].exists() and paths["prebuilt"].exists()


def test_a_pruned_build_asked_again_is_built_again(tmp_path: Path) -> None:
    """The endpoint keeps finished answers in memory; a pruned one is not answered from
    there, and the request is queued again."""
    build_fixtures(tmp_path / "upstream")
    settings = settings_in(tmp_path)
    render_tree(settings)
    body = {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": BUILD_PROFILE}
    app = create_app(settings, dispatch=False)
    with TestClient(app) as client:
        first = client.post("/api/v1/build", json=body)
        assert first.status_code == 202
        digest = first.json()["request_hash"]
        build = settings.public_dir / "store" / digest / "build.json"
        build.write_text(json.dumps({"status": 200, "request_hash": digest}))
        Queue(settings.data_dir / "queue.sqlite3").finish(digest, ok=True)
        asked = client.post("/api/v1/build", json=body)
        assert asked.status_code == 200
        marker = build.parent / ASKED
        assert marker.exists()
        for path in (build, marker):
            os.utime(path, (time.time() - 40 * DAY, time.time() - 40 * DAY))
        # as serve's prune loop does: the endpoint forgets what it pruned
        assert prune(settings, forget=app.state.service.finished.forget).removed == [digest]
        again = client.post("/api/v1/build", json=body)
        assert again.status_code == 202
        assert again.json()["request_hash"] == digest


def test_a_build_with_a_first_boot_script_expires_within_defaults_minutes(
    tmp_path: Path,
) -> None:
    """defaults often holds passwords: such a build goes store.defaults_minutes after it
    was built, however recently it was asked for and even when marked kept."""
    settings = settings_in(tmp_path, **{"store.defaults_minutes": 30})
    assert Settings().store.defaults_minutes == 30  # upstream ASU's half hour
    expired_secret = finished(settings, "a", built_days=31 / 1440, asked_days=0)
    (expired_secret / FIRST_BOOT).touch()
    kept_secret = finished(settings, "b", built_days=31 / 1440, asked_days=0)
    (kept_secret / FIRST_BOOT).touch()
    (kept_secret / KEEP).touch()
    fresh_secret = finished(settings, "c", built_days=29 / 1440, asked_days=None)
    (fresh_secret / FIRST_BOOT).touch()
    plain = finished(settings, "d", built_days=31 / 1440, asked_days=None)
    summary = prune(settings, now=NOW)  # the ages above count from NOW
    assert sorted(summary.removed) == ["a" * 64, "b" * 64]
    assert not expired_secret.exists() and not kept_secret.exists()
    assert fresh_secret.is_dir() and plain.is_dir()

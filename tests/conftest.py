"""Shared fixtures. The stand-ins themselves live in ``tests/support``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asu_ci.config import Settings
from asu_ci.index.catalog import Catalog
from asu_ci.index.render import render_tree
from tests.support.imagebuilder import UPSTREAM_FIXTURES
from tests.support.mirror import MirrorServer, build_mirror, serve


@pytest.fixture
def upstream_dir(tmp_path: Path) -> Path:
    """A private copy of the real upstream metadata that a test may change."""
    return Path(shutil.copytree(UPSTREAM_FIXTURES, tmp_path / "upstream"))


@pytest.fixture
def mirror(upstream_dir: Path) -> Iterator[MirrorServer]:
    """``upstream_dir`` served over HTTP on 127.0.0.1 (ETag and 304, a request log)."""
    with MirrorServer([upstream_dir]) as server:
        yield server


# --- build job: a rendered index over a local mirror with the test ImageBuilder -------
# (tests/integration/test_build.py, test_imagebuilder.py, test_prebuild.py)

BUILD_VERSION = "23.05.4"
BUILD_TARGET = "ath79/generic"
BUILD_PROFILE = "tplink_archer-c7-v5"
BUILD_PACKAGE_COUNT = 400


@dataclass
class BuildWorld:
    """A mirror on 127.0.0.1 (one target, signed, with the test ImageBuilder), its
    rendered index and settings whose data folder is shared by the session's builds."""

    mirror: MirrorServer
    fixtures: Path
    settings: Settings
    catalog: Catalog


def build_fixtures(dest: Path) -> Path:
    """The real 23.05.4 metadata cut down to ath79/generic: renders in a fraction of a second."""
    import json

    src = UPSTREAM_FIXTURES / "releases" / BUILD_VERSION
    out = dest / "releases" / BUILD_VERSION
    (out / "targets" / BUILD_TARGET).mkdir(parents=True)
    shutil.copyfile(UPSTREAM_FIXTURES / ".versions.json", dest / ".versions.json")
    arch = json.loads((src / ".targets.json").read_text())[BUILD_TARGET]
    (out / ".targets.json").write_text(json.dumps({BUILD_TARGET: arch}))
    overview = json.loads((src / ".overview.json").read_text())
    overview["profiles"] = [p for p in overview["profiles"] if p["target"] == BUILD_TARGET]
    (out / ".overview.json").write_text(json.dumps(overview))
    shutil.copyfile(
        src / "targets" / BUILD_TARGET / "profiles.json",
        out / "targets" / BUILD_TARGET / "profiles.json",
    )
    return dest


def make_build_world(
    tmp: Path, fixtures: Path, mirror: MirrorServer | None = None, **kwargs: Any
) -> BuildWorld:
    """Serve a new mirror (``kwargs`` go to ``build_mirror``) unless one is given, render it."""
    if mirror is None:
        kwargs.setdefault("package_count", BUILD_PACKAGE_COUNT)
        mirror = serve(build_mirror(tmp / "mirror", fixtures=fixtures, **kwargs))
    info = mirror.info
    assert info is not None
    settings = Settings.model_validate(
        {
            "upstream": mirror.url,
            "home": str(tmp / "home"),
            "branches": [
                {
                    "name": "23.05",
                    "signing_key": info.public_key,
                    "package_changes": [
                        {"source": "luci-app-oldname", "target": "luci", "revision": 20000}
                    ],
                }
            ],
            "server": {"repository_allow_list": ["127.0.0.1", "feeds.example.org"]},
            "build": {"timeout_seconds": 120},
        }
    )
    render_tree(settings)
    return BuildWorld(mirror, fixtures, settings, Catalog(settings.public_dir))


@pytest.fixture(scope="session")
def build_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuildWorld]:
    """The session's build world; its ImageBuilder is unpacked once for all tests."""
    tmp = tmp_path_factory.mktemp("build-world")
    world = make_build_world(tmp, build_fixtures(tmp / "fixtures"))
    try:
        yield world
    finally:
        world.mirror.stop()

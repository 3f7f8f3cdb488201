"""Shared fixtures. The stand-ins themselves live in ``tests/support``."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.imagebuilder import UPSTREAM_FIXTURES
from tests.support.mirror import MirrorServer


@pytest.fixture
def upstream_dir(tmp_path: Path) -> Path:
    """A private copy of the real upstream metadata that a test may change."""
    return Path(shutil.copytree(UPSTREAM_FIXTURES, tmp_path / "upstream"))


@pytest.fixture
def mirror(upstream_dir: Path) -> Iterator[MirrorServer]:
    """``upstream_dir`` served over HTTP on 127.0.0.1 (ETag and 304, a request log)."""
    with MirrorServer([upstream_dir]) as server:
        yield server

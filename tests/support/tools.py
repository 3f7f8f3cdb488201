"""System tools some tests drive (chromium, nginx, caddy): skip here, fail in CI.

``scripts/test`` installs every one of them, so under CI (``CI=true``) a
missing tool is a broken set-up step, not a reason to skip.
"""

from __future__ import annotations

import os

import pytest


def require(path: str, how: str) -> None:
    """Skip the test when ``path`` is not an executable; fail instead under CI."""
    if not os.access(path, os.X_OK):
        missing(f"{path} is missing: {how}")


def require_file(path: str, how: str) -> None:
    """Skip the test when ``path`` is not a file (a script a tool runs); fail instead under CI."""
    if not os.path.isfile(path):
        missing(f"{path} is missing: {how}")


def missing(message: str) -> None:
    """Skip the test for a missing tool; fail instead under CI."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message + " (scripts/test should have installed it)")
    pytest.skip(message)

"""Prebuild lists as GitHub Actions matrices: one job per (version, target).

A pure list transform for ``asu-ci matrix`` (``prebuild.yml`` builds its job
matrix with it). Only the fields that name a job are checked here; each job
validates its entries fully (:func:`asu_ci.build.prebuild.plan`) before building.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from asu_ci.errors import UsageError
from asu_ci.identity.request import PROFILE, TARGET, VERSION

#: A GitHub Actions matrix holds at most this many jobs.
MAX_MATRIX_JOBS = 256


def matrix(entries: Iterable[Any], source: str = "prebuild list") -> dict[str, Any]:
    """``{"include": [{version, target, profiles}]}``: one job per (version, target), sorted.

    Only the fields that name a job are checked here (the index is not needed);
    each job validates its entries fully before building.
    """
    checks = (("version", VERSION), ("target", TARGET), ("profile", PROFILE))
    groups: dict[tuple[str, str], list[str]] = {}
    for number, entry in enumerate(entries, 1):
        if not isinstance(entry, Mapping):
            raise UsageError(f"{source}: entry {number} is not a mapping of request fields")
        for key, pattern in checks:
            value = entry.get(key)
            if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
                raise UsageError(f"{source}: entry {number}: '{key}' is missing or not valid")
        profiles = groups.setdefault((entry["version"], entry["target"]), [])
        if entry["profile"] not in profiles:
            profiles.append(entry["profile"])
    if len(groups) > MAX_MATRIX_JOBS:
        raise UsageError(
            f"{source}: {len(groups)} (version, target) groups, more than the "
            f"{MAX_MATRIX_JOBS} jobs one GitHub Actions matrix may have; split the list"
        )
    include = [
        {"version": version, "target": target, "profiles": profiles}
        for (version, target), profiles in sorted(groups.items())
    ]
    return {"include": include}


def select(entries: Iterable[Any], version: str, target: str) -> list[Any]:
    """The entries of one matrix job, in list order."""
    return [
        e
        for e in entries
        if isinstance(e, Mapping) and e.get("version") == version and e.get("target") == target
    ]

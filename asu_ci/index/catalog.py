"""Read the rendered static index back: what validation and the endpoint consult.

Everything here comes from the public tree ``asu-ci render`` wrote, so the
endpoint knows no more than a static client does. Files are parsed once and
re-read only when their mtime or size changes (a new render).

This is on the endpoint's hot path (every POST validates through it), so paths
are plain strings, joined from parts that their patterns already checked, and
a file's stat is trusted for :data:`RECHECK_SECONDS`: a busy endpoint stats
each index file a few times a second instead of several times per request, and
sees a new render within that time.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asu_ci.identity.request import PROFILE, TARGET, VERSION

_VERSION = re.compile(VERSION)
_TARGET = re.compile(TARGET)
_PROFILE = re.compile(PROFILE)

#: Seconds a file's stat (mtime, size) is trusted before it is taken again.
RECHECK_SECONDS = 1.0
#: Package name sets kept, one per (version, target) asked for recently.
NAME_SETS = 32


class Catalog:
    """The rendered index under ``public``; implements :class:`~asu_ci.identity.validate.Index`."""

    def __init__(self, public: Path, recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.public = public
        self.recheck_seconds = recheck_seconds
        self._public = str(public)
        self._json = os.path.join(self._public, "json", "v1")
        #: path -> (checked at, mtime_ns, size, parsed JSON)
        self._files: dict[str, tuple[float, int, int, Any]] = {}
        #: (version, target) -> (the parsed files the set was made of, the set)
        self._names: OrderedDict[tuple[str, str], tuple[tuple[Any, ...], frozenset[str] | None]] = (
            OrderedDict()
        )
        #: (the parsed overview, version -> its branch), remade when the overview changes
        self._by_version: tuple[Any, dict[str, Mapping[str, Any]]] | None = None
        self._lock = threading.Lock()

    def _load(self, path: str) -> Any:
        """Parsed JSON of ``path`` or None when it does not exist."""
        now = time.monotonic()
        cached = self._files.get(path)
        if cached is not None and now - cached[0] < self.recheck_seconds:
            return cached[3]
        try:
            st = os.stat(path)
        except OSError:
            return None
        if cached is not None and cached[1] == st.st_mtime_ns and cached[2] == st.st_size:
            data = cached[3]
        else:
            try:
                with open(path, "rb") as fh:
                    data = json.loads(fh.read())
            except (OSError, ValueError):
                return None
        with self._lock:
            if len(self._files) > 4096:
                self._files.clear()
            self._files[path] = (now, st.st_mtime_ns, st.st_size, data)
        return data

    def rendered(self) -> bool:
        return os.path.isfile(f"{self._json}/overview.json")

    def overview(self) -> dict[str, Any]:
        data = self._load(f"{self._json}/overview.json")
        return data if isinstance(data, dict) else {"latest": [], "branches": {}}

    def branch_of(self, version: str) -> Mapping[str, Any] | None:
        """The overview's branch that lists ``version`` (the first, as listed)."""
        overview = self.overview()
        made = self._by_version
        if made is None or made[0] is not overview:
            by_version: dict[str, Mapping[str, Any]] = {}
            for branch in overview.get("branches", {}).values():
                for listed in branch.get("versions", []):
                    by_version.setdefault(str(listed), branch)
            made = self._by_version = (overview, by_version)
        return made[1].get(version)

    def path_of(self, version: str) -> str | None:
        """``releases/23.05.4`` or ``snapshots``: where the version lives."""
        if not _VERSION.match(version):
            return None
        branch = self.branch_of(version)
        if branch is None:
            return None
        return str(branch["path"]).replace("{version}", version)

    def has_version(self, version: str) -> bool:
        return self.path_of(version) is not None

    def targets(self, version: str) -> Mapping[str, str]:
        path = self.path_of(version)
        if path is None:
            return {}
        data = self._load(f"{self._public}/{path}/.targets.json")
        return data if isinstance(data, dict) else {}

    def _target_dir(self, version: str, target: str) -> str | None:
        path = self.path_of(version)
        if path is None or not _TARGET.match(target) or target not in self.targets(version):
            return None
        return f"{self._json}/{path}/targets/{target}"

    def profile(self, version: str, target: str, name: str) -> Mapping[str, Any] | None:
        """The device file for a profile id or any of its board names."""
        folder = self._target_dir(version, target)
        if folder is None or not _PROFILE.match(name):
            return None
        data = self._load(f"{folder}/{name.replace(',', '_')}.json")
        return data if isinstance(data, dict) and "id" in data else None

    def _package_files(self, version: str, target: str) -> tuple[Any, ...] | None:
        """The target's index and names sidecar, then its architecture's (parsed, or None)."""
        folder = self._target_dir(version, target)
        path = self.path_of(version)
        if folder is None or path is None:
            return None
        target_index = self._load(f"{folder}/index.json") or {}
        arch = target_index.get("architecture") or self.targets(version).get(target)
        feeds = f"{self._json}/{path}/packages/{arch}"
        return (
            target_index,
            self._load(f"{folder}/names.json"),
            self._load(f"{feeds}-index.json"),
            self._load(f"{feeds}-names.json"),
        )

    def package_names(self, version: str, target: str) -> frozenset[str] | None:
        """Every name a request may use for the target, or None when upstream lists none.

        The real names of the target's index (its packages and kernel-module
        feeds) and of its architecture's index, plus what the ``names.json``
        sidecars add: ABI-suffixed full names and provided names.
        """
        files = self._package_files(version, target)
        if files is None:
            return None
        key = (version, target)
        made = self._names.get(key)
        if made is not None and all(a is b for a, b in zip(made[0], files, strict=True)):
            return made[1]
        target_index, target_names, feeds, feed_names = files
        names = set(target_index.get("packages", {}))
        if isinstance(feeds, dict):
            names.update(feeds)
        names.update(self._aliases(target_names, feed_names))
        found = frozenset(names) if names else None
        with self._lock:
            self._names[key] = (files, found)
            self._names.move_to_end(key)
            if len(self._names) > NAME_SETS:
                self._names.popitem(last=False)
        return found

    def aliases(self, version: str, target: str) -> dict[str, list[str]]:
        """Each accepted name that is no real package → the real packages that satisfy it.

        An ABI-suffixed name maps to its one real name, a provided name to its
        providers (sorted). What the post-build check needs to match a manifest.
        """
        files = self._package_files(version, target)
        return {} if files is None else self._aliases(files[1], files[3])

    @staticmethod
    def _aliases(*sidecars: Any) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for sidecar in sidecars:
            if not isinstance(sidecar, dict):
                continue
            for full, real in (sidecar.get("abi") or {}).items():
                found.setdefault(full, [str(real)])
            for virtual, providers in (sidecar.get("provides") or {}).items():
                merged = set(found.get(virtual, ())) | {str(p) for p in providers}
                found[virtual] = sorted(merged)
        return found

    def package_changes(self, version: str) -> list[Mapping[str, Any]]:
        branch = self.branch_of(version)
        return list(branch.get("package_changes", [])) if branch else []

    def revision(self, version: str, target: str) -> str | None:
        """The ImageBuilder revision (``version_code``) of a target."""
        path = self.path_of(version)
        if path is None or self._target_dir(version, target) is None:
            return None
        data = self._load(f"{self._public}/{path}/targets/{target}/profiles.json")
        return str(data["version_code"]) if isinstance(data, dict) else None

    def target_profiles(self, version: str, target: str) -> Mapping[str, Any] | None:
        """The download server's ``profiles.json`` of the target (as rendered)."""
        path = self.path_of(version)
        if path is None or self._target_dir(version, target) is None:
            return None
        data = self._load(f"{self._public}/{path}/targets/{target}/profiles.json")
        return data if isinstance(data, dict) else None

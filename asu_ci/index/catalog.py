"""Read the rendered static index back: what validation and the endpoint consult.

Everything here comes from the public tree ``asu-ci render`` wrote, so the
endpoint knows no more than a static client does. Files are parsed once and
re-read only when their mtime or size changes (a new render).
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from asu_ci.identity.request import PROFILE, TARGET, VERSION

_VERSION = re.compile(VERSION)
_TARGET = re.compile(TARGET)
_PROFILE = re.compile(PROFILE)


class Catalog:
    """The rendered index under ``public``; implements :class:`~asu_ci.identity.validate.Index`."""

    def __init__(self, public: Path) -> None:
        self.public = public
        self.json_root = public / "json" / "v1"
        self._files: dict[Path, tuple[int, int, Any]] = {}
        self._lock = threading.Lock()

    def _load(self, path: Path) -> Any:
        """Parsed JSON of ``path`` or None when it does not exist."""
        try:
            st = path.stat()
        except OSError:
            return None
        cached = self._files.get(path)
        if cached is not None and cached[0] == st.st_mtime_ns and cached[1] == st.st_size:
            return cached[2]
        try:
            data = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        with self._lock:
            if len(self._files) > 4096:
                self._files.clear()
            self._files[path] = (st.st_mtime_ns, st.st_size, data)
        return data

    def rendered(self) -> bool:
        return (self.json_root / "overview.json").is_file()

    def overview(self) -> dict[str, Any]:
        data = self._load(self.json_root / "overview.json")
        return data if isinstance(data, dict) else {"latest": [], "branches": {}}

    def branch_of(self, version: str) -> Mapping[str, Any] | None:
        for branch in self.overview().get("branches", {}).values():
            if version in branch.get("versions", []):
                return branch  # type: ignore[no-any-return]
        return None

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
        data = self._load(self.public / path / ".targets.json")
        return data if isinstance(data, dict) else {}

    def _target_dir(self, version: str, target: str) -> Path | None:
        path = self.path_of(version)
        if path is None or not _TARGET.match(target) or target not in self.targets(version):
            return None
        return self.json_root / path / "targets" / target

    def profile(self, version: str, target: str, name: str) -> Mapping[str, Any] | None:
        """The device file for a profile id or any of its board names."""
        folder = self._target_dir(version, target)
        if folder is None or not _PROFILE.match(name):
            return None
        data = self._load(folder / f"{name.replace(',', '_')}.json")
        return data if isinstance(data, dict) and "id" in data else None

    def package_names(self, version: str, target: str) -> frozenset[str] | None:
        """Every package the target may install, or None when upstream lists none."""
        folder = self._target_dir(version, target)
        path = self.path_of(version)
        if folder is None or path is None:
            return None
        target_index = self._load(folder / "index.json") or {}
        arch = target_index.get("architecture") or self.targets(version).get(target)
        feeds = self._load(self.json_root / path / "packages" / f"{arch}-index.json")
        names = set(target_index.get("packages", {}))
        if isinstance(feeds, dict):
            names.update(feeds)
        return frozenset(names) if names else None

    def package_changes(self, version: str) -> list[Mapping[str, Any]]:
        branch = self.branch_of(version)
        return list(branch.get("package_changes", [])) if branch else []

    def revision(self, version: str, target: str) -> str | None:
        """The ImageBuilder revision (``version_code``) of a target."""
        path = self.path_of(version)
        if path is None or self._target_dir(version, target) is None:
            return None
        data = self._load(self.public / path / "targets" / target / "profiles.json")
        return str(data["version_code"]) if isinstance(data, dict) else None

    def target_profiles(self, version: str, target: str) -> Mapping[str, Any] | None:
        """The download server's ``profiles.json`` of the target (as rendered)."""
        path = self.path_of(version)
        if path is None or self._target_dir(version, target) is None:
            return None
        data = self._load(self.public / path / "targets" / target / "profiles.json")
        return data if isinstance(data, dict) else None

"""The local static store: ``<public>/store/<hash>/`` served by any static host."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

from asu_ci import fsutil
from asu_ci.identity.hashing import HASH_PATTERN
from asu_ci.protocol import Built, Failed, Progress

_HASH = re.compile(HASH_PATTERN)


class LocalStore:
    """Implements :class:`~asu_ci.publish.base.Store` on a folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, request_hash: str) -> Path:
        if not _HASH.match(request_hash):
            raise ValueError("not a request hash")
        return self.root / request_hash

    def _read(self, request_hash: str, name: str) -> dict[str, Any] | None:
        try:
            data = fsutil.read_json(self.folder(request_hash) / name)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def status(self, request_hash: str) -> dict[str, Any] | None:
        return self._read(request_hash, "status.json")

    def build(self, request_hash: str) -> dict[str, Any] | None:
        return self._read(request_hash, "build.json")

    def write_status(self, request_hash: str, body: Progress | Failed | Built) -> None:
        fsutil.write_json(self.folder(request_hash) / "status.json", body.json_body())

    def publish(self, request_hash: str, files: Path, build: dict[str, Any]) -> None:
        final = self.folder(request_hash)
        fsutil.move_into(files, final)
        fsutil.write_json(final / "build.json", build)
        fsutil.write_json(final / "status.json", build)

    def staging(self, request_hash: str) -> Path:
        """A private folder on the same filesystem to collect a build's files in.

        One request is collected by one writer at a time (the queue hands a
        hash to one worker, the GitHub follower takes one run at a time), so
        any other staging folder of the hash was left by a process that died:
        it is removed here.
        """
        staging = fsutil.staging_dir(self.folder(request_hash))
        for stale in staging.parent.glob(f".{request_hash}.*.staging"):
            if stale != staging:
                shutil.rmtree(stale, ignore_errors=True)
        return staging

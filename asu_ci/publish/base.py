"""The small Protocol every store backend implements."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from asu_ci.protocol import Built, Failed, Progress


class Store(Protocol):
    """Where a request's state and, once built, its images live.

    ``status.json`` is the truth while a request is in flight; ``build.json``
    appears only after a successful build, after every file it names.
    """

    def status(self, request_hash: str) -> dict[str, Any] | None:
        """The current ``status.json`` body, or None for an unknown hash."""
        ...

    def build(self, request_hash: str) -> dict[str, Any] | None:
        """The immutable ``build.json`` body of a finished build, or None."""
        ...

    def write_status(self, request_hash: str, body: Progress | Failed | Built) -> None:
        """Replace ``status.json`` (queued, building, failed)."""
        ...

    def publish(self, request_hash: str, files: Path, build: dict[str, Any]) -> None:
        """Publish every file of the folder ``files``, then ``build.json``, then the 200 status."""
        ...

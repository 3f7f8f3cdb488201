"""Keep the index current while ``asu-ci serve`` runs: a re-render every few minutes.

A published point release never changes, so a cycle reads again only what
moves: ``.versions.json`` and the snapshot trees (``SNAPSHOT``, every branch
snapshot such as ``24.10-SNAPSHOT``, and every version of a snapshot branch).
The other releases keep what the last render made of them, without a
request, unless ``.versions.json`` changed (a new point release, a new
upcoming version): then every release is asked for again, each
file with a conditional GET, so what did not change costs a 304 and no body.
See :func:`asu_ci.index.render.render_tree` (``only``).

The figures of the last cycle (when, how long, requests, bytes, the error if
it failed) are what ``/api/v1/stats`` shows under ``index``. A failed cycle
leaves the tree as it was; the next one tries again.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

from asu_ci.config import Settings
from asu_ci.errors import AsuCiError
from asu_ci.index.catalog import Catalog
from asu_ci.index.render import RenderSummary, render_tree
from asu_ci.upstream.metadata import SNAPSHOT_VERSION, is_moving

log = logging.getLogger(__name__)


def moving_versions(catalog: Catalog) -> set[str]:
    """The served versions that move upstream: SNAPSHOT, the branch snapshots
    (``24.10-SNAPSHOT``) and every version of a snapshot branch.

    A version the last render did not serve (a branch snapshot missing upstream
    then) is asked for in every cycle anyway (see ``render_tree``'s ``only``).
    """
    moving = {SNAPSHOT_VERSION}
    for branch in catalog.overview().get("branches", {}).values():
        if isinstance(branch, dict):
            versions = [str(v) for v in branch.get("versions", [])]
            moving.update(v for v in versions if branch.get("snapshot") or is_moving(v))
    return moving


class Refresher:
    """A background thread that re-renders the index every ``index.refresh_seconds``."""

    def __init__(self, settings: Settings, *, first_in: float = 0.0) -> None:
        """``first_in``: seconds from :meth:`start` to the first cycle (after a fresh
        render at start, a whole interval)."""
        self.settings = settings
        self.interval = settings.index.refresh_seconds
        self.first_in = first_in
        self._catalog = Catalog(settings.public_dir)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._cycles = 0
        self._last: RenderSummary | None = None
        self._last_at: float | None = None
        self._next_at: float | None = None
        self._error = ""

    def start(self) -> None:
        """Start the thread, its first cycle ``first_in`` seconds from now; not when disabled.

        ``index.refresh_seconds: 0`` disables re-rendering.
        """
        if self.interval <= 0 or self._thread is not None:
            return
        self._stop.clear()
        with self._lock:
            self._next_at = time.time() + self.first_in
        self._thread = threading.Thread(
            target=self._loop, args=(self.first_in,), name="index-refresh", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop after the cycle under way, if any."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def cycle(self) -> RenderSummary | None:
        """One re-render of what moves (everything when ``.versions.json`` changed).

        Returns its summary, or None when it failed (the error is logged and kept
        for :meth:`status`).
        """
        started = time.time()
        try:
            summary = render_tree(self.settings, only=moving_versions(self._catalog))
        except Exception as exc:
            if isinstance(exc, AsuCiError):
                log.warning("background re-render failed: %s", exc)
            else:
                log.exception("background re-render failed")
            with self._lock:
                self._cycles += 1
                self._last_at, self._error = started, str(exc)
            return None
        log.info("background re-render: %s", summary.line())
        with self._lock:
            self._cycles += 1
            self._last, self._last_at, self._error = summary, started, ""
        return summary

    def status(self) -> dict[str, Any]:
        """What ``/api/v1/stats`` shows under ``index``."""
        with self._lock:
            last, last_at, next_at = self._last, self._last_at, self._next_at
            return {
                "refresh_seconds": self.interval,
                "renders_since_start": self._cycles,
                "last_render_at": _iso(last_at),
                "next_render_at": _iso(next_at) if self._thread is not None else None,
                "last_render_seconds": round(last.seconds, 3) if last else None,
                "last_render_requests": last.requests if last else None,
                "last_render_bytes": last.bytes_downloaded if last else None,
                "last_render_files_written": last.files_written if last else None,
                "last_error": self._error,
            }

    def _loop(self, first_in: float) -> None:
        if self._stop.wait(first_in):
            return
        while not self._stop.is_set():
            self.cycle()
            with self._lock:
                self._next_at = time.time() + self.interval
            self._stop.wait(self.interval)


def _iso(stamp: float | None) -> str | None:
    if stamp is None:
        return None
    return datetime.fromtimestamp(stamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

"""Retention of the local store: on-demand builds expire, prebuilt ones stay.

What a store folder ``store/<hash>/`` holds decides its fate:

- ``.defaults`` (written by the build job): the image holds a first-boot
  script, which often carries passwords; it expires ``store.defaults_minutes``
  after it was built, whatever else holds (``.keep``, a recent ask);
- ``.keep`` (written by ``asu-ci prebuild``): kept for good;
- a request in the queue (queued or running) or a 202 ``status.json``: in flight, kept;
- ``build.json``: a finished build. It expires ``store.keep_days`` after it was
  last asked for. The endpoint touches ``.asked`` on every POST that hits it,
  so the last ask is the newer of ``.asked`` and ``build.json``;
- a 500 ``status.json``: a failure, expiring ``store.keep_failed_days`` after it
  failed (it is retried on request long before that anyway).

Removal is atomic: the folder is renamed to a hidden name (hidden names are
never served), checked once more, and only then deleted. A POST that touched
``.asked`` just before the rename is seen there and the folder is put back; one
that comes just after finds no ``.asked`` to touch and is answered as a new
request. A poll that has a file open keeps reading it (the inode lives on).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from asu_ci.config import Settings
from asu_ci.dispatch.queue import Queue
from asu_ci.identity.hashing import is_request_hash
from asu_ci.protocol import Failed, read_status
from asu_ci.publish.local import LocalStore

log = logging.getLogger(__name__)

KEEP = ".keep"
#: Marks a build whose image holds a first-boot script (``defaults``).
FIRST_BOOT = ".defaults"
ASKED = ".asked"
DAY = 86400.0


@dataclass
class PruneSummary:
    removed: list[str] = field(default_factory=list)
    kept: int = 0
    bytes_freed: int = 0

    def line(self) -> str:
        return (
            f"removed {len(self.removed)} expired build folder(s), "
            f"{self.bytes_freed / 1e6:.1f} MB freed; {self.kept} kept"
        )


def mark_asked(store: LocalStore, request_hash: str) -> bool:
    """Record that a finished build was asked for now. False when its folder is gone
    (pruned a moment ago): the caller then treats the request as new."""
    folder = store.folder(request_hash)
    try:
        os.utime(folder / ASKED)
    except FileNotFoundError:
        if not folder.is_dir():
            return False
        try:
            (folder / ASKED).touch()
        except FileNotFoundError:
            return False
    return True


def mark_kept(store: LocalStore, request_hash: str) -> None:
    """Keep this build for good (a prebuilt profile)."""
    folder = store.folder(request_hash)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / KEEP).touch()


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (links not followed)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def expired(folder: Path, store: LocalStore, settings: Settings, now: float) -> bool:
    """Whether the store folder has expired (see the module docstring)."""
    built = _mtime(folder / "build.json")
    if built is not None and (folder / FIRST_BOOT).exists():
        return now - built >= settings.store.defaults_minutes * 60
    if (folder / KEEP).exists():
        return False
    if built is not None:
        asked = max(built, _mtime(folder / ASKED) or 0.0)
        return now - asked >= settings.store.keep_days * DAY
    status = read_status(store.status(folder.name))
    if not isinstance(status, Failed):
        return False
    when = status.failed_at if status.failed_at is not None else _mtime(folder / "status.json")
    return when is not None and now - when >= settings.store.keep_failed_days * DAY


def prune(
    settings: Settings,
    *,
    now: float | None = None,
    forget: Callable[[str], None] | None = None,
    dry_run: bool = False,
) -> PruneSummary:
    """Remove the expired folders of ``<public>/store``; ``forget(hash)`` is called for
    each (the endpoint drops it from its memory). ``dry_run`` only lists them."""
    now = time.time() if now is None else now
    store = LocalStore(settings.public_dir / "store")
    queue = Queue(settings.data_dir / "queue.sqlite3")
    summary = PruneSummary()
    try:
        entries = sorted(store.root.iterdir()) if store.root.is_dir() else []
        for folder in entries:
            name = folder.name
            if name.startswith(".pruned-") and not dry_run:  # left by a killed prune
                shutil.rmtree(folder, ignore_errors=True)
                continue
            if not is_request_hash(name) or not folder.is_dir():
                continue
            row = queue.get(name)
            if (row is not None and row.state in ("queued", "running")) or not expired(
                folder, store, settings, now
            ):
                summary.kept += 1
                continue
            freed = _size(folder) if dry_run else _remove(folder, store, settings, now)
            if freed is None:
                summary.kept += 1
                continue
            if not dry_run:
                queue.forget(name)
                if forget is not None:
                    forget(name)
            summary.removed.append(name)
            summary.bytes_freed += freed
    finally:
        queue.close()
    if summary.removed:
        log.info("prune: %s", summary.line())
    return summary


def _remove(folder: Path, store: LocalStore, settings: Settings, now: float) -> int | None:
    """Rename out of sight, check again, delete; the bytes freed, or None when kept."""
    trash = folder.with_name(f".pruned-{folder.name}-{os.getpid()}")
    try:
        folder.rename(trash)
    except OSError:
        return None
    asked = _mtime(trash / ASKED)
    first_boot = (trash / FIRST_BOOT).exists()
    if not first_boot and asked is not None and now - asked < settings.store.keep_days * DAY:
        try:
            trash.rename(folder)
        except OSError:  # a new request made the folder meanwhile: the old copy goes
            pass
        else:
            return None
    size = _size(trash)
    shutil.rmtree(trash, ignore_errors=True)
    return size


class PruneLoop:
    """``prune`` every ``store.prune_interval_minutes`` in a background thread (serve)."""

    def __init__(self, settings: Settings, forget: Callable[[str], None]) -> None:
        self.settings = settings
        self.forget = forget
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.settings.store.prune_interval_minutes <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="prune", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        store = self.settings.store
        interval = min(store.prune_interval_minutes, store.defaults_minutes) * 60
        while not self._stop.wait(interval):
            try:
                prune(self.settings, forget=self.forget)
            except OSError as exc:  # a full or read-only disk must not end the service
                log.warning("prune failed: %s", exc)

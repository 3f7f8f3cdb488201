"""The embedded backend: a bounded pool of workers on this machine.

Each build runs as its own ``asu-ci build`` process — the same code a GitHub
Actions job runs — so a crashing build cannot take the endpoint down, and a
build outlives a killed endpoint: the build job holds a lock per hash, so the
request picked up again after a restart waits for that orphan and then finds
its result instead of building twice.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path

from asu_ci import fsutil
from asu_ci.config import Settings
from asu_ci.dispatch.base import log_outcome, recover
from asu_ci.dispatch.queue import Queue, Row
from asu_ci.errors import AsuCiError, BuildError
from asu_ci.proc import run, tail
from asu_ci.protocol import Failed, read_status
from asu_ci.publish.local import LocalStore

log = logging.getLogger(__name__)

#: Grace on top of the build timeout before the worker gives up on its child.
PROCESS_GRACE_SECONDS = 600.0


def write_effective_config(settings: Settings) -> Path:
    """The settings this process runs with, as a file a child ``asu-ci`` can read."""
    data = settings.model_dump(mode="json", exclude_none=True)
    data["public"] = str(settings.public_dir.resolve())
    data["data"] = str(settings.data_dir.resolve())
    data["home"] = str(settings.home.resolve())
    path = settings.data_dir / "effective-config.yaml"
    fsutil.write_json(path, data)
    return path


class LocalPool:
    """Implements :class:`~asu_ci.dispatch.base.Dispatcher` with worker threads."""

    def __init__(self, settings: Settings, queue: Queue, store: LocalStore) -> None:
        self.settings = settings
        self.queue = queue
        self.store = store
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._config: Path | None = None
        self.jobs = settings.data_dir / "jobs"

    def start(self) -> None:
        self.jobs.mkdir(parents=True, exist_ok=True)
        self._config = write_effective_config(self.settings)
        recover(
            self.queue, self.store, "The build stopped its builder several times and was given up"
        )
        for i in range(self.settings.worker_count):
            thread = threading.Thread(target=self._work, name=f"asu-ci-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Workers block on the queue's own condition; nothing to do here."""

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)

    def _work(self) -> None:
        while not self._stop.is_set():
            row = self.queue.claim(timeout=1.0)
            if row is None:
                continue
            try:
                self._build(row)
            except Exception:  # a worker must survive anything one build does
                log.exception("worker failed on %s", row.hash)
                self._give_up(row.hash, BuildError("The builder failed unexpectedly"))

    def _build(self, row: Row) -> None:
        assert self._config is not None
        job = self.jobs / f"{row.hash}.json"
        fsutil.write_json(job, row.request)
        argv = [
            sys.executable,
            "-m",
            "asu_ci",
            "--config",
            str(self._config.resolve()),
            "build",
            "--request",
            str(job.resolve()),
        ]
        started = time.monotonic()
        try:
            result = run(argv, timeout=self.settings.build.timeout_seconds + PROCESS_GRACE_SECONDS)
        except AsuCiError as exc:
            error = exc if isinstance(exc, BuildError) else BuildError(exc.message)
            self._give_up(row.hash, error)
            log_outcome(row.hash, row.request, time.monotonic() - started, error.message)
            return
        finally:
            job.unlink(missing_ok=True)
        seconds = time.monotonic() - started
        if self.store.build(row.hash) is not None:
            log_outcome(row.hash, row.request, seconds, None)
            self.queue.finish(row.hash, ok=True)
            return
        status = read_status(self.store.status(row.hash))
        if isinstance(status, Failed):
            log_outcome(row.hash, row.request, seconds, status.detail)
            self.queue.finish(row.hash, ok=False, detail=status.detail)
            return
        log_outcome(row.hash, row.request, seconds, f"no result (exit code {result.returncode})")
        self._give_up(
            row.hash,
            BuildError(
                f"The build process ended without a result (exit code {result.returncode})",
                stdout=tail(result.stdout),
                stderr=tail(result.stderr),
            ),
        )

    def _give_up(self, request_hash: str, error: BuildError) -> None:
        self.store.write_status(request_hash, Failed.of(request_hash, error))
        self.queue.finish(request_hash, ok=False, detail=error.message)

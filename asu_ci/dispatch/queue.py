"""The durable queue/run table: SQLite in the data directory.

A request answered with 202 is a row here before the answer leaves, so a
crash loses nothing: on start, rows left ``running`` by a dead process go back
to ``queued`` (or end as failed after too many attempts). The hash is the
primary key, so identical concurrent submissions make exactly one row.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    hash TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    backend_ref TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS requests_state_seq ON requests (state, seq);
"""

#: A request that crashed its builder this often ends as failed instead of looping.
MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class Row:
    hash: str
    request: dict[str, Any]
    state: str
    attempts: int
    backend_ref: str | None


class Queue:
    """One SQLite file; safe to use from many threads of one process and from several processes."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._local = threading.local()
        self._wake = threading.Condition()
        self._db().executescript(SCHEMA)

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            self._local.db = db
        return db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def add(self, request_hash: str, request: dict[str, Any], limit: int) -> bool | None:
        """Queue a request. True: new row; False: already known; None: the queue is full."""
        with self._tx() as db:
            row = db.execute(
                "SELECT state FROM requests WHERE hash = ?", (request_hash,)
            ).fetchone()
            if row is not None and row[0] in ("queued", "running"):
                return False
            pending = db.execute(
                "SELECT COUNT(*) FROM requests WHERE state IN ('queued', 'running')"
            ).fetchone()[0]
            if pending >= limit:
                return None
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM requests").fetchone()[0]
            db.execute(
                "INSERT INTO requests (hash, request, state, seq, created_at) "
                "VALUES (?, ?, 'queued', ?, ?) "
                "ON CONFLICT (hash) DO UPDATE SET state = 'queued', seq = excluded.seq, "
                "attempts = 0, detail = NULL, started_at = NULL, finished_at = NULL",
                (request_hash, json.dumps(request, sort_keys=True), seq, time.time()),
            )
        with self._wake:
            self._wake.notify_all()
        return True

    def claim(self, timeout: float) -> Row | None:
        """Take the oldest queued request (waiting up to ``timeout`` s for one)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._tx() as db:
                found = db.execute(
                    "SELECT hash, request, attempts, backend_ref FROM requests "
                    "WHERE state = 'queued' ORDER BY seq LIMIT 1"
                ).fetchone()
                if found is not None:
                    db.execute(
                        "UPDATE requests SET state = 'running', started_at = ?, "
                        "attempts = attempts + 1 WHERE hash = ?",
                        (time.time(), found[0]),
                    )
                    return Row(found[0], json.loads(found[1]), "running", found[2] + 1, found[3])
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            with self._wake:
                self._wake.wait(min(left, 1.0))

    def finish(self, request_hash: str, ok: bool, detail: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE requests SET state = ?, finished_at = ?, detail = ? WHERE hash = ?",
                ("done" if ok else "failed", time.time(), detail, request_hash),
            )

    def set_backend_ref(self, request_hash: str, ref: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE requests SET backend_ref = ? WHERE hash = ?", (ref, request_hash))

    def recover(self, max_attempts: int | None = MAX_ATTEMPTS) -> tuple[list[str], list[str]]:
        """After a crash: running rows go back to the queue, or fail after ``max_attempts``.

        ``None``: never give up (a backend whose builds outlive the endpoint and are
        followed again, not restarted). Returns (requeued hashes, failed hashes).
        """
        limit = max_attempts if max_attempts is not None else float("inf")
        with self._tx() as db:
            rows = db.execute(
                "SELECT hash, attempts FROM requests WHERE state = 'running'"
            ).fetchall()
            requeued = [h for h, attempts in rows if attempts < limit]
            failed = [h for h, attempts in rows if attempts >= limit]
            db.executemany(
                "UPDATE requests SET state = 'queued' WHERE hash = ?", [(h,) for h in requeued]
            )
            db.executemany(
                "UPDATE requests SET state = 'failed', finished_at = ?, detail = ? WHERE hash = ?",
                [(time.time(), "the build crashed the builder repeatedly", h) for h in failed],
            )
        return requeued, failed

    def get(self, request_hash: str) -> Row | None:
        found = (
            self._db()
            .execute(
                "SELECT hash, request, state, attempts, backend_ref FROM requests WHERE hash = ?",
                (request_hash,),
            )
            .fetchone()
        )
        if found is None:
            return None
        return Row(found[0], json.loads(found[1]), found[2], found[3], found[4])

    def forget(self, request_hash: str) -> None:
        """Drop a finished or failed request's row (its store folder was pruned)."""
        with self._tx() as db:
            db.execute(
                "DELETE FROM requests WHERE hash = ? AND state IN ('done', 'failed')",
                (request_hash,),
            )

    def position(self, request_hash: str) -> int | None:
        """How many queued requests are ahead of this one (None unless it is queued)."""
        found = (
            self._db()
            .execute(
                "SELECT (SELECT COUNT(*) FROM requests AS r "
                "WHERE r.state = 'queued' AND r.seq < me.seq) "
                "FROM requests AS me WHERE me.hash = ? AND me.state = 'queued'",
                (request_hash,),
            )
            .fetchone()
        )
        return None if found is None else int(found[0])

    def counts(self) -> dict[str, int]:
        rows = self._db().execute("SELECT state, COUNT(*) FROM requests GROUP BY state").fetchall()
        counts = {"queued": 0, "running": 0, "done": 0, "failed": 0}
        counts.update({state: n for state, n in rows})
        return counts

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

"""The durable queue: one row per hash, order, positions, and recovery after a crash."""

from __future__ import annotations

from pathlib import Path

from asu_ci.dispatch.queue import MAX_ATTEMPTS, Queue

A, B, C = "a" * 64, "b" * 64, "c" * 64


def test_one_row_per_hash_in_order_with_positions(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite3")
    assert queue.add(A, {"n": 1}, limit=10) is True
    assert queue.add(A, {"n": 1}, limit=10) is False
    assert queue.add(B, {"n": 2}, limit=10) is True
    assert (queue.position(A), queue.position(B), queue.position(C)) == (0, 1, None)
    claimed = queue.claim(timeout=0)
    assert claimed is not None and claimed.hash == A and claimed.request == {"n": 1}
    assert queue.position(A) is None and queue.position(B) == 0
    queue.finish(A, ok=True)
    assert queue.counts() == {"queued": 1, "running": 0, "done": 1, "failed": 0}


def test_a_full_queue_refuses_new_rows_but_not_known_ones(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite3")
    assert queue.add(A, {}, limit=1) is True
    assert queue.add(A, {}, limit=1) is False
    assert queue.add(B, {}, limit=1) is None


def test_a_finished_failure_can_be_queued_again(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "q.sqlite3")
    queue.add(A, {}, limit=10)
    assert queue.claim(timeout=0) is not None
    queue.finish(A, ok=False, detail="boom")
    assert queue.add(A, {}, limit=10) is True
    row = queue.get(A)
    assert row is not None and row.state == "queued" and row.attempts == 0


def test_recovery_requeues_then_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    Queue(path).add(A, {}, limit=10)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        queue = Queue(path)  # a new process after a crash
        row = queue.claim(timeout=0)
        assert row is not None and row.attempts == attempt
        requeued, failed = Queue(path).recover()
        if attempt < MAX_ATTEMPTS:
            assert (requeued, failed) == ([A], [])
        else:
            assert (requeued, failed) == ([], [A])
    assert Queue(path).get(A).state == "failed"  # type: ignore[union-attr]


def test_recovery_without_a_limit_never_gives_up(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    Queue(path).add(A, {}, limit=10)
    for _ in range(MAX_ATTEMPTS + 2):
        assert Queue(path).claim(timeout=0) is not None
        assert Queue(path).recover(max_attempts=None) == ([A], [])

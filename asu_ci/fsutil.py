"""Atomic files and folders: a reader sees the old state or the new one, never half."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any


def dumps(obj: Any) -> bytes:
    """The canonical JSON bytes asu-ci writes: sorted keys, compact, UTF-8, newline."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return (text + "\n").encode()


def write_bytes(path: Path, data: bytes, *, only_if_changed: bool = True) -> bool:
    """Write ``data`` to ``path`` atomically. Returns False when the file already held it."""
    if only_if_changed:
        try:
            if path.stat().st_size == len(data) and path.read_bytes() == data:
                return False
        except OSError:
            pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def write_json(path: Path, obj: Any, *, only_if_changed: bool = True) -> bool:
    return write_bytes(path, dumps(obj), only_if_changed=only_if_changed)


def read_json(path: Path) -> Any:
    with path.open("rb") as fh:
        return json.load(fh)


def staging_dir(final: Path) -> Path:
    """A fresh hidden folder beside ``final`` to fill before :func:`move_into`."""
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".staging", dir=final.parent))


def move_into(staging: Path, final: Path) -> list[str]:
    """Move every file of a filled staging folder into ``final``, one rename each.

    Each file appears whole. Callers publish the file that points readers at
    the others (``build.json``, then ``status.json``) last, after this returns,
    so nothing a reader is told about is missing. Returns the names moved.
    """
    final.mkdir(parents=True, exist_ok=True)
    moved = []
    for item in sorted(staging.iterdir()):
        if item.is_file() and not item.is_symlink():
            os.replace(item, final / item.name)
            moved.append(item.name)
    shutil.rmtree(staging, ignore_errors=True)
    return moved


class FileLock:
    """An ``flock`` on a file path, shared or exclusive.

    The holder of an exclusive lock may remove the file (``release(remove=True)``);
    a process that was waiting on the removed file notices (the path no longer
    names the file it locked) and locks the new one instead.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self, *, shared: bool = False, blocking: bool = True) -> bool:
        """Take the lock; with ``blocking=False`` return False instead of waiting."""
        mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already locked by this object")
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, mode)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                current = False
            if current:
                self._fd = fd
                return True
            os.close(fd)

    def release(self, *, remove: bool = False) -> None:
        """Let go; ``remove`` (only while holding it exclusive) deletes the file first."""
        if self._fd is None:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

"""Files of the upstream download server, a mirror of it or a local copy.

``base`` is an ``http(s)://`` URL, a ``file://`` URL or a folder in the
download-server layout. Over HTTP every body is kept in an on-disk cache
(one body file and one small JSON meta file per URL, each written
atomically) and asked for again with a conditional GET, so a second run
downloads only what changed upstream. Local sources are read directly and
have no cache.

One :class:`Upstream` may be shared by a small thread pool: each thread gets
its own HTTP session, the counters are locked. Close it (or use it as a
context manager) to close those sessions.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

from asu_ci.errors import ConfigError, UpstreamError
from asu_ci.fsutil import write_bytes, write_json
from asu_ci.http import DEFAULT_BOUND, DEFAULT_RETRIES, RequestException, Session, timeouts

ProgressFn = Callable[[int, int | None], None]

_SEGMENT = re.compile(r"[A-Za-z0-9._+,~@=-]+")
_CHUNK = 1 << 20
_MISSING = (404, 410)
_FIX = "check --upstream (ASU_CI_UPSTREAM) and the network, or try again later"


class Fetched:
    """One file's bytes and their sha256.

    ``changed`` is False when the bytes equal the cached copy (a 304, or a 200
    with the same digest); local sources have no cache, so it is always True.
    After a 304 the bytes stay in the cache file until ``data`` is read: a warm
    render compares digests and never needs them.
    """

    __slots__ = ("_data", "_path", "changed", "digest")

    def __init__(
        self, data: bytes | None, digest: str, changed: bool, path: Path | None = None
    ) -> None:
        if data is None and path is None:
            raise ValueError("Fetched needs its bytes or the file that holds them")
        self._data = data
        self._path = path
        self.digest = digest
        self.changed = changed

    @property
    def data(self) -> bytes:
        if self._data is None:
            assert self._path is not None
            try:
                self._data = self._path.read_bytes()
            except OSError as exc:
                raise UpstreamError(
                    f"{self._path}: the cached copy went missing ({exc.strerror}); run again"
                ) from None
        return self._data


def check_relpath(relpath: str) -> str:
    """``relpath`` itself when it is a plain relative path; ValueError otherwise.

    Callers pass only names they built from validated parts, so a bad one is a
    programming error, not a user's.
    """
    parts = relpath.split("/")
    if any(p in (".", "..") or not _SEGMENT.fullmatch(p) for p in parts):
        raise ValueError(f"not a plain relative path: {relpath!r}")
    return relpath


def load_json(data: bytes, where: str) -> Any:
    """Parse upstream JSON; a broken file is an :class:`UpstreamError` naming it."""
    try:
        return json.loads(data)
    except ValueError as exc:
        raise UpstreamError(
            f"{where}: not valid JSON ({exc}); the download server or mirror serves "
            "a broken file, point --upstream at a good one"
        ) from None


class Upstream:
    """Read files of the download server at ``base``; HTTP bodies are cached in ``cache_dir``."""

    def __init__(
        self,
        base: str,
        cache_dir: Path,
        session: Session | None = None,
        *,
        bound: float = DEFAULT_BOUND,
    ) -> None:
        self.base = base
        self.bound = bound
        self.cache_dir = cache_dir
        self.requests = 0
        self.bytes_downloaded = 0
        self._root: Path | None = None
        self._http_base = ""
        scheme = urlsplit(base).scheme.lower()
        if scheme in ("http", "https"):
            self._http_base = base.rstrip("/")
        elif scheme == "file":
            parts = urlsplit(base)
            if parts.netloc not in ("", "localhost"):
                raise ConfigError(f"{base}: a file:// URL must name a local folder")
            self._root = Path(url2pathname(parts.path))
        elif "://" in base:
            raise ConfigError(f"{base}: not an http(s):// or file:// URL or a local folder")
        else:
            self._root = Path(base)
        self._session = session
        self._sessions: list[Session] = []
        self._local = threading.local()
        self._lock = threading.Lock()

    def __enter__(self) -> Upstream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the per-thread sessions this object opened (not one passed in)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def url(self, relpath: str) -> str:
        """The public URL of a file, for links and messages."""
        check_relpath(relpath)
        if self._root is not None:
            return (self._root / relpath).absolute().as_uri()
        return f"{self._http_base}/{relpath}"

    def get(self, relpath: str) -> Fetched | None:
        """The file's bytes, or None when upstream does not have it."""
        check_relpath(relpath)
        if self._root is not None:
            return self._get_local(self._root, relpath)
        return self._get_http(relpath)

    def download(self, relpath: str, dest: Path, on_progress: ProgressFn | None = None) -> None:
        """Stream a (large) file to ``dest``: a temporary file, then one rename. Not cached."""
        check_relpath(relpath)
        if self._root is not None:
            path = self._root / relpath
            try:
                fh = path.open("rb")
            except OSError as exc:
                self._check_root(self._root)
                raise UpstreamError(f"{path}: cannot be read ({exc.strerror})") from None
            with fh:
                size = os.fstat(fh.fileno()).st_size
                _stream_to(dest, iter(lambda: fh.read(_CHUNK), b""), size, on_progress, path)
            return
        url = self.url(relpath)
        try:
            with self._http().get(url, stream=True) as resp:
                self._count()
                if resp.status_code in _MISSING:
                    raise UpstreamError(f"{url}: not found upstream (HTTP {resp.status_code})")
                _check_status(url, resp.status_code, resp.reason)
                length = resp.headers.get("Content-Length")
                encoded = "Content-Encoding" in resp.headers
                total = int(length) if length and length.isdigit() and not encoded else None
                done = _stream_to(dest, resp.iter_content(_CHUNK), total, on_progress, url)
                self._count(done, requests=0)
        except RequestException as exc:
            raise UpstreamError(f"{url}: download failed ({_reason(exc)}); {_FIX}") from None

    def _get_local(self, root: Path, relpath: str) -> Fetched | None:
        path = root / relpath
        try:
            data = path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            self._check_root(root)
            return None
        except OSError as exc:
            raise UpstreamError(f"{path}: cannot be read ({exc.strerror})") from None
        return Fetched(data, hashlib.sha256(data).hexdigest(), changed=True)

    def _check_root(self, root: Path) -> None:
        if not root.is_dir():
            raise UpstreamError(
                f"{self.base}: no such folder; point --upstream at a download server URL "
                "or a folder in its layout"
            )

    def _get_http(self, relpath: str) -> Fetched | None:
        url = self.url(relpath)
        key = hashlib.sha256(url.encode()).hexdigest()
        body_path = self.cache_dir / f"{key}.body"
        meta_path = self.cache_dir / f"{key}.json"
        meta, cached = _read_cache(meta_path, body_path)
        headers = {}
        if cached:
            if meta.get("etag"):
                headers["If-None-Match"] = str(meta["etag"])
            if meta.get("last_modified"):
                headers["If-Modified-Since"] = str(meta["last_modified"])
        try:
            with self._http().get(url, headers=headers) as resp:
                self._count()
                if resp.status_code == 304 and cached:
                    return Fetched(None, str(meta["digest"]), changed=False, path=body_path)
                if resp.status_code in _MISSING:
                    return None
                _check_status(url, resp.status_code, resp.reason)
                data = resp.content
                self._count(len(data), requests=0)
                etag = resp.headers.get("ETag")
                last_modified = resp.headers.get("Last-Modified")
        except RequestException as exc:
            raise UpstreamError(f"{url}: cannot be read ({_reason(exc)}); {_FIX}") from None
        digest = hashlib.sha256(data).hexdigest()
        changed = not cached or meta.get("digest") != digest
        new_meta = {
            "url": url,
            "etag": etag,
            "last_modified": last_modified,
            "digest": digest,
            "size": len(data),
        }
        try:
            if changed:
                write_bytes(body_path, data, only_if_changed=False)
            write_json(meta_path, new_meta)
        except OSError as exc:
            raise ConfigError(
                f"{self.cache_dir}: cannot write the download cache ({exc.strerror}); check --data"
            ) from None
        return Fetched(data, digest, changed)

    def _http(self) -> Session:
        if self._session is not None:
            return self._session
        session: Session | None = getattr(self._local, "session", None)
        if session is None:
            session = Session(timeouts(self.bound, DEFAULT_RETRIES))
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def _count(self, nbytes: int = 0, requests: int = 1) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_downloaded += nbytes


def _read_cache(meta_path: Path, body_path: Path) -> tuple[dict[str, Any], bool]:
    """The cached meta of a URL, and whether its body file is there whole (by size)."""
    try:
        meta = json.loads(meta_path.read_bytes())
        size = body_path.stat().st_size
    except (OSError, ValueError):
        return {}, False
    if not isinstance(meta, dict) or meta.get("size") != size or not meta.get("digest"):
        return {}, False
    return meta, True


def _check_status(url: str, status: int, reason: str) -> None:
    if status == 200:
        return
    if status >= 500:
        raise UpstreamError(
            f"{url}: the server answered HTTP {status} {reason} after retries; {_FIX}"
        )
    raise UpstreamError(f"{url}: the server answered HTTP {status} {reason}; {_FIX}")


def _reason(exc: RequestException) -> str:
    """The short cause of a requests failure (``Connection refused``, ``timed out``)."""
    text = str(exc)
    match = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if match:
        return match.group(1).strip()
    if "timed out" in text.lower():
        return "timed out"
    return type(exc).__name__


def _stream_to(
    dest: Path,
    chunks: Iterable[bytes],
    total: int | None,
    on_progress: ProgressFn | None,
    where: object,
) -> int:
    """Write ``chunks`` to a temporary file beside ``dest``, then rename it. Returns the size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    done = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                done += len(chunk)
                if on_progress is not None:
                    on_progress(done, total)
            fh.flush()
            os.fsync(fh.fileno())
        if total is not None and done != total:
            raise UpstreamError(f"{where}: got {done} of {total} bytes; {_FIX}")
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return done

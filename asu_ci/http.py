"""The one HTTP session helper: explicit timeouts, retries for GET and HEAD only.

A POST (or any request that changes state) is never retried here: whoever
sends it decides how to find out whether it went through.

A server that accepts the connection and never answers is given up on within
one bound for the whole call, retries included: :func:`timeouts` splits it
into the connect and read timeouts of each attempt. While a call waits longer
than :data:`NOTICE_SECONDS`, one warning line says what it is waiting for.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from asu_ci import __version__

if TYPE_CHECKING:
    from requests.sessions import _Settings

log = logging.getLogger(__name__)

#: Seconds one GET may take in all, retries included, when nobody says otherwise.
DEFAULT_BOUND = 60.0
DEFAULT_RETRIES = 2
BACKOFF = 0.5
RETRY_STATUSES = (429, 500, 502, 503, 504)
#: A call waiting this long gets one "still waiting" line.
NOTICE_SECONDS = 10.0


def timeouts(bound: float, retries: int) -> tuple[float, float]:
    """(connect, read) seconds per attempt so that ``retries + 1`` attempts and the
    backoff between them fit in ``bound``."""
    backoff = sum(BACKOFF * 2**i for i in range(retries))
    per_attempt = max(bound - backoff, 1.0) / (retries + 1)
    connect = min(10.0, per_attempt / 2)
    return connect, per_attempt - connect


class _Waits:
    """Calls in flight, and one watcher thread that names those waiting long."""

    def __init__(self, notice: float) -> None:
        self.notice = notice
        self._calls: dict[int, tuple[float, str]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._next = 0

    def begin(self, url: str) -> int:
        with self._lock:
            self._next += 1
            self._calls[self._next] = (time.monotonic(), url)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name="http-waits", daemon=True)
                self._thread.start()
            return self._next

    def end(self, call: int) -> None:
        with self._lock:
            self._calls.pop(call, None)

    def _watch(self) -> None:
        told: set[int] = set()
        while True:
            time.sleep(min(1.0, self.notice / 2))
            now = time.monotonic()
            with self._lock:
                slow = [(c, now - t, u) for c, (t, u) in self._calls.items() if c not in told]
                told &= set(self._calls)
            for call, waited, url in slow:
                if waited >= self.notice:
                    told.add(call)
                    log.warning("still waiting for %s after %.0f s", url, waited)


class Session(requests.Session):
    """A requests session whose every call has a timeout."""

    def __init__(
        self,
        timeout: tuple[float, float] | None = None,
        retries: int = DEFAULT_RETRIES,
        notice: float = NOTICE_SECONDS,
    ) -> None:
        super().__init__()
        self.timeout = timeout or timeouts(DEFAULT_BOUND, retries)
        self._waits = _Waits(notice)
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            allowed_methods=frozenset({"GET", "HEAD"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=BACKOFF,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.headers["User-Agent"] = f"asu-ci/{__version__}"
        self._environment: dict[tuple[Any, ...], _Settings] = {}

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        call = self._waits.begin(str(url))
        try:
            return super().request(method, url, *args, **kwargs)
        finally:
            self._waits.end(call)

    def merge_environment_settings(
        self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
    ) -> _Settings:
        """requests' env lookups (proxies, CA bundle), once per origin instead of per call.

        requests scans the whole environment twice for every request to find
        proxies; the answer depends only on the origin, and the environment
        does not change under a running command.
        """
        if proxies or not self.trust_env:
            return super().merge_environment_settings(url, proxies, stream, verify, cert)
        parts = urlsplit(str(url))
        key = (parts.scheme, parts.netloc, stream, verify, cert)
        found = self._environment.get(key)
        if found is None:
            found = super().merge_environment_settings(url, proxies, stream, verify, cert)
            self._environment[key] = found
        settings = found.copy()
        settings["proxies"] = dict(found["proxies"] or {})
        return settings


RequestException = requests.RequestException

"""The one HTTP session helper: explicit timeouts, retries for GET and HEAD only.

A POST (or any request that changes state) is never retried here: whoever
sends it decides how to find out whether it went through.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from asu_ci import __version__

#: (connect, read) seconds.
DEFAULT_TIMEOUT = (10.0, 60.0)
RETRY_STATUSES = (429, 500, 502, 503, 504)


class Session(requests.Session):
    """A requests session whose every call has a timeout."""

    def __init__(self, timeout: tuple[float, float] = DEFAULT_TIMEOUT, retries: int = 3) -> None:
        super().__init__()
        self.timeout = timeout
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            allowed_methods=frozenset({"GET", "HEAD"}),
            status_forcelist=RETRY_STATUSES,
            backoff_factor=0.5,
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        adapter = HTTPAdapter(max_retries=retry, pool_maxsize=16)
        self.mount("http://", adapter)
        self.mount("https://", adapter)
        self.headers["User-Agent"] = f"asu-ci/{__version__}"

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)


RequestException = requests.RequestException

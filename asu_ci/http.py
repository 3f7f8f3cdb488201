"""The one HTTP session helper: explicit timeouts, retries for GET and HEAD only.

A POST (or any request that changes state) is never retried here: whoever
sends it decides how to find out whether it went through.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from asu_ci import __version__

if TYPE_CHECKING:
    from requests.sessions import _Settings

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
        self._environment: dict[tuple[Any, ...], _Settings] = {}

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout)
        return super().request(method, url, *args, **kwargs)

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

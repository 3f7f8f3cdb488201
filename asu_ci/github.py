"""GitHub plumbing shared by the releases store, the dispatcher and the endpoint.

The token comes from the environment variable the configuration names, never
from the file. :func:`connect` makes the PyGithub client: it repeats GET and
HEAD only (a POST whose answer is lost is for the caller to look into) and
keeps PyGithub's pauses between calls (:class:`Pace`).

Failures are GitHub's own (:class:`github.GithubException`) or the
transport's (:class:`requests.RequestException`, :class:`OSError`): together
:data:`ERRORS`. :func:`rate_limit_wait` and :func:`is_transient` tell them
apart, so a caller can decide between backing off and giving up;
:func:`retrying` does that for calls that are safe to repeat.
"""

from __future__ import annotations

import email.utils
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import github
import requests
from github.Requester import Requester
from urllib3.util.retry import Retry

from asu_ci import __version__
from asu_ci.config import GitHub
from asu_ci.errors import ConfigError

log = logging.getLogger(__name__)

#: What a call to GitHub may raise.
ERRORS = (github.GithubException, requests.RequestException, OSError)
#: A rate limit that names no time is waited out this long ("at least one minute", say the docs).
DEFAULT_RATE_WAIT = 60.0

T = TypeVar("T")


@dataclass(frozen=True)
class Pace:
    """PyGithub's pauses between calls (its defaults; GitHub asks for them on writes)."""

    seconds_between_requests: float | None = 0.25
    seconds_between_writes: float | None = 1.0


#: GitHub's limits on content-creating requests: (how many, per seconds).
CONTENT_LIMITS: tuple[tuple[int, float], ...] = ((80, 60.0), (500, 3600.0))


class ContentPace:
    """Keeps one client under GitHub's limits on content-creating requests.

    GitHub allows 80 content-creating requests (a dispatch, a release, an
    upload) a minute and 500 an hour, and answers a secondary rate limit past
    them. :meth:`wait` blocks until one more fits in every window and counts it.
    """

    def __init__(
        self,
        limits: tuple[tuple[int, float], ...] = CONTENT_LIMITS,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.limits = limits
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()

    def delay(self) -> float:
        """Seconds until one more request fits (0: now)."""
        now = self._clock()
        longest = max((window for _, window in self.limits), default=0.0)
        while self._sent and self._sent[0] <= now - longest:
            self._sent.popleft()
        wait = 0.0
        for count, window in self.limits:
            inside = [t for t in self._sent if t > now - window]
            if len(inside) >= count:
                wait = max(wait, inside[len(inside) - count] + window - now)
        return wait

    def wait(self) -> float:
        """Wait until a content-creating request may go, and count it; the seconds waited."""
        waited = 0.0
        with self._lock:
            while (wait := self.delay()) > 0:
                log.info("pacing content-creating requests: waiting %.0f s", wait)
                self._sleep(wait)
                waited += wait
            self._sent.append(self._clock())
        return waited


def token_from_env(cfg: GitHub, environ: Mapping[str, str] | None = None) -> str:
    """The token, from the env var the configuration names (never from the file)."""
    env = os.environ if environ is None else environ
    token = env.get(cfg.token_env, "").strip()
    if not token:
        raise ConfigError(
            f"backend 'github' needs a token in the environment variable {cfg.token_env} "
            "(github.token_env): export a token that may run workflows and write releases "
            "in the repository (fine-grained: Actions and Contents read/write)"
        )
    return token


def repository_name(cfg: GitHub) -> str:
    if cfg.repository is None:
        raise ConfigError(
            "backend 'github' needs github.repository (OWNER/NAME of the repository whose "
            "workflows build and whose releases hold the images)"
        )
    return cfg.repository


def connect(
    cfg: GitHub, *, environ: Mapping[str, str] | None = None, pace: Pace | None = None
) -> github.Github:
    """A PyGithub client that never repeats a request that changes something.

    Its retries cover GET and HEAD (and connections that were never made); a
    POST whose answer is lost is for the caller to look into. It is lazy:
    objects are fetched when a field is read, not when they are named.
    """
    pace = pace or Pace()
    retry = Retry(
        total=2,
        connect=2,
        read=2,
        status=2,
        other=0,
        allowed_methods=frozenset({"GET", "HEAD"}),
        status_forcelist=(500, 502, 503, 504),
        backoff_factor=0.3,
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    return github.Github(
        base_url=cfg.api_url.rstrip("/"),
        auth=github.Auth.Token(token_from_env(cfg, environ)),
        timeout=max(1, round(cfg.timeout_seconds)),
        user_agent=f"asu-ci/{__version__}",
        per_page=100,
        retry=retry,
        seconds_between_requests=pace.seconds_between_requests,
        seconds_between_writes=pace.seconds_between_writes,
        lazy=True,
    )


# -- telling failures apart ----------------------------------------------------------------


def _headers(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, github.GithubException):
        return {k.lower(): str(v) for k, v in (exc.headers or {}).items()}
    return {}


def _remaining(headers: Mapping[str, str]) -> int | None:
    value = headers.get("x-ratelimit-remaining", "")
    return int(value) if value.isdigit() else None


def rate_limit_wait(exc: BaseException, now: float | None = None) -> float | None:
    """Seconds to wait when ``exc`` is a (primary or secondary) rate limit, else None.

    ``Retry-After`` is honoured as given; an exhausted primary limit waits for
    ``X-RateLimit-Reset``; a limit that names no time waits a minute.
    """
    if not isinstance(exc, github.GithubException):
        return None
    headers = _headers(exc)
    limited = (
        isinstance(exc, github.RateLimitExceededException)
        or exc.status == 429
        or (exc.status == 403 and ("retry-after" in headers or _remaining(headers) == 0))
    )
    if not limited:
        return None
    clock = time.time() if now is None else now
    retry_after = headers.get("retry-after", "").strip()
    if retry_after.isdigit():
        return max(float(retry_after), 1.0)
    if retry_after:
        with_date = email.utils.parsedate_to_datetime(retry_after).timestamp()
        return max(with_date - clock, 1.0)
    reset = headers.get("x-ratelimit-reset", "")
    if _remaining(headers) == 0 and reset.isdigit():
        return max(float(reset) - clock, 1.0)
    return DEFAULT_RATE_WAIT


def missing_permission(exc: BaseException) -> str | None:
    """The permission a 403 "Resource not accessible by ..." names (``actions=write``), else None.

    A token without a permission is refused this way for every request of its
    kind: an operator's fix, never a failure of one request.
    """
    if not isinstance(exc, github.GithubException) or exc.status != 403:
        return None
    message = exc.data.get("message") if isinstance(exc.data, dict) else None
    if "resource not accessible" not in str(message or "").lower():
        return None
    return _headers(exc).get("x-accepted-github-permissions") or "unknown"


def is_transient(exc: BaseException) -> bool:
    """No answer, a timeout or a 5xx: GitHub may or may not have acted on the request."""
    if isinstance(exc, github.GithubException):
        return exc.status >= 500
    return isinstance(exc, requests.RequestException | OSError)


def describe(exc: BaseException) -> str:
    """One line about a failure, for logs and client-facing details (never the token)."""
    if isinstance(exc, github.GithubException):
        message = exc.data.get("message") if isinstance(exc.data, dict) else None
        return f"GitHub answered {exc.status}" + (f": {message}" if message else "")
    if isinstance(exc, requests.Timeout):
        return "GitHub did not answer in time"
    if isinstance(exc, requests.ConnectionError | OSError):
        return "GitHub cannot be reached"
    return type(exc).__name__


def already_exists(exc: BaseException) -> bool:
    """A 422 whose errors say the thing to create is there already."""
    if not isinstance(exc, github.GithubException) or exc.status != 422:
        return False
    errors = exc.data.get("errors") if isinstance(exc.data, dict) else None
    return any(isinstance(e, dict) and e.get("code") == "already_exists" for e in errors or [])


def api_error(response: requests.Response) -> github.GithubException:
    """A non-2xx answer got outside PyGithub, classified the way PyGithub classifies its own."""
    try:
        data: Any = response.json()
    except ValueError:
        data = {"message": response.text[:200]}
    if not isinstance(data, dict):
        data = {"message": str(data)[:200]}
    headers = {k.lower(): v for k, v in response.headers.items()}
    return Requester.createException(response.status_code, headers, data)


def retrying(what: str, call: Callable[[], T], *, attempts: int, max_wait: float) -> T:
    """Run ``call`` (idempotent by construction), waiting out limits and hiccups.

    Up to ``attempts`` tries; a wait longer than ``max_wait`` is not waited.
    """
    for attempt in range(1, max(1, attempts) + 1):
        try:
            return call()
        except ERRORS as exc:
            wait = rate_limit_wait(exc)
            if wait is None and is_transient(exc):
                wait = min(2.0**attempt, 30.0)
            if wait is None or attempt >= attempts or wait > max_wait:
                raise
            log.warning("%s: %s; trying again in %.0f s", what, describe(exc), wait)
            time.sleep(wait)
    raise AssertionError("unreachable")

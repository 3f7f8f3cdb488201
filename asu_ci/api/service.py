"""What every view of the endpoint shares: the flow from a request to an answer.

It validates, hashes, looks the hash up in the store, queues what is new and
answers. It never builds and never blocks on a build. Everything it answers
about a request is also in ``store/<hash>/``; the SQLite queue only holds what
is in flight.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from typing import Any, cast

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from asu_ci.config import Settings
from asu_ci.dispatch.base import Dispatcher
from asu_ci.dispatch.queue import Queue
from asu_ci.dispatch.registry import make_dispatcher
from asu_ci.errors import NotFoundError, QueueFullError, RateLimitedError, RequestError
from asu_ci.identity.hashing import is_request_hash
from asu_ci.identity.identify import Identity, identify
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import NormalizedRequest
from asu_ci.index.catalog import Catalog
from asu_ci.protocol import Built, ErrorBody, Failed, Progress, read_status, state_headers
from asu_ci.publish import retention
from asu_ci.publish.local import LocalStore

log = logging.getLogger(__name__)

DEFAULTS_ON_GITHUB = (
    "This server builds on GitHub Actions, where a request's fields end up in public "
    "workflow inputs and release assets; it does not take defaults (a first-boot script, "
    "which often holds passwords). Leave defaults out, or use a server that builds locally."
)

JSON = "application/json"
_DONE_HEADERS = state_headers("done")


class _QueueSizes(Collector):
    """``asu_ci_queue{state}``: read from the durable queue at each scrape."""

    def __init__(self, queue: Queue) -> None:
        self.queue = queue

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "asu_ci_queue", "Requests in the durable queue by state.", labels=["state"]
        )
        for state, n in sorted(self.queue.counts().items()):
            family.add_metric([state], n)
        yield family


class Metrics:
    """The figures of ``/api/v1/stats`` and ``/metrics``, in this app's own registry
    (counters safe to bump from the event loop and worker threads at once)."""

    def __init__(self, queue: Queue) -> None:
        self.started = time.time()
        self.registry = CollectorRegistry()
        self.responses = Counter(
            "asu_ci_responses", "API answers by HTTP status.", ["code"], registry=self.registry
        )
        self.builds_queued = Counter(
            "asu_ci_builds_queued", "New builds queued since start.", registry=self.registry
        )
        self.finished_answers = Counter(
            "asu_ci_finished_answers",
            "Answers with a finished build since start.",
            registry=self.registry,
        )
        self.registry.register(_QueueSizes(queue))
        #: The labelled child of ``responses`` per code: labels() costs a lock and a
        #: lookup of its own, once per code instead of once per answer.
        self._by_code: dict[int, Any] = {}

    def count(self, code: int) -> None:
        child = self._by_code.get(code)
        if child is None:
            child = self._by_code.setdefault(code, self.responses.labels(code=str(code)))
        child.inc()

    def total(self, name: str) -> int:
        """The value of the counter ``name`` (without ``_total``)."""
        return int(self.registry.get_sample_value(f"{name}_total") or 0)


class RateLimiter:
    """New builds one client may submit in a sliding minute."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._seen) > 10_000:
                self._seen = {k: v for k, v in self._seen.items() if v and now - v[-1] < 60}
            stamps = self._seen.setdefault(client, deque())
            while stamps and now - stamps[0] >= 60:
                stamps.popleft()
            if len(stamps) >= self.per_minute:
                retry = int(60 - (now - stamps[0])) + 1
                raise RateLimitedError(
                    f"Too many new builds from this client ({self.per_minute} a minute); "
                    f"try again in {retry} s",
                    retry_after=retry,
                )
            stamps.append(now)


class Finished:
    """``build.json`` bytes by hash: immutable, so they can be kept in memory."""

    def __init__(self, store: LocalStore, mark_every: float, size: int = 4096) -> None:
        self.store = store
        self.size = size
        #: Seconds between two retention marks of one build (a mark is a disk write).
        self.mark_every = mark_every
        self._bytes: OrderedDict[str, bytes] = OrderedDict()
        self._marked: dict[str, float] = {}
        self._lock = threading.Lock()

    def asked(self, request_hash: str) -> bool:
        """Note for retention that the build was asked for again; False when its folder
        is gone (pruned a moment ago), so the request is treated as new.

        The mark is written at most every ``mark_every`` seconds per build, far
        inside the time a build is kept, so a build asked for since cannot expire.
        """
        now = time.monotonic()
        last = self._marked.get(request_hash)
        if last is not None and now - last < self.mark_every:
            return True
        if not retention.mark_asked(self.store, request_hash):
            self.forget(request_hash)
            return False
        with self._lock:
            if len(self._marked) > self.size:
                self._marked.clear()
            self._marked[request_hash] = now
        return True

    def cached(self, request_hash: str) -> bytes | None:
        """The bytes when they are in memory already; never touches the disk."""
        with self._lock:
            found = self._bytes.get(request_hash)
            if found is not None:
                self._bytes.move_to_end(request_hash)
            return found

    def forget(self, request_hash: str) -> None:
        with self._lock:
            self._bytes.pop(request_hash, None)
            self._marked.pop(request_hash, None)

    def get(self, request_hash: str) -> bytes | None:
        found = self.cached(request_hash)
        if found is not None:
            return found
        try:
            data = (self.store.folder(request_hash) / "build.json").read_bytes()
        except OSError:
            return None
        with self._lock:
            self._bytes[request_hash] = data
            if len(self._bytes) > self.size:
                self._bytes.popitem(last=False)
        return data


class Service:
    """Everything a request handler needs, created once per app."""

    def __init__(self, settings: Settings, dispatch: bool) -> None:
        self.settings = settings
        self.catalog = Catalog(settings.public_dir)
        self.store = LocalStore(settings.public_dir / "store")
        self.queue = Queue(settings.data_dir / "queue.sqlite3")
        self.finished = Finished(
            self.store, mark_every=min(3600.0, settings.store.keep_days * 86400 / 8)
        )
        self.limiter = RateLimiter(settings.server.rate_limit_per_minute)
        self.metrics = Metrics(self.queue)
        self.dispatcher: Dispatcher | None = (
            make_dispatcher(settings, self.queue, self.store) if dispatch else None
        )

    # -- answers -------------------------------------------------------------

    def answer_finished(self, data: bytes) -> Response:
        """The stored ``build.json`` bytes as they are: the 200 body."""
        self.metrics.finished_answers.inc()
        return Response(content=data, status_code=200, media_type=JSON, headers=_DONE_HEADERS)

    def answer_status(self, request_hash: str, status: Progress | Failed | Built) -> Response:
        if isinstance(status, Progress):
            status = status.placed(self.queue.position(request_hash))
        return answer(status)

    # -- the flow ------------------------------------------------------------

    def identify(self, request: BuildRequest) -> Identity:
        """Validate against the index and hash: CPU work on index files kept in memory.

        The GitHub backend has no private path for a first-boot script: workflow
        inputs, logs and release assets of a public repository are public, and
        ``defaults`` often holds passwords. Such a request is refused (400).
        """
        if request.defaults and self.settings.backend == "github":
            raise RequestError(DEFAULTS_ON_GITHUB)
        return identify(request, self.catalog, self.settings.server)

    def asked(self, digest: str) -> bytes | None:
        """The finished build of a request someone asks for again, noted for retention;
        None when it is not built (or was pruned a moment ago)."""
        data = self.finished.get(digest)
        return data if data is not None and self.finished.asked(digest) else None

    def settle(self, normalized: NormalizedRequest, digest: str, client: str) -> Response:
        """Answer from the store or queue the request (disk and SQLite: run it in a thread)."""
        data = self.asked(digest)
        if data is not None:
            return self.answer_finished(data)
        status = read_status(self.store.status(digest))
        in_flight = isinstance(status, Progress) and self.queue.get(digest) is not None
        failed_for_now = isinstance(status, Failed) and not status.retryable(
            self.settings.build.failure_retry_seconds
        )
        if status is not None and (in_flight or failed_for_now):
            return self.answer_status(digest, status)
        self.limiter.check(client)
        log.info("queueing %s for %s (%s)", digest, client, normalized.client or "no client name")
        added = self.queue.add(
            digest, normalized.to_json(), self.settings.server.max_pending_builds
        )
        if added is None:
            raise QueueFullError("Too many builds are queued right now; try again in a few minutes")
        if not added:  # queued meanwhile by an identical request: answer its state
            now = read_status(self.store.status(digest)) or Progress.queued(digest)
            return self.answer_status(digest, now)
        self.metrics.builds_queued.inc()
        body = Progress.queued(digest, self.queue.position(digest))
        self.store.write_status(digest, body)
        if self.dispatcher is not None:
            self.dispatcher.wake()
        return self.answer_status(digest, body)

    def poll(self, request_hash: str) -> Response:
        if not is_request_hash(request_hash):
            raise NotFoundError("Unknown request hash: it must be 64 hex digits")
        data = self.finished.get(request_hash)
        if data is not None:
            return self.answer_finished(data)
        status = read_status(self.store.status(request_hash))
        if status is None:
            if self.queue.get(request_hash) is not None:
                return self.answer_status(request_hash, Progress.queued(request_hash))
            raise NotFoundError(f"Unknown request hash: {request_hash}")
        return self.answer_status(request_hash, status)


def answer(body: Progress | Failed | Built | ErrorBody) -> JSONResponse:
    """``body`` as its JSON answer, with its code and the header rule's headers."""
    return JSONResponse(body.json_body(), status_code=body.status, headers=body.headers())


def service_of(request: Request) -> Service:
    """The :class:`Service` of the app ``request`` came to."""
    return cast(Service, request.app.state.service)

"""The thin request endpoint: ASU API v1 over the static tree.

It validates, hashes, looks the hash up in the store, queues what is new and
answers. It never builds and never blocks on a build. Everything it answers
about a request is also in ``store/<hash>/``; the SQLite queue only holds what
is in flight.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from asu_ci import __version__
from asu_ci.api.middleware import EdgeMiddleware
from asu_ci.config import Settings
from asu_ci.dispatch.base import Dispatcher
from asu_ci.dispatch.local import LocalPool
from asu_ci.dispatch.queue import Queue
from asu_ci.errors import (
    AsuCiError,
    BackendUnavailableError,
    ConfigError,
    NotFoundError,
    QueueFullError,
    RateLimitedError,
    RequestError,
)
from asu_ci.identity.hashing import is_request_hash
from asu_ci.identity.identify import Identity, identify, invalid_request
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import NormalizedRequest
from asu_ci.index.catalog import Catalog
from asu_ci.index.refresh import Refresher
from asu_ci.publish import bodies, retention
from asu_ci.publish.local import LocalStore

log = logging.getLogger(__name__)

JSON = "application/json"
#: Where the API docs' own assets are served: from the package, never a CDN.
DOCS_ASSETS = "/docs/assets"
_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
DEFAULTS_ON_GITHUB = (
    "This server builds on GitHub Actions, where a request's fields end up in public "
    "workflow inputs and release assets; it does not take defaults (a first-boot script, "
    "which often holds passwords). Leave defaults out, or use a server that builds locally."
)


@dataclass
class Counters:
    """In-process figures for /api/v1/stats and /metrics."""

    started: float = field(default_factory=time.time)
    requests: dict[str, int] = field(default_factory=dict)
    builds_queued: int = 0
    cache_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, key: str) -> None:
        with self.lock:
            self.requests[key] = self.requests.get(key, 0) + 1


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

    def __init__(self, store: LocalStore, size: int = 4096) -> None:
        self.store = store
        self.size = size
        self._bytes: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

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
        self.finished = Finished(self.store)
        self.limiter = RateLimiter(settings.server.rate_limit_per_minute)
        self.counters = Counters()
        self.dispatcher = make_dispatcher(settings, self.queue, self.store) if dispatch else None

    # -- answers -------------------------------------------------------------

    def answer_finished(self, data: bytes) -> Response:
        self.counters.cache_hits += 1
        return Response(
            content=data,
            status_code=200,
            media_type=JSON,
            headers={"X-Imagebuilder-Status": "done", "X-Queue-Position": "0"},
        )

    def answer_status(self, request_hash: str, body: dict[str, Any]) -> Response:
        code = int(body.get("status", 500))
        if code == 202:
            position = self.queue.position(request_hash)
            body = dict(body)
            if position is not None:
                body["queue_position"] = position
                body["imagebuilder_status"] = "init"
            else:
                body.pop("queue_position", None)
        state = str(body.get("imagebuilder_status", "failed" if code == 500 else "init"))
        return JSONResponse(
            body,
            status_code=code,
            headers={
                "X-Imagebuilder-Status": state,
                "X-Queue-Position": str(body.get("queue_position", 0)),
            },
        )

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
        if data is not None and not retention.mark_asked(self.store, digest):
            self.finished.forget(digest)
            return None
        return data

    def settle(self, normalized: NormalizedRequest, digest: str, client: str) -> Response:
        """Answer from the store or queue the request (disk and SQLite: run it in a thread)."""
        data = self.asked(digest)
        if data is not None:
            return self.answer_finished(data)
        status = self.store.status(digest)
        if status is not None:
            code = status.get("status")
            in_flight = code == 202 and self.queue.get(digest) is not None
            failed_for_now = code == 500 and not bodies.is_retryable(
                status, self.settings.build.failure_retry_seconds
            )
            if in_flight or failed_for_now:
                return self.answer_status(digest, status)
        self.limiter.check(client)
        log.info("queueing %s for %s (%s)", digest, client, normalized.client or "no client name")
        added = self.queue.add(
            digest, normalized.to_json(), self.settings.server.max_pending_builds
        )
        if added is None:
            raise QueueFullError("Too many builds are queued right now; try again in a few minutes")
        if not added:  # queued meanwhile by an identical request: answer its state
            return self.answer_status(digest, self.store.status(digest) or bodies.queued(digest))
        self.counters.builds_queued += 1
        body = bodies.queued(digest, self.queue.position(digest))
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
        status = self.store.status(request_hash)
        if status is None:
            if self.queue.get(request_hash) is not None:
                return self.answer_status(request_hash, bodies.queued(request_hash))
            raise NotFoundError(f"Unknown request hash: {request_hash}")
        return self.answer_status(request_hash, status)


def swagger_ui_static() -> Path:
    """The Swagger UI files shipped by the ``swagger-ui-py`` package (not imported:
    only its static folder is used)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the swagger-ui-py package is missing; reinstall asu-ci with pip")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


def _noted(response: Response, notes: tuple[str, ...]) -> Response:
    """``response`` with ``notes`` (what the server chose for the client) in its JSON body.

    Only answers to a POST carry them: they are about the request as sent,
    which the stored build (shared by every request with its hash) never saw.
    """
    body = json.loads(bytes(response.body))
    body["notes"] = list(notes)
    kept = {
        k: v
        for k, v in response.headers.items()
        if k.lower() not in ("content-length", "content-type")
    }
    return JSONResponse(body, status_code=response.status_code, headers=kept)


def make_dispatcher(settings: Settings, queue: Queue, store: LocalStore) -> Dispatcher:
    """The backend the configuration names."""
    if settings.backend == "github":
        from asu_ci.dispatch.github import GitHubDispatcher

        return GitHubDispatcher(settings, queue, store)
    return LocalPool(settings, queue, store)


def create_app(
    settings: Settings, *, dispatch: bool = True, refresher: Refresher | None = None
) -> FastAPI:
    """The ASGI app. With ``dispatch`` its backend starts and stops with the app, as
    does ``refresher`` (the background re-render of ``asu-ci serve``) when given."""
    settings.public_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    service = Service(settings, dispatch)
    dispatcher = service.dispatcher

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pruner = retention.PruneLoop(settings, service.finished.forget)
        if dispatcher is not None:
            dispatcher.start()
            pruner.start()
        if refresher is not None:
            refresher.start()
        yield
        pruner.stop()
        if refresher is not None:
            refresher.stop()
        if dispatcher is not None:
            dispatcher.stop()
        service.queue.close()

    app = FastAPI(
        title="asu-ci",
        version=__version__,
        description="Attended SysUpgrade API v1 for OpenWrt: request a custom firmware "
        "image, poll it, download it. Bodies and codes follow the upstream ASU server, "
        "so LuCI, auc, owut and the Firmware Selector work unchanged.",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(EdgeMiddleware, max_body=settings.server.max_body_bytes)

    @app.exception_handler(AsuCiError)
    async def _asu_error(_: Request, exc: AsuCiError) -> JSONResponse:
        service.counters.count(str(exc.http_status))
        headers = {"X-Imagebuilder-Status": "failed" if exc.http_status == 500 else "init"}
        headers["X-Queue-Position"] = "0"
        headers.update(exc.headers())
        return JSONResponse(exc.body(), status_code=exc.http_status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        service.counters.count("400")
        return JSONResponse(invalid_request(exc.errors()).body(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"status": exc.status_code, "detail": str(exc.detail)},
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.error("internal error", exc_info=exc)
        return JSONResponse(
            {"status": 500, "detail": "Internal error; the operator can find it in the log"},
            status_code=500,
        )

    @app.post(
        "/api/v1/build",
        summary="Request a build",
        responses={
            200: {"description": "Built: the full result with images"},
            202: {"description": "Queued or building; poll the request_hash"},
            400: {"description": "Invalid request"},
            413: {"description": "The request body is too large"},
            422: {"description": "Unknown packages (named in X-Unknown-Package)"},
            429: {"description": "Too many new builds from this client"},
            500: {"description": "The build failed"},
            529: {"description": "Too many builds queued"},
        },
    )
    async def build(request: Request, body: Annotated[BuildRequest, Body()]) -> Response:
        """Queue a build, or answer the state of the identical request already known."""
        # A finished request is answered on the event loop; only what needs the
        # disk or the queue goes to a worker thread (the hop costs more than the answer).
        found = service.identify(body)
        data = service.finished.cached(found.hash)
        if data is not None and retention.mark_asked(service.store, found.hash):
            response = service.answer_finished(data)
        else:
            client = request.client.host if request.client else "unknown"
            response = await run_in_threadpool(service.settle, found.request, found.hash, client)
        if found.notes:
            response = _noted(response, found.notes)
        service.counters.count(str(response.status_code))
        return response

    poll_responses: dict[int | str, dict[str, Any]] = {
        200: {"description": "Built: the full result with images"},
        202: {"description": "Queued or building"},
        404: {"description": "Unknown request hash"},
        500: {"description": "The build failed"},
    }

    @app.get("/api/v1/build/{request_hash}", summary="Poll a build", responses=poll_responses)
    async def poll(request_hash: str) -> Response:
        """The current state of a request: 200 built, 202 queued/building, 500 failed."""
        data = service.finished.cached(request_hash)
        if data is not None:
            response = service.answer_finished(data)
        else:
            response = await run_in_threadpool(service.poll, request_hash)
        service.counters.count(str(response.status_code))
        return response

    @app.head(
        "/api/v1/build/{request_hash}",
        summary="Poll a build (headers only)",
        responses=poll_responses,
    )
    async def poll_head(request_hash: str) -> Response:
        """Like GET, for clients that read only ``X-Imagebuilder-Status`` (owut)."""
        return await poll(request_hash)

    @app.get(
        "/api/v1/revision/{version}/{target}/{subtarget}",
        summary="ImageBuilder revision",
        responses={400: {"description": "Unknown version or target"}},
    )
    def revision(version: str, target: str, subtarget: str) -> dict[str, str]:
        """The revision (``version_code``) the ImageBuilder of a target builds."""
        if not (_SEGMENT.match(target) and _SEGMENT.match(subtarget)):
            raise RequestError(f"Unsupported target: {target}/{subtarget}")
        found = service.catalog.revision(version, f"{target}/{subtarget}")
        if found is None:
            raise RequestError(f"Unsupported version or target: {version} {target}/{subtarget}")
        return {"revision": found}

    @app.get("/api/v1/overview", summary="Overview (LuCI 2024+)")
    def overview() -> dict[str, Any]:
        """Latest releases, branches and this server's limits."""
        return service.catalog.overview()

    @app.get("/api/overview", summary="Overview (LuCI 2021-2023)")
    def overview_old() -> dict[str, Any]:
        """The same as ``/api/v1/overview``."""
        return overview()

    @app.get("/api/v1/stats", summary="Queue and build figures")
    def stats() -> dict[str, Any]:
        counts = service.queue.counts()
        return {
            "queue_length": counts["queued"],
            "builds_running": counts["running"],
            "builds_done": counts["done"],
            "builds_failed": counts["failed"],
            "builds_queued_since_start": service.counters.builds_queued,
            "finished_answers_since_start": service.counters.cache_hits,
            "uptime_seconds": int(time.time() - service.counters.started),
            "backend": settings.backend,
            "index": refresher.status() if refresher is not None else {"refresh_seconds": 0},
        }

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics() -> Response:
        counts = service.queue.counts()
        lines = [
            "# HELP asu_ci_queue Requests in the durable queue by state.",
            "# TYPE asu_ci_queue gauge",
            *(f'asu_ci_queue{{state="{state}"}} {n}' for state, n in sorted(counts.items())),
            "# HELP asu_ci_responses_total API answers by HTTP status.",
            "# TYPE asu_ci_responses_total counter",
            *(
                f'asu_ci_responses_total{{code="{code}"}} {n}'
                for code, n in sorted(service.counters.requests.items())
            ),
            "# HELP asu_ci_builds_queued_total New builds queued since start.",
            "# TYPE asu_ci_builds_queued_total counter",
            f"asu_ci_builds_queued_total {service.counters.builds_queued}",
        ]
        return Response("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    @app.get("/docs", include_in_schema=False)
    @app.get("/ui/", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="asu-ci API",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png",
        )

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_static()), name="docs-assets")

    if settings.backend == "github":
        _serve_release_assets(app, settings, service.store, service.queue)
    app.mount("/", StaticFiles(directory=settings.public_dir, html=True), name="public")
    return app


#: How long a file GitHub does not have is answered 404 without asking again.
NEGATIVE_TTL = 60.0
NEGATIVE_CACHE_SIZE = 4096


def _serve_release_assets(
    app: FastAPI, settings: Settings, store: LocalStore, queue: Queue
) -> None:
    """``/store/<hash>/<name>``: the local file, else the release asset, proxied.

    Proxied rather than redirected: GitHub's download host sends no CORS headers,
    and LuCI fetches the image from the browser.

    Anyone can ask for any name, so asking must not cost the endpoint's token
    (5,000 requests an hour, which the builds need): a hash this endpoint has
    neither queued nor mirrored is 404 without asking GitHub, an asset of a
    public repository is streamed from its public download URL (no API
    request), and a miss is remembered for ``NEGATIVE_TTL`` seconds.
    """
    from asu_ci.github import ERRORS, describe
    from asu_ci.publish.releases import ASSET_NAME, Asset, AssetStream, ReleasesStore

    releases = ReleasesStore(settings.github)
    misses: OrderedDict[tuple[str, str], float] = OrderedDict()
    misses_lock = threading.Lock()

    def missed(key: tuple[str, str]) -> bool:
        with misses_lock:
            until = misses.get(key)
            if until is None:
                return False
            if until > time.monotonic():
                return True
            del misses[key]
            return False

    def remember_miss(key: tuple[str, str]) -> None:
        with misses_lock:
            misses[key] = time.monotonic() + NEGATIVE_TTL
            misses.move_to_end(key)
            while len(misses) > NEGATIVE_CACHE_SIZE:
                misses.popitem(last=False)

    @app.api_route("/store/{request_hash}/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def store_file(request: Request, request_hash: str, name: str) -> Response:
        if not is_request_hash(request_hash) or not ASSET_NAME.match(name):
            raise NotFoundError("Not Found")
        local = store.folder(request_hash) / name
        if local.is_file():
            return FileResponse(local)
        absent = NotFoundError(f"No such file in the store: {request_hash}/{name}")
        key = (request_hash, name)
        if missed(key) or (store.build(request_hash) is None and queue.get(request_hash) is None):
            raise absent  # never built or asked for here: GitHub is not asked
        head = request.method == "HEAD"
        found: AssetStream | Asset | None
        try:
            if not releases.is_private():
                found = releases.open_public(request_hash, name, head=head)
            else:
                found = (releases.find_asset if head else releases.open_asset)(request_hash, name)
        except ERRORS as exc:
            raise BackendUnavailableError(
                f"The file is on GitHub, which cannot be read right now ({describe(exc)})"
            ) from None
        if found is None:
            remember_miss(key)
            raise absent
        if isinstance(found, AssetStream):
            headers = {"Content-Length": str(found.size)}
            if head:
                found.close()
                return Response(status_code=200, media_type=found.content_type, headers=headers)
            return StreamingResponse(
                _closing(found.chunks, found.close), media_type=found.content_type, headers=headers
            )
        headers = {"Content-Length": str(found.size)}
        return Response(status_code=200, media_type=found.content_type, headers=headers)


def _closing(chunks: Iterator[bytes], close: Callable[[], None]) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        close()

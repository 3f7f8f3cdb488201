"""The overview answers, the rendered tree (``/json/v1/…``, the index page) and
the store files under ``/store/<hash>/<name>``."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from asu_ci.api.service import service_of
from asu_ci.config import Settings
from asu_ci.dispatch.queue import Queue
from asu_ci.errors import BackendUnavailableError, NotFoundError
from asu_ci.identity.hashing import is_request_hash
from asu_ci.publish.local import LocalStore


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route(
        "/api/v1/overview", overview, methods=["GET"], summary="Overview (LuCI 2024+)"
    )
    routes.add_api_route(
        "/api/overview", overview_old, methods=["GET"], summary="Overview (LuCI 2021-2023)"
    )
    return routes


def overview(request: Request) -> dict[str, Any]:
    """Latest releases, branches and this server's limits."""
    return service_of(request).catalog.overview()


def overview_old(request: Request) -> dict[str, Any]:
    """The same as ``/api/v1/overview``."""
    return overview(request)


def mount_public(app: FastAPI, settings: Settings, store: LocalStore, queue: Queue) -> None:
    """Serve the rendered tree at ``/``; with the GitHub backend, store files that
    are not on this machine come from their release (prebuilds are releases with
    either ``github.store``). Mount it last: it takes every path no route took."""
    if settings.backend == "github":
        _serve_release_assets(app, settings, store, queue)
    app.mount("/", StaticFiles(directory=settings.public_dir, html=True), name="public")


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

"""The overview answers, the rendered tree (``/json/v1/…``, the index page) and
the store files under ``/store/<hash>/<name>``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from asu_ci.api.service import service_of
from asu_ci.config import Settings
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


def mount_public(app: FastAPI, settings: Settings, store: LocalStore) -> None:
    """Serve the rendered tree at ``/``; with the GitHub backend, store files that
    are not on this machine come from their release. Mount it last: it takes
    every path no route took."""
    if settings.backend == "github":
        _serve_release_assets(app, settings, store)
    app.mount("/", StaticFiles(directory=settings.public_dir, html=True), name="public")


def _serve_release_assets(app: FastAPI, settings: Settings, store: LocalStore) -> None:
    """``/store/<hash>/<name>``: the local file, else the release asset, proxied.

    Proxied rather than redirected: GitHub's download host sends no CORS headers,
    and LuCI fetches the image from the browser.
    """
    from asu_ci.github import ERRORS, describe
    from asu_ci.publish.releases import ASSET_NAME, AssetStream, ReleasesStore

    releases = ReleasesStore(settings.github)

    @app.api_route("/store/{request_hash}/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def store_file(request: Request, request_hash: str, name: str) -> Response:
        if not is_request_hash(request_hash) or not ASSET_NAME.match(name):
            raise NotFoundError("Not Found")
        local = store.folder(request_hash) / name
        if local.is_file():
            return FileResponse(local)
        head = request.method == "HEAD"
        try:
            found = (releases.find_asset if head else releases.open_asset)(request_hash, name)
        except ERRORS as exc:
            raise BackendUnavailableError(
                f"The file is on GitHub, which cannot be read right now ({describe(exc)})"
            ) from None
        if found is None:
            raise NotFoundError(f"No such file in the store: {request_hash}/{name}")
        headers = {"Content-Length": str(found.size)}
        if isinstance(found, AssetStream):
            return StreamingResponse(
                _closing(found.chunks, found.close), media_type=found.content_type, headers=headers
            )
        return Response(status_code=200, media_type=found.content_type, headers=headers)


def _closing(chunks: Iterator[bytes], close: Callable[[], None]) -> Iterator[bytes]:
    try:
        yield from chunks
    finally:
        close()

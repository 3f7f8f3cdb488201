"""The thin request endpoint: ASU API v1 over the static tree.

:func:`create_app` wires the parts: the shared :class:`~asu_ci.api.service.Service`
(the flow from a request to an answer), one view module per kind of page under
:mod:`asu_ci.api.views`, the error answers of :mod:`asu_ci.protocol`, and the
backend, the pruner and the index refresher that start and stop with the app.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from asu_ci import __version__
from asu_ci.api.middleware import EdgeMiddleware
from asu_ci.api.service import Service, answer, service_of
from asu_ci.api.views import build, docs, static, stats
from asu_ci.config import Settings
from asu_ci.errors import AsuCiError
from asu_ci.identity.identify import invalid_request
from asu_ci.index.refresh import Refresher
from asu_ci.protocol import ErrorBody, error_body
from asu_ci.publish import retention

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, *, dispatch: bool = True, refresher: Refresher | None = None
) -> FastAPI:
    """The ASGI app. With ``dispatch`` its backend starts and stops with the app, as
    does ``refresher`` (the background re-render of ``asu-ci serve``) when given."""
    settings.public_dir.mkdir(parents=True, exist_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    service = Service(settings, dispatch)
    dispatcher = service.dispatcher  # the one the app starts, whatever replaces it later

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
    app.state.refresher = refresher
    app.add_middleware(EdgeMiddleware, max_body=settings.server.max_body_bytes)
    app.add_exception_handler(AsuCiError, _asu_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _bug)
    for module in (build, static, stats, docs):
        # The views' routes join the app's own router: include_router would put a
        # routing layer of its own in front of them on every request.
        app.router.routes.extend(module.router().routes)
    docs.mount_assets(app)
    static.mount_public(app, settings, service.store, service.queue)
    return app


async def _asu_error(request: Request, exc: AsuCiError) -> JSONResponse:
    service_of(request).metrics.count(exc.http_status)
    return _error_answer(exc)


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    service_of(request).metrics.count(400)
    return _error_answer(invalid_request(exc.errors()))


def _error_answer(exc: AsuCiError) -> JSONResponse:
    """The protocol's body for ``exc``, with the header rule's and its own headers."""
    response = answer(error_body(exc))
    response.headers.update(exc.headers())
    return response


async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    body = ErrorBody(status=exc.status_code, detail=str(exc.detail))
    return JSONResponse(
        body.json_body(), status_code=exc.status_code, headers=getattr(exc, "headers", None)
    )


async def _bug(_: Request, exc: Exception) -> JSONResponse:
    log.error("internal error", exc_info=exc)
    body = ErrorBody(status=500, detail="Internal error; the operator can find it in the log")
    return JSONResponse(body.json_body(), status_code=500)

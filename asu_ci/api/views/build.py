"""``/api/v1/build`` (request and poll) and ``/api/v1/revision``."""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from asu_ci.api.service import service_of
from asu_ci.errors import RequestError
from asu_ci.identity.request import BuildRequest

_SEGMENT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")

_BUILD_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Built: the full result with images"},
    202: {"description": "Queued or building; poll the request_hash"},
    400: {"description": "Invalid request"},
    413: {"description": "The request body is too large"},
    422: {"description": "Unknown packages (named in X-Unknown-Package)"},
    429: {"description": "Too many new builds from this client"},
    500: {"description": "The build failed"},
    529: {"description": "Too many builds queued"},
}
_POLL_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "Built: the full result with images"},
    202: {"description": "Queued or building"},
    404: {"description": "Unknown request hash"},
    500: {"description": "The build failed"},
}


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route(
        "/api/v1/build",
        build,
        methods=["POST"],
        summary="Request a build",
        responses=_BUILD_RESPONSES,
    )
    routes.add_api_route(
        "/api/v1/build/{request_hash}",
        poll,
        methods=["GET"],
        summary="Poll a build",
        responses=_POLL_RESPONSES,
    )
    routes.add_api_route(
        "/api/v1/build/{request_hash}",
        poll_head,
        methods=["HEAD"],
        summary="Poll a build (headers only)",
        responses=_POLL_RESPONSES,
    )
    routes.add_api_route(
        "/api/v1/revision/{version}/{target}/{subtarget}",
        revision,
        methods=["GET"],
        summary="ImageBuilder revision",
        responses={400: {"description": "Unknown version or target"}},
    )
    return routes


async def build(request: Request, body: Annotated[BuildRequest, Body()]) -> Response:
    """Queue a build, or answer the state of the identical request already known."""
    # A finished request is answered on the event loop; only what needs the
    # disk or the queue goes to a worker thread (the hop costs more than the answer).
    service = service_of(request)
    found = service.identify(body)
    data = service.finished.cached(found.hash)
    if data is not None and service.finished.asked(found.hash):
        response = service.answer_finished(data)
    else:
        client = request.client.host if request.client else "unknown"
        response = await run_in_threadpool(service.settle, found.request, found.hash, client)
    if found.notes:
        response = _noted(response, found.notes)
    service.metrics.count(response.status_code)
    return response


async def poll(request: Request, request_hash: str) -> Response:
    """The current state of a request: 200 built, 202 queued/building, 500 failed."""
    service = service_of(request)
    data = service.finished.cached(request_hash)
    if data is not None:
        response = service.answer_finished(data)
    else:
        response = await run_in_threadpool(service.poll, request_hash)
    service.metrics.count(response.status_code)
    return response


async def poll_head(request: Request, request_hash: str) -> Response:
    """Like GET, for clients that read only ``X-Imagebuilder-Status`` (owut)."""
    return await poll(request, request_hash)


def revision(request: Request, version: str, target: str, subtarget: str) -> dict[str, str]:
    """The revision (``version_code``) the ImageBuilder of a target builds."""
    if not (_SEGMENT.match(target) and _SEGMENT.match(subtarget)):
        raise RequestError(f"Unsupported target: {target}/{subtarget}")
    found = service_of(request).catalog.revision(version, f"{target}/{subtarget}")
    if found is None:
        raise RequestError(f"Unsupported version or target: {version} {target}/{subtarget}")
    return {"revision": found}


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

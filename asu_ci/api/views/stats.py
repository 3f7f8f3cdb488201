"""``/api/v1/stats`` (figures as JSON) and ``/metrics`` (Prometheus)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from asu_ci.api.service import service_of


def router() -> APIRouter:
    routes = APIRouter()
    routes.add_api_route("/api/v1/stats", stats, methods=["GET"], summary="Queue and build figures")
    routes.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        summary="Prometheus metrics",
        response_class=Response,
    )
    return routes


def stats(request: Request) -> dict[str, Any]:
    service = service_of(request)
    counts = service.queue.counts()
    refresher = request.app.state.refresher
    return {
        "queue_length": counts["queued"],
        "builds_running": counts["running"],
        "builds_done": counts["done"],
        "builds_failed": counts["failed"],
        "builds_queued_since_start": service.metrics.total("asu_ci_builds_queued"),
        "finished_answers_since_start": service.metrics.total("asu_ci_finished_answers"),
        "uptime_seconds": int(time.time() - service.metrics.started),
        "backend": service.settings.backend,
        "index": refresher.status() if refresher is not None else {"refresh_seconds": 0},
    }


def metrics(request: Request) -> Response:
    registry = service_of(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

"""The ASU response bodies that ``status.json`` holds while a request is alive.

``imagebuilder_status`` only ever takes values that older LuCI builds know
(an unknown one freezes their progress dialog); finer steps of our own are
mapped onto them.
"""

from __future__ import annotations

import time
from typing import Any

from asu_ci.errors import BuildError

#: Values every client knows, in the order a build passes them.
STEPS = (
    "init",
    "download_imagebuilder",
    "unpack_imagebuilder",
    "calculate_packages_hash",
    "building_image",
)


def queued(request_hash: str, position: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "status": 202,
        "request_hash": request_hash,
        "detail": "queued",
        "imagebuilder_status": "init",
    }
    if position is not None:
        body["queue_position"] = position
    return body


def building(request_hash: str, step: str) -> dict[str, Any]:
    if step not in STEPS:
        raise ValueError(f"unknown build step {step!r}")
    return {
        "status": 202,
        "request_hash": request_hash,
        "detail": "started",
        "imagebuilder_status": step,
    }


def failed(request_hash: str, error: BuildError) -> dict[str, Any]:
    body = error.body()
    body["request_hash"] = request_hash
    body["failed_at"] = int(time.time())
    return body


def is_retryable(body: dict[str, Any], retry_after: float, now: float | None = None) -> bool:
    """A failed build may be tried again once ``retry_after`` seconds have passed."""
    if body.get("status") != 500:
        return False
    failed_at = body.get("failed_at")
    if not isinstance(failed_at, int | float):
        return True
    return (time.time() if now is None else now) - failed_at >= retry_after

"""The ASU wire protocol: every answer body a client reads, and the header rule.

This is the one place the shapes of PROTOCOL.md live; the endpoint, the
dispatchers, the build job and the stores only ever build answers from these
models. A request's state is one of three bodies, all of them kept in its
``status.json``:

- :class:`Progress` (202): queued or building;
- :class:`Failed` (500): the build failed;
- :class:`Built` (200): the finished build, also its immutable ``build.json``.

Any other failure is an :class:`ErrorBody` ``{status, detail}``. Every answer
about a build carries ``X-Imagebuilder-Status`` and ``X-Queue-Position``
(owut polls with HEAD and reads only these): :func:`state_headers` is the rule.

``imagebuilder_status`` only ever takes values that older LuCI builds know (an
unknown one freezes their progress dialog); finer steps of our own are mapped
onto them. Stored files may carry keys these models do not name (written by an
older version, or by a future one): they are kept and answered as they are.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from asu_ci.errors import AsuCiError, BuildError

log = logging.getLogger(__name__)

#: The steps a build passes, in order: values every client knows.
Step = Literal[
    "init",
    "download_imagebuilder",
    "unpack_imagebuilder",
    "calculate_packages_hash",
    "building_image",
]
STEPS: tuple[Step, ...] = get_args(Step)


def state_headers(imagebuilder_status: str, queue_position: int = 0) -> dict[str, str]:
    """The two headers every answer about a build carries."""
    return {
        "X-Imagebuilder-Status": imagebuilder_status,
        "X-Queue-Position": str(queue_position),
    }


class _Body(BaseModel):
    """A JSON answer body. Keys a stored file has beyond the model's are kept."""

    model_config = ConfigDict(frozen=True, extra="allow")

    def json_body(self) -> dict[str, Any]:
        """The body as clients see it; an optional key that is None is left out."""
        return self.model_dump(mode="json", exclude_none=True)


class ErrorBody(_Body):
    """Any answer that is not about a build's state: ``{status, detail}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: int
    detail: str

    def headers(self) -> dict[str, str]:
        return state_headers("failed" if self.status == 500 else "init")


class Progress(_Body):
    """202: queued (with ``queue_position``) or building."""

    status: Literal[202] = 202
    request_hash: str
    detail: str
    imagebuilder_status: Step
    queue_position: int | None = None

    @classmethod
    def queued(cls, request_hash: str, position: int | None = None) -> Progress:
        return cls(
            request_hash=request_hash,
            detail="queued",
            imagebuilder_status="init",
            queue_position=position,
        )

    @classmethod
    def building(cls, request_hash: str, step: str) -> Progress:
        """Building, at ``step`` (one of :data:`STEPS`)."""
        if step not in STEPS:
            raise ValueError(f"unknown build step {step!r}")
        return cls.model_validate(
            {"request_hash": request_hash, "detail": "started", "imagebuilder_status": step}
        )

    def placed(self, position: int | None) -> Progress:
        """This body as answered now: a queued request shows its place, others none."""
        if position is None:
            return self.model_copy(update={"queue_position": None})
        return self.model_copy(update={"queue_position": position, "imagebuilder_status": "init"})

    def headers(self) -> dict[str, str]:
        return state_headers(self.imagebuilder_status, self.queue_position or 0)


class Failed(_Body):
    """500: the build failed, with the tails of the ImageBuilder's output."""

    status: Literal[500] = 500
    detail: str
    stdout: str = ""
    stderr: str = ""
    imagebuilder_status: Literal["failed"] = "failed"
    request_hash: str | None = None
    #: Unix time of the failure; a body without it may be tried again at once.
    failed_at: int | None = None

    @classmethod
    def of(cls, request_hash: str | None, error: BuildError) -> Failed:
        """The failure of ``request_hash`` now (without a hash: an answer, not a state)."""
        return cls(
            detail=error.message,
            stdout=error.stdout,
            stderr=error.stderr,
            request_hash=request_hash,
            failed_at=int(time.time()) if request_hash is not None else None,
        )

    def retryable(self, retry_after: float, now: float | None = None) -> bool:
        """The build may be tried again once ``retry_after`` seconds have passed."""
        if self.failed_at is None:
            return True
        return (time.time() if now is None else now) - self.failed_at >= retry_after

    def headers(self) -> dict[str, str]:
        return state_headers("failed")


class Image(BaseModel):
    """One image of a finished build; ``sha256`` is that of the file under ``/store/``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    type: str
    #: Every ImageBuilder since 21.02 names it; auc refuses an image without it.
    filesystem: str | None = None
    sha256: str
    sha256_unsigned: str


class Built(_Body):
    """200: ``build.json``, the ``profiles.json`` fields of the target merged with the
    profile's entry, plus what this build made of it.

    Fields of ``profiles.json`` that are not named here (``source_date_epoch``,
    ``linux_kernel``, …) are kept as the ImageBuilder wrote them.
    """

    # from profiles.json
    metadata_version: int
    target: str
    version_number: str
    version_code: str
    arch_packages: str
    default_packages: list[str]
    titles: list[dict[str, Any]]
    images: list[Image]
    image_prefix: str
    supported_devices: list[str]
    device_packages: list[str]
    # this build
    id: str
    bin_dir: str
    request_hash: str
    build_at: str
    manifest: dict[str, str]
    build_cmd: list[str]
    request: dict[str, Any]
    status: Literal[200]
    detail: Literal["done"]
    imagebuilder_status: Literal["done"]

    @classmethod
    def of(
        cls,
        profile: Mapping[str, Any],
        *,
        images: list[dict[str, Any]],
        profile_id: str,
        request_hash: str,
        build_at: str,
        manifest: dict[str, str],
        build_cmd: list[str],
        request: dict[str, Any],
        **more: Any,
    ) -> Built:
        """``profile`` (the merged ``profiles.json`` fields) with this build's keys;
        ``more`` are keys of our own beyond the protocol's (``reproducibility``, …)."""
        return cls.model_validate(
            {
                **profile,
                "images": images,
                "id": profile_id,
                "bin_dir": request_hash,
                "request_hash": request_hash,
                "build_at": build_at,
                "manifest": manifest,
                "build_cmd": build_cmd,
                "request": request,
                **more,
                "status": 200,
                "detail": "done",
                "imagebuilder_status": "done",
            }
        )

    def json_body(self) -> dict[str, Any]:
        """Exactly the keys given: a null the ImageBuilder wrote stays a null."""
        return self.model_dump(mode="json", exclude_unset=True)

    def headers(self) -> dict[str, str]:
        return state_headers("done")


#: What a request's ``status.json`` holds.
Status = Annotated[Progress | Failed | Built, Field(discriminator="status")]
_STATUS: TypeAdapter[Progress | Failed | Built] = TypeAdapter(Status)


def read_status(data: Mapping[str, Any] | None) -> Progress | Failed | Built | None:
    """A stored ``status.json`` body as its model (None for none).

    One that does not parse (damaged, or from a version that wrote something
    else) reads as a failure that may be retried at once (or, when it names
    its ``failed_at``, after the usual wait), so a new request builds it
    again instead of being stuck on it. A finished build's is never taken for
    a failure: when it does not parse it reads as None, and ``build.json``,
    which is always there beside it, stays the truth.
    """
    if data is None:
        return None
    try:
        return _STATUS.validate_python(data)
    except ValidationError as exc:
        log.warning("unreadable status.json (%s): %s", data.get("request_hash"), exc)
        if data.get("status") == 200:
            return None
        failed_at = data.get("failed_at")
        return Failed(
            detail="The stored state of this request is unreadable; request it again",
            request_hash=str(data["request_hash"]) if data.get("request_hash") else None,
            failed_at=int(failed_at) if isinstance(failed_at, int | float) else None,
        )


def error_body(error: AsuCiError) -> Failed | ErrorBody:
    """The answer to ``error``: a failed build's body, or ``{status, detail}``."""
    if isinstance(error, BuildError):
        return Failed.of(None, error)
    return ErrorBody(status=error.http_status, detail=error.message)

"""The protocol models against PROTOCOL.md (the contract with LuCI, auc, owut and the
Firmware Selector): the keys each body must carry, the values clients know, the
header rule, and stored files of earlier versions still read as they were."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest

from asu_ci.build.job import run_build
from asu_ci.config import Settings
from asu_ci.dispatch.registry import BACKENDS
from asu_ci.errors import (
    AsuCiError,
    BuildError,
    QueueFullError,
    RequestError,
    UnknownPackagesError,
)
from asu_ci.identity.hashing import request_hash
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import normalize
from asu_ci.index.catalog import Catalog
from asu_ci.protocol import (
    STEPS,
    Built,
    ErrorBody,
    Failed,
    Image,
    Progress,
    error_body,
    read_status,
)
from asu_ci.publish.local import LocalStore
from tests.conftest import BUILD_PROFILE, BUILD_TARGET, BUILD_VERSION, BuildWorld
from tests.support.shapes import (
    BUILDING_KEYS,
    BUILT_KEYS,
    ERROR_KEYS,
    FAILED_KEYS,
    IMAGE_KEYS,
    QUEUED_KEYS,
)

HASH = "ab" * 32

#: The imagebuilder_status values older LuCI builds know; any other freezes them.
LUCI_STEPS = {
    "init",
    "download_imagebuilder",
    "unpack_imagebuilder",
    "calculate_packages_hash",
    "building_image",
}


def test_the_models_name_every_key_protocol_md_lists() -> None:
    assert set(Progress.model_fields) == QUEUED_KEYS
    assert set(Failed.model_fields) >= FAILED_KEYS
    assert set(ErrorBody.model_fields) == ERROR_KEYS
    assert set(Built.model_fields) >= BUILT_KEYS
    assert set(Image.model_fields) == IMAGE_KEYS
    required = {name for name, field in Built.model_fields.items() if field.is_required()}
    assert required >= BUILT_KEYS
    # auc refuses an image missing any of these
    assert {n for n, f in Image.model_fields.items() if f.is_required()} >= {
        "name",
        "type",
        "sha256",
    }


def test_steps_are_the_ones_old_luci_knows() -> None:
    assert set(STEPS) == LUCI_STEPS
    assert set(typing.get_args(Progress.model_fields["imagebuilder_status"].annotation)) == (
        LUCI_STEPS
    )
    with pytest.raises(ValueError, match="unknown build step"):
        Progress.building(HASH, "container_setup")


def test_progress_bodies_and_headers() -> None:
    queued = Progress.queued(HASH, 3)
    assert queued.json_body() == {
        "status": 202,
        "request_hash": HASH,
        "detail": "queued",
        "imagebuilder_status": "init",
        "queue_position": 3,
    }
    assert queued.headers() == {"X-Imagebuilder-Status": "init", "X-Queue-Position": "3"}
    building = Progress.building(HASH, "building_image")
    assert set(building.json_body()) == BUILDING_KEYS
    assert building.headers() == {
        "X-Imagebuilder-Status": "building_image",
        "X-Queue-Position": "0",
    }
    # A queued request shows its place and "init"; one that left the queue shows none.
    assert building.placed(5).json_body()["queue_position"] == 5
    assert building.placed(5).imagebuilder_status == "init"
    assert "queue_position" not in queued.placed(None).json_body()


def test_failed_body_headers_and_retry() -> None:
    failed = Failed.of(HASH, BuildError("Image too big", stdout="out", stderr="err"))
    body = failed.json_body()
    assert set(body) == FAILED_KEYS | {"request_hash", "failed_at"}
    assert (body["status"], body["imagebuilder_status"], body["detail"]) == (
        500,
        "failed",
        "Image too big",
    )
    assert failed.headers() == {"X-Imagebuilder-Status": "failed", "X-Queue-Position": "0"}
    assert not failed.retryable(60, now=body["failed_at"] + 59)
    assert failed.retryable(60, now=body["failed_at"] + 60)


@pytest.mark.parametrize(
    ("error", "code", "state"),
    [
        (RequestError("Unsupported profile: x"), 400, "init"),
        (UnknownPackagesError(["a", "b"]), 422, "init"),
        (QueueFullError("full"), 529, "init"),
        (BuildError("broken"), 500, "failed"),
    ],
)
def test_error_answers(error: AsuCiError, code: int, state: str) -> None:
    body = error_body(error)
    shown = body.json_body()
    assert shown["status"] == code
    assert shown["detail"] == error.message
    assert set(shown) == (FAILED_KEYS if code == 500 else ERROR_KEYS)
    assert body.headers()["X-Imagebuilder-Status"] == state


def test_stored_status_files_of_earlier_versions_still_read() -> None:
    # written before failed_at existed: may be retried at once
    old_failure = {
        "status": 500,
        "detail": "broken",
        "stdout": "",
        "stderr": "x",
        "imagebuilder_status": "failed",
        "request_hash": HASH,
    }
    found = read_status(old_failure)
    assert isinstance(found, Failed)
    assert found.retryable(3600)
    assert found.json_body() == old_failure
    queued = {**Progress.queued(HASH, 2).json_body(), "note": "a key of a later version"}
    again = read_status(queued)
    assert isinstance(again, Progress)
    assert again.json_body() == queued
    assert read_status(None) is None
    damaged = read_status({"status": 202, "request_hash": HASH})
    assert isinstance(damaged, Failed)
    assert damaged.retryable(3600)
    # a finished build's status of another shape is never taken for a failure
    assert read_status({"status": 200, "request_hash": HASH}) is None
    # a failure without its detail still waits out the retry time it names
    terse = read_status({"status": 500, "failed_at": 1000})
    assert isinstance(terse, Failed)
    assert not terse.retryable(60, now=1059)


def test_a_real_build_json_is_the_built_model_unchanged(
    build_world: BuildWorld, tmp_path: Path
) -> None:
    settings, catalog = build_world.settings, build_world.catalog
    assert isinstance(settings, Settings) and isinstance(catalog, Catalog)
    raw = {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": BUILD_PROFILE}
    request = normalize(BuildRequest.model_validate(raw), catalog, settings.server)
    store = LocalStore(tmp_path / "store")
    body = run_build(request, settings=settings, store=store, catalog=catalog)
    stored = json.loads((store.folder(request_hash(request)) / "build.json").read_bytes())
    assert stored == body
    assert set(stored) >= BUILT_KEYS
    assert stored["status"] == 200 and stored["detail"] == "done"
    assert all(set(image) >= IMAGE_KEYS for image in stored["images"])
    assert isinstance(stored["titles"], list) and stored["titles"]
    built = Built.model_validate(stored)
    assert built.json_body() == stored  # profiles.json keys beyond the model are kept
    assert built.headers() == {"X-Imagebuilder-Status": "done", "X-Queue-Position": "0"}
    status = read_status(store.status(request_hash(request)))
    assert isinstance(status, Built)
    assert status.json_body() == stored


def test_built_keeps_what_the_imagebuilder_wrote() -> None:
    profile: dict[str, Any] = {
        "metadata_version": 1,
        "target": "ath79/generic",
        "version_number": "23.05.4",
        "version_code": "r24106-10cc5fcd00",
        "arch_packages": "mips_24kc",
        "default_packages": ["base-files"],
        "titles": [{"vendor": "TP-Link", "model": "Archer C7", "variant": "v5"}],
        "images": [],
        "image_prefix": "openwrt-23.05.4-ath79-generic-tplink_archer-c7-v5",
        "supported_devices": ["tplink,archer-c7-v5"],
        "device_packages": [],
        "source_date_epoch": None,
    }
    image = {"name": "x.bin", "type": "sysupgrade", "sha256": "0" * 64}
    built = Built.of(
        profile,
        images=[{**image, "sha256_unsigned": "0" * 64}],
        profile_id="tplink_archer-c7-v5",
        request_hash=HASH,
        build_at="2026-01-01T00:00:00Z",
        manifest={"base-files": "1"},
        build_cmd=["make", "image"],
        request={"version": "23.05.4"},
    )
    body = built.json_body()
    assert body["source_date_epoch"] is None  # a null stays a null
    assert "filesystem" not in body["images"][0]  # an old ImageBuilder's image, as it was
    assert body["bin_dir"] == body["request_hash"] == HASH
    with pytest.raises(ValueError, match="sha256_unsigned"):
        Built.of(
            profile,
            images=[image],
            profile_id="p",
            request_hash=HASH,
            build_at="",
            manifest={},
            build_cmd=[],
            request={},
        )


def test_every_configurable_backend_has_a_factory() -> None:
    backend = Settings.model_fields["backend"].annotation
    assert set(BACKENDS) == set(typing.get_args(backend))

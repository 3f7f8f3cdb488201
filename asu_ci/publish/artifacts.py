"""A run's attested output taken into the endpoint's own store (``github.store: endpoint``).

GitHub allows a repository's ``GITHUB_TOKEN`` 500 content-creating requests an
hour, and a release per build spends nine of them (a draft, the uploads,
publishing, the attestation): one repository publishes about 1,300 builds a
day that way. With ``github.store: endpoint`` a run creates no release. The publish job
of ``build.yml`` checks the build job's images against ``build.json``, attests
them and hands the checked folder on as the run artifact ``attested-<hash>``
(artifacts go through the Actions artifact service, not the REST API). When
the run succeeded, the endpoint lists the run's artifacts and downloads that
one zip with its own token (two requests, neither content-creating), checks it
again and moves it into ``store/<hash>/``; from there it serves the images
itself and the retention rules of the local store apply.

The zip is read as hostile input: its entries must be flat names of the
store's shape (no folders, no links, nothing hidden), the whole is bounded,
``build.json`` must be about the request, and every image it names must match
its sha256. Anything else refuses the output; nothing of it reaches the store.
"""

from __future__ import annotations

import json
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path
from typing import IO, Any

from github.WorkflowRun import WorkflowRun

from asu_ci.publish.local import LocalStore
from asu_ci.publish.releases import (
    ASSET_NAME,
    BUILD_FILE,
    CHUNK,
    MAX_JSON_BYTES,
    STATUS_FILE,
    PublishError,
    ReleasesStore,
    check_images,
)

#: The artifact in which the publish job hands a checked, attested build folder on.
ATTESTED_PREFIX = "attested-"
#: One build's output: a few images of at most a few hundred MB each.
MAX_ARTIFACT_BYTES = 4 << 30
#: Files in one build folder (images, manifest, sha256sums, profiles.json, ...).
MAX_ENTRIES = 64


def artifact_name(request_hash: str) -> str:
    return ATTESTED_PREFIX + request_hash


def take(
    releases: ReleasesStore, run: WorkflowRun, request_hash: str, local: LocalStore
) -> dict[str, Any] | None:
    """Publish run ``run``'s attested output of ``request_hash`` into ``local``.

    Returns its ``build.json``; None when the run has no such artifact (the
    publish job did not get that far, or the artifact expired before the
    endpoint came to it). Raises :class:`PublishError` when the output is
    refused, and GitHub's own errors when it cannot be read now.
    """
    artifact = releases.run_artifact(run, artifact_name(request_hash))
    if artifact is None:
        return None
    if artifact.size > MAX_ARTIFACT_BYTES:
        raise PublishError(f"{artifact.name} is larger than {MAX_ARTIFACT_BYTES} bytes")
    staging = local.staging(request_hash)
    try:
        with tempfile.TemporaryFile(dir=staging) as zipped:
            releases.download_artifact(artifact, zipped, MAX_ARTIFACT_BYTES)
            build = unpack(zipped, staging, request_hash)
        local.publish(request_hash, staging, build)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return build


def unpack(zipped: IO[bytes], into: Path, request_hash: str) -> dict[str, Any]:
    """Unpack a build folder's zip into the empty folder ``into`` and check it.

    Returns the ``build.json`` it holds, which is left out of ``into`` (as is
    ``status.json``): the store writes both after the files they name.
    """
    try:
        archive = zipfile.ZipFile(zipped)
    except zipfile.BadZipFile as exc:
        raise PublishError(f"the output of {request_hash} is not a zip: {exc}") from None
    with archive:
        entries = archive.infolist()
        if len(entries) > MAX_ENTRIES:
            raise PublishError(f"the output of {request_hash} has more than {MAX_ENTRIES} files")
        if sum(info.file_size for info in entries) > MAX_ARTIFACT_BYTES:
            raise PublishError(f"the output of {request_hash} unpacks to too many bytes")
        build: dict[str, Any] | None = None
        for info in entries:
            _check_entry(info, request_hash)
            if info.filename == STATUS_FILE:
                continue
            if info.filename == BUILD_FILE:
                build = _read_build(archive, info, request_hash)
                continue
            _copy(archive, info, into / info.filename)
    if build is None:
        raise PublishError(f"the output of {request_hash} holds no {BUILD_FILE}")
    check_images(into, build, request_hash)
    return build


def _check_entry(info: zipfile.ZipInfo, request_hash: str) -> None:
    mode = info.external_attr >> 16
    if info.is_dir() or stat.S_ISLNK(mode) or not ASSET_NAME.match(info.filename):
        raise PublishError(
            f"the output of {request_hash} holds {info.filename[:80]!r}, "
            "which is not a file name a build writes"
        )


def _read_build(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, request_hash: str
) -> dict[str, Any]:
    if info.file_size > MAX_JSON_BYTES:
        raise PublishError(f"{BUILD_FILE} of {request_hash} is larger than {MAX_JSON_BYTES} bytes")
    with archive.open(info) as handle:
        text = handle.read(MAX_JSON_BYTES + 1)
    try:
        build = json.loads(text)
    except ValueError:
        raise PublishError(f"{BUILD_FILE} of {request_hash} is not JSON") from None
    if not isinstance(build, dict) or build.get("request_hash") != request_hash:
        raise PublishError(f"{BUILD_FILE} in the output is not about request {request_hash}")
    return build


def _copy(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path) -> None:
    """One entry to ``path``, never more bytes than the entry declares."""
    left = info.file_size
    try:
        target_file = path.open("xb")
    except FileExistsError:
        raise PublishError(f"the output holds {info.filename} twice") from None
    with archive.open(info) as source, target_file as target:
        while chunk := source.read(min(CHUNK, left + 1)):
            left -= len(chunk)
            if left < 0:
                raise PublishError(f"{info.filename} is longer than its zip entry says")
            target.write(chunk)

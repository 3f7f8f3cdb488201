"""GitHub Releases as the store of the ``github`` backend.

One release per request, tagged ``build-<hash>``. Its assets are the files of
the local ``store/<hash>/`` folder: the images, ``sha256sums``, the manifest,
``profiles.json``, then ``build.json`` and last ``status.json``. A release is
*complete* when it has ``build.json``: every other file was uploaded before it,
so a reader that finds ``build.json`` finds everything it names.

Publishing is idempotent, so a re-run, a retried request or two jobs racing
on one hash never duplicate anything:

- a build is published as a *draft* first: every asset is uploaded to it,
  then it is published in one request. A repository with immutable releases
  refuses uploads to a published release and burns its tag, so nothing is
  added after publishing. Publishing answers 422 ``already_exists`` when
  another job published the tag first: that release is used and the draft
  deleted;
- a job that dies after making its draft (cancelled, timed out, runner lost)
  leaves it behind, and GitHub's lookup by tag never shows a draft. So before
  making one, the store reads the newest page of the release listing (one
  request; a token that can push sees drafts there) and carries on with the
  newest draft of the tag: what is uploaded already is kept, the rest is
  uploaded, then it is published. Other drafts of the tag on that page are
  deleted once it is published. Drafts nobody comes back for (the build was
  never retried, or the listing has moved past them) are removed by
  :func:`prune_drafts` (``asu-ci release prune-drafts``), which leaves any
  draft younger than a publish job's lifetime alone;
- a failed build publishes nothing: a release would take the tag, and with
  immutable releases no retry could ever publish there. Its report reaches
  the endpoint as the run's artifact (:meth:`ReleasesStore.run_report`);
- a published release without ``build.json`` (one an older asu-ci left for a
  failure, or written before drafts) is filled in where it stands;
- an asset that already exists with the same bytes (GitHub's ``digest``, the
  size only where GitHub names no digest) is skipped; one with other bytes, or
  left half-uploaded (state other than ``uploaded``), is replaced; a 422
  ``already_exists`` on upload is checked the same way;
- a complete release is never touched again.

Content-creating requests (a release, an upload, publishing) are paced to
GitHub's 80 a minute and 500 an hour (:class:`asu_ci.github.ContentPace`).

The JSON API goes through PyGithub. Uploads and downloads use a
:class:`asu_ci.http.Session` instead, because PyGithub talks to another host
(``uploads.github.com``, the object storage a download redirects to) without
any timeout. Redirects to another host drop the ``Authorization`` header.

The client, the token and the telling apart of failures are
:mod:`asu_ci.github`'s. With ``attempts > 1`` (what a CI job uses) the store
waits out rate limits and transient errors itself, within ``max_wait`` seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import mimetypes
import re
import threading
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import github
import requests
from github.GitRelease import GitRelease
from github.GitReleaseAsset import GitReleaseAsset
from github.Repository import Repository
from github.WorkflowRun import WorkflowRun

from asu_ci import fsutil
from asu_ci.config import GitHub
from asu_ci.errors import AsuCiError, UsageError
from asu_ci.github import (
    ERRORS,
    ContentPace,
    Pace,
    already_exists,
    api_error,
    connect,
    describe,
    repository_name,
    retrying,
    token_from_env,
)
from asu_ci.http import Session
from asu_ci.identity.hashing import is_request_hash
from asu_ci.protocol import Built, Failed, Progress, read_status
from asu_ci.publish.local import LocalStore

log = logging.getLogger(__name__)

TAG_PREFIX = "build-"
BUILD_FILE = "build.json"
STATUS_FILE = "status.json"
#: The artifact in which the build job hands its store folder on (a failure's status.json).
ARTIFACT_PREFIX = "store-"
#: build.json and status.json are small; anything bigger is not ours.
MAX_JSON_BYTES = 16 << 20
CHUNK = 1 << 16
#: Asset names as ``asu-ci build`` writes them (and GitHub keeps unchanged).
ASSET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
#: Releases per page of the listing (GitHub's most) and the pages it serves at all:
#: past the first 1,000 releases it answers 422.
PAGE_SIZE = 100
LISTED_PAGES = 10

T = TypeVar("T")


class PublishError(AsuCiError):
    """GitHub did not accept a release or an asset the way it should have."""

    exit_code = 3
    http_status = 502


@dataclass(frozen=True)
class Asset:
    """What the store needs to know about one release asset."""

    id: int
    name: str
    size: int
    state: str
    url: str
    browser_download_url: str
    content_type: str
    #: ``sha256:<hex>`` as GitHub computed it, or None where GitHub names none.
    digest: str | None = None


@dataclass(frozen=True)
class RunArtifact:
    """One artifact of a workflow run: its name, its zip's API URL and size."""

    name: str
    url: str
    size: int


@dataclass
class AssetStream:
    """An open download: its length, its type and its bytes, once."""

    size: int
    content_type: str
    chunks: Iterator[bytes]
    close: Callable[[], None]


def tag_of(request_hash: str) -> str:
    if not is_request_hash(request_hash):
        raise ValueError("not a request hash")
    return TAG_PREFIX + request_hash


# -- the store -----------------------------------------------------------------------------


class ReleasesStore:
    """Implements :class:`~asu_ci.publish.base.Store` on the releases of one repository."""

    def __init__(
        self,
        cfg: GitHub,
        *,
        environ: Mapping[str, str] | None = None,
        pace: Pace | None = None,
        attempts: int = 1,
        max_wait: float = 300.0,
        cache_size: int = 1024,
    ) -> None:
        self.cfg = cfg
        self.attempts = max(1, attempts)
        self.max_wait = max_wait
        self.github = connect(cfg, environ=environ, pace=pace)
        self.repo: Repository = self.github.get_repo(repository_name(cfg))
        self._token = token_from_env(cfg, environ)
        self._http = Session(timeout=(cfg.timeout_seconds, cfg.timeout_seconds), retries=2)
        self._lock = threading.RLock()
        self._complete: OrderedDict[str, dict[str, Asset]] = OrderedDict()
        self._cache_size = cache_size
        self._web: str | None = None
        self._private: bool | None = None
        self.content = ContentPace()

    def close(self) -> None:
        self._http.close()
        self.github.close()

    # -- retries -------------------------------------------------------------

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        return retrying(what, call, attempts=self.attempts, max_wait=self.max_wait)

    # -- reading -------------------------------------------------------------

    def release(self, request_hash: str) -> GitRelease | None:
        """The published release of a request, or None."""
        tag = tag_of(request_hash)

        def get() -> GitRelease | None:
            try:
                with self._lock:
                    return self.repo.get_release(tag)
            except github.UnknownObjectException:
                return None

        return self._retrying(f"looking up release {tag}", get)

    def _assets_of(self, release: GitRelease) -> dict[str, Asset]:
        def listing() -> dict[str, Asset]:
            with self._lock:
                return {a.name: _asset(a) for a in release.get_assets()}

        return self._retrying(f"listing the assets of {release.tag_name}", listing)

    def assets(self, request_hash: str) -> dict[str, Asset] | None:
        """The assets of a request's release (None: no release). Complete ones are cached."""
        with self._lock:
            cached = self._complete.get(request_hash)
            if cached is not None:
                self._complete.move_to_end(request_hash)
                return cached
        release = self.release(request_hash)
        if release is None:
            return None
        found = self._assets_of(release)
        if _uploaded(found.get(BUILD_FILE)):
            with self._lock:
                self._complete[request_hash] = found
                while len(self._complete) > self._cache_size:
                    self._complete.popitem(last=False)
        return found

    def is_complete(self, request_hash: str) -> bool:
        return _uploaded((self.assets(request_hash) or {}).get(BUILD_FILE))

    def json_file(self, request_hash: str, name: str) -> dict[str, Any] | None:
        """``build.json`` or ``status.json`` of a request's release, when it is about it."""
        asset = (self.assets(request_hash) or {}).get(name)
        if not _uploaded(asset):
            return None
        assert asset is not None
        return self.read_json(request_hash, asset)

    def read_json(self, request_hash: str, asset: Asset) -> dict[str, Any] | None:
        """The JSON body of an asset, when it is an object about ``request_hash``."""
        data = self._retrying(f"downloading {asset.name}", lambda: self._fetch(asset))
        return self._about(request_hash, asset.name, data)

    def _about(self, request_hash: str, name: str, data: bytes) -> dict[str, Any] | None:
        try:
            body = json.loads(data)
        except ValueError:
            log.warning("release %s: %s is not JSON", tag_of(request_hash), name)
            return None
        if not isinstance(body, dict) or body.get("request_hash") != request_hash:
            log.warning("release %s: %s is about another request", tag_of(request_hash), name)
            return None
        return body

    def build_tags(self) -> list[str]:
        """Hashes of every tag ``build-<hash>`` of the repository.

        The git refs API lists every tag in one answer; the release listing
        would stop at GitHub's 1,000 (the next page is a 422). A tag is made
        when its release is published and outlives a deleted release.
        """
        prefix = "refs/tags/" + TAG_PREFIX

        def listing() -> list[str]:
            with self._lock:
                refs = self.repo.get_git_matching_refs("tags/" + TAG_PREFIX)
                names = [ref.ref.removeprefix(prefix) for ref in refs if ref.ref.startswith(prefix)]
            return [name for name in names if is_request_hash(name)]

        return self._retrying("listing the build tags", listing)

    def release_page(self, page: int) -> list[GitRelease]:
        """One page of the release listing, newest first (``page`` counts from 0).

        Drafts are in it for a token that can push (``contents: write``).
        """

        def listing() -> list[GitRelease]:
            with self._lock:
                return list(self.repo.get_releases().get_page(page))

        return self._retrying(f"listing releases (page {page + 1})", listing)

    def drafts(self, request_hash: str) -> list[GitRelease]:
        """Drafts of the request's tag among the newest releases, newest first (one request)."""
        tag = tag_of(request_hash)
        return [r for r in self.release_page(0) if r.draft and r.tag_name == tag]

    def delete_draft(self, draft: GitRelease) -> None:
        """Delete a draft release with its assets (one gone already is fine)."""
        if not draft.draft:
            raise PublishError(f"release {draft.id} ({draft.tag_name}) is published, not a draft")

        def delete() -> None:
            try:
                with self._lock:
                    draft.delete_release()
            except github.UnknownObjectException:
                pass  # gone already: what we wanted

        self._retrying(f"deleting draft {draft.id} of {draft.tag_name}", delete)

    def download_url(self, request_hash: str, name: str) -> str:
        """An asset's public download URL (``browser_download_url``), made without a request.

        The repository's web address is read once (one API request for the
        life of the store); the rest follows GitHub's fixed pattern.
        """
        with self._lock:
            if self._web is None:
                self._web = self.repo.html_url.rstrip("/")
            web = self._web
        return f"{web}/releases/download/{tag_of(request_hash)}/{name}"

    def is_private(self) -> bool:
        """A private repository's downloads need the token (and cost API requests)."""
        with self._lock:
            if self._private is None:
                self._private = bool(self.repo.private)
            return self._private

    def open_public(
        self, request_hash: str, name: str, *, head: bool = False
    ) -> AssetStream | None:
        """Start downloading an asset by its public URL: no API request, no token sent.

        GitHub answers with a redirect to its object storage, another host;
        no credential goes there (none is sent at all). None: no such asset
        in a published release (or its upload never finished).
        """
        if not ASSET_NAME.match(name):
            return None
        response = self._http.request(
            "HEAD" if head else "GET", self.download_url(request_hash, name), stream=True
        )
        if response.status_code == 404:
            response.close()
            return None
        if response.status_code != 200:
            response.close()
            raise api_error(response)
        length = response.headers.get("Content-Length", "")
        return AssetStream(
            size=int(length) if length.isdigit() else 0,
            content_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
            chunks=iter(()) if head else response.iter_content(CHUNK),
            close=response.close,
        )

    def public_build(self, request_hash: str) -> dict[str, Any] | None:
        """``build.json`` by its public download URL: no API request, no token.

        None when the release has no ``build.json`` (not complete, or a failure).
        """
        url = self.download_url(request_hash, BUILD_FILE)

        def download() -> bytes | None:
            with self._http.get(url, stream=True) as response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    raise api_error(response)
                return _read_json_bytes(response, BUILD_FILE)

        data = self._retrying(f"downloading {BUILD_FILE} of {tag_of(request_hash)}", download)
        return None if data is None else self._about(request_hash, BUILD_FILE, data)

    def build(self, request_hash: str) -> dict[str, Any] | None:
        return self.json_file(request_hash, BUILD_FILE)

    def status(self, request_hash: str) -> dict[str, Any] | None:
        return self.build(request_hash) or self.json_file(request_hash, STATUS_FILE)

    def run_artifact(self, run: WorkflowRun, name: str) -> RunArtifact | None:
        """The artifact ``name`` of a run (one listing request), or None when the run
        has none by that name or it expired."""

        def find() -> RunArtifact | None:
            with self._lock:
                for artifact in run.get_artifacts():
                    if artifact.name == name and not artifact.expired:
                        return RunArtifact(
                            name, artifact.archive_download_url, artifact.size_in_bytes
                        )
            return None

        return self._retrying(f"listing the artifacts of run {run.id}", find)

    def download_artifact(self, artifact: RunArtifact, into: BinaryIO, limit: int) -> None:
        """Write an artifact's zip into ``into``; more than ``limit`` bytes is refused.

        GitHub redirects the download to its object storage, another host, to
        which the token is not sent. A retry starts ``into`` over.
        """

        def download() -> None:
            into.seek(0)
            into.truncate()
            headers = self._auth("application/vnd.github+json")
            with self._http.get(artifact.url, headers=headers, stream=True) as response:
                if response.status_code != 200:
                    raise api_error(response)
                written = 0
                for chunk in response.iter_content(CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise PublishError(f"artifact {artifact.name} is larger than {limit} bytes")
                    into.write(chunk)

        self._retrying(f"downloading artifact {artifact.name}", download)

    def run_report(self, run: WorkflowRun, request_hash: str) -> dict[str, Any] | None:
        """The failure report (``status.json``) a run's build job left in its artifact.

        A failed build publishes no release (that would take the tag
        ``build-<hash>``, for good with immutable releases): the build job
        hands its store folder on as the artifact ``store-<hash>``, and this
        reads ``status.json`` from it. None when the run has no such artifact
        (it failed before building, or the artifact expired), when the
        artifact is too big to be a report (it holds images), or when the
        file is not about ``request_hash``.
        """
        artifact = self.run_artifact(run, ARTIFACT_PREFIX + request_hash)
        if artifact is None:
            return None
        if artifact.size > MAX_JSON_BYTES:
            log.warning("run %s: artifact %s is too big for a report", run.id, artifact.name)
            return None
        data = io.BytesIO()
        self.download_artifact(artifact, data, MAX_JSON_BYTES)
        try:
            with zipfile.ZipFile(data) as archive:
                info = archive.getinfo(STATUS_FILE)
                if info.file_size > MAX_JSON_BYTES:
                    return None
                with archive.open(info) as handle:
                    text = handle.read(MAX_JSON_BYTES + 1)
        except (KeyError, zipfile.BadZipFile):
            log.warning("run %s: %s holds no readable %s", run.id, artifact.name, STATUS_FILE)
            return None
        return self._about(request_hash, STATUS_FILE, text)

    def _auth(self, accept: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": accept}

    def _fetch(self, asset: Asset) -> bytes:
        with self._http.get(
            asset.url, headers=self._auth("application/octet-stream"), stream=True
        ) as response:
            if response.status_code != 200:
                raise api_error(response)
            return _read_json_bytes(response, asset.name)

    def find_asset(self, request_hash: str, name: str) -> Asset | None:
        """One uploaded asset of a request's release, or None."""
        if not ASSET_NAME.match(name):
            return None
        asset = (self.assets(request_hash) or {}).get(name)
        return asset if _uploaded(asset) else None

    def open_asset(self, request_hash: str, name: str) -> AssetStream | None:
        """Start downloading one asset (None: no such release or asset)."""
        asset = self.find_asset(request_hash, name)
        if asset is None:
            return None
        response = self._http.get(
            asset.url, headers=self._auth("application/octet-stream"), stream=True
        )
        if response.status_code != 200:
            response.close()
            raise api_error(response)
        length = response.headers.get("Content-Length", "")
        return AssetStream(
            size=int(length) if length.isdigit() else asset.size,
            content_type=asset.content_type,
            chunks=response.iter_content(CHUNK),
            close=response.close,
        )

    # -- writing -------------------------------------------------------------

    def ensure_release(self, request_hash: str, *, draft: bool = False) -> GitRelease:
        """The request's published release, else a new one (a draft with ``draft``).

        Created once even when jobs race: a 422 ``already_exists`` means another
        job published the tag first, and its release is used.
        """
        found = self.release(request_hash)
        if found is not None:
            return found
        tag = tag_of(request_hash)

        def create() -> GitRelease:
            try:
                self.content.wait()
                with self._lock:
                    return self.repo.create_git_release(
                        tag,
                        name=f"build {request_hash[:12]}",
                        message=f"asu-ci build of request {request_hash}",
                        draft=draft,
                        target_commitish=self.cfg.ref,
                        make_latest="false",
                    )
            except github.GithubException as exc:
                if not already_exists(exc):
                    raise
            existing = self.release(request_hash)
            if existing is None:
                raise PublishError(f"GitHub says release {tag} exists but does not show it")
            return existing

        return self._retrying(f"creating release {tag}", create)

    def _publish_draft(self, request_hash: str, draft: GitRelease) -> None:
        """Publish a complete draft; when another job published the tag first, drop ours.

        A 422 ``already_exists``: another job published the tag from its own
        draft. Another 422 when the tag's published release is this very
        draft: a job carrying on with the same draft published it first
        (GitHub refuses to edit a published immutable release).
        """

        def publish() -> None:
            try:
                self.content.wait()
                with self._lock:
                    draft.update_release(
                        name=f"build {request_hash[:12]}",
                        message=f"asu-ci build of request {request_hash}",
                        draft=False,
                        make_latest="false",
                    )
            except github.GithubException as exc:
                if not already_exists(exc):
                    if exc.status != 422 or not self._published(request_hash, draft):
                        raise
                    return
                log.info("%s was published by another job: its draft is deleted", draft.tag_name)
                with self._lock:
                    draft.delete_release()

        self._retrying(f"publishing release {draft.tag_name}", publish)

    def _published(self, request_hash: str, draft: GitRelease) -> bool:
        """Whether the request's published release is ``draft`` itself."""
        found = self.release(request_hash)
        return found is not None and found.id == draft.id

    def _drop_leftovers(self, leftovers: list[GitRelease]) -> None:
        """Delete other drafts of a tag just published; a failure here is for prune-drafts."""
        for draft in leftovers:
            try:
                self.delete_draft(draft)
            except ERRORS as exc:
                log.warning(
                    "draft %s of %s stays (asu-ci release prune-drafts removes it): %s",
                    draft.id,
                    draft.tag_name,
                    describe(exc),
                )
            else:
                log.info("deleted draft %s of %s, left by an earlier job", draft.id, draft.tag_name)

    def publish(self, request_hash: str, files: Path, build: dict[str, Any]) -> None:
        """Upload every file of ``files``, then ``build.json``, then ``status.json``.

        Carries on with a draft an interrupted job left for the tag; makes a
        new draft only when there is none.
        """
        if build.get("request_hash") != request_hash:
            raise PublishError(f"build.json in {files} is not about request {request_hash}")
        release = self.release(request_hash)
        leftovers: list[GitRelease] = []
        if release is None:
            found = self.drafts(request_hash)
            if found:
                release, leftovers = found[0], found[1:]
                existing = {a.name: _asset(a) for a in release.assets}
                log.info("carrying on with draft %s of %s", release.id, release.tag_name)
            else:
                release = self.ensure_release(request_hash, draft=True)
                existing = {} if release.draft else self._assets_of(release)
        else:
            existing = self._assets_of(release)
        if not release.draft and _uploaded(existing.get(BUILD_FILE)):
            log.info("release %s is complete already", release.tag_name)
            return
        for path in sorted(files.iterdir()):
            name = path.name
            if name in (BUILD_FILE, STATUS_FILE) or not path.is_file() or path.is_symlink():
                continue
            if not ASSET_NAME.match(name):
                raise PublishError(f"{path}: a name GitHub would change; rename the file")
            self._upload(release, existing, name, path)
        payload = fsutil.dumps(build)
        self._upload(release, existing, BUILD_FILE, payload)
        self._upload(release, existing, STATUS_FILE, payload)
        if release.draft:
            self._publish_draft(request_hash, release)
            self._drop_leftovers(leftovers)
        with self._lock:
            self._complete.pop(request_hash, None)

    def write_status(self, request_hash: str, body: Progress | Failed | Built) -> None:
        """Replace ``status.json`` of the release (a failure's detail and output tails)."""
        release = self.ensure_release(request_hash)
        data = fsutil.dumps(body.json_body())
        self._replace(release, self._assets_of(release), STATUS_FILE, data)

    def _replace(
        self, release: GitRelease, existing: dict[str, Asset], name: str, data: bytes
    ) -> None:
        old = existing.get(name)
        if old is not None:
            self._delete(release, old)
            existing.pop(name, None)
        self._upload(release, existing, name, data)

    def _delete(self, release: GitRelease, asset: Asset) -> None:
        def delete() -> None:
            try:
                with self._lock:
                    self.repo.get_release_asset(asset.id).delete_asset()
            except github.UnknownObjectException:
                pass  # gone already: what we wanted

        self._retrying(f"deleting {asset.name} of {release.tag_name}", delete)

    def _upload(
        self, release: GitRelease, existing: dict[str, Asset], name: str, source: Path | bytes
    ) -> None:
        size = source.stat().st_size if isinstance(source, Path) else len(source)
        digest = _sha256(source)
        old = existing.get(name)
        if old is not None and _same(old, size, digest):
            log.info("%s of %s is there already", name, release.tag_name)
            return
        if old is not None:
            self._delete(release, old)
        url = release.upload_url.split("{", 1)[0]
        headers = {
            **self._auth("application/vnd.github+json"),
            "Content-Type": mimetypes.guess_type(name)[0] or "application/octet-stream",
            "Content-Length": str(size),
        }

        def send() -> requests.Response:
            if isinstance(source, bytes):
                return self._http.post(url, params={"name": name}, data=source, headers=headers)
            with source.open("rb") as body:
                return self._http.post(url, params={"name": name}, data=body, headers=headers)

        def post() -> None:
            for _ in range(2):
                self.content.wait()
                response = send()
                if response.status_code == 201:
                    return
                error = api_error(response)
                if not already_exists(error):
                    raise error
                # An earlier attempt whose answer was lost, or another job: look at what is there.
                there = self._assets_of(release).get(name)
                if there is None or _same(there, size, digest):
                    return
                self._delete(release, there)  # half-uploaded or other bytes: replace it
            raise PublishError(f"{name} of {release.tag_name} could not be replaced; try again")

        self._retrying(f"uploading {name} to {release.tag_name}", post)
        log.info("uploaded %s to %s (%d bytes)", name, release.tag_name, size)


def _read_json_bytes(response: requests.Response, name: str) -> bytes:
    data = bytearray()
    for chunk in response.iter_content(CHUNK):
        data += chunk
        if len(data) > MAX_JSON_BYTES:
            raise PublishError(f"{name} is larger than {MAX_JSON_BYTES} bytes")
    return bytes(data)


def _asset(item: GitReleaseAsset) -> Asset:
    return Asset(
        id=item.id,
        name=item.name,
        size=item.size,
        state=item.state,
        url=item.url,
        browser_download_url=item.browser_download_url,
        content_type=item.content_type or "application/octet-stream",
        digest=item.digest or None,
    )


def _sha256(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        return "sha256:" + hashlib.sha256(source).hexdigest()
    with source.open("rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def _same(asset: Asset, size: int, digest: str) -> bool:
    """An uploaded asset with these bytes: GitHub's digest, or the size where it has none."""
    if not _uploaded(asset):
        return False
    if asset.digest:
        return asset.digest == digest
    return asset.size == size


def _uploaded(asset: Asset | None) -> bool:
    return asset is not None and asset.state == "uploaded"


# -- between the local store and the releases -----------------------------------------------


def built_here(local: LocalStore) -> list[str]:
    """Hashes of local store folders a build left here: images, or a failure to report.

    Folders mirrored from releases hold only build.json and status.json.
    """
    found: list[str] = []
    if not local.root.is_dir():
        return found
    for folder in sorted(local.root.iterdir()):
        if not folder.is_dir() or not is_request_hash(folder.name):
            continue
        names = {p.name for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}
        failed = isinstance(read_status(local.status(folder.name)), Failed)
        if names - {BUILD_FILE, STATUS_FILE} or failed:
            found.append(folder.name)
    return found


def check_images(folder: Path, build: Mapping[str, Any], request_hash: str) -> int:
    """Check every image ``build`` names against its sha256 in ``folder``; the count.

    An image that is missing, altered or named badly raises :class:`PublishError`.
    """
    if build.get("request_hash") != request_hash:
        raise PublishError(f"{folder} has no build.json about request {request_hash}")
    images = build.get("images")
    if not isinstance(images, list) or not images:
        raise PublishError(f"build.json of {request_hash} names no images")
    named: set[str] = set()
    for image in images:
        name = image.get("name") if isinstance(image, dict) else None
        expected = image.get("sha256") if isinstance(image, dict) else None
        if not isinstance(name, str) or not ASSET_NAME.match(name) or not isinstance(expected, str):
            raise PublishError(f"build.json of {request_hash} names an image badly: {image!r}")
        path = folder / name
        if not path.is_file() or path.is_symlink():
            raise PublishError(f"{name} named by build.json is not in {folder}")
        if _sha256(path) != "sha256:" + expected:
            raise PublishError(f"{name} does not match the sha256 build.json names")
        named.add(name)
    return len(named)


def verify_folder(local: LocalStore, request_hash: str, attestation: str | None = None) -> int:
    """Check every image of a build folder against the sha256 its build.json names.

    The publishing job runs this on what the build job (which ran ``make``
    with the user's packages and held no write token) handed over, before it
    creates the release: an image that is missing, altered or not named by
    build.json stops it. ``attestation`` (the URL of the artifact
    attestation made for these images) is written into build.json. Returns
    the number of images checked.
    """
    folder = local.folder(request_hash)
    build = local.build(request_hash)
    if build is None:
        raise PublishError(f"{folder} has no build.json about request {request_hash}")
    count = check_images(folder, build, request_hash)
    if attestation is not None:
        build["attestation"] = attestation
        fsutil.write_json(folder / BUILD_FILE, build)
    return count


def publish_folder(releases: ReleasesStore, local: LocalStore, request_hash: str) -> str:
    """Publish one local store folder to its release; says what was done."""
    build = local.build(request_hash)
    if build is not None:
        if releases.is_complete(request_hash):
            return "published already"
        releases.publish(request_hash, local.folder(request_hash), build)
        return "published"
    status = read_status(local.status(request_hash))
    if isinstance(status, Failed):
        # No release for a failure: it would take the tag build-<hash> (for good with
        # immutable releases) from the retry that succeeds. The endpoint reads the
        # report from the run's artifact instead (ReleasesStore.run_report).
        return "failed: nothing published"
    raise UsageError(
        f"nothing to publish for {request_hash}: {local.folder(request_hash)} has neither "
        "build.json nor a failed status.json (did the build run with this request?)"
    )


@dataclass
class DraftSweep:
    """What :func:`prune_drafts` saw: old drafts of build tags, and how much it looked at."""

    #: (tag, release id, created_at) of each draft deleted (or, dry, to delete), newest first.
    old: list[tuple[str, int, datetime]] = field(default_factory=list)
    #: Drafts of build tags too young to touch: a publish job may still be at them.
    young: int = 0
    #: Releases listed (drafts and published).
    listed: int = 0
    #: True when the listing went on past the pages GitHub serves (the first 1,000 releases).
    cut_off: bool = False
    #: When the oldest release listed was created: how far back the sweep sees.
    reach: datetime | None = None


def prune_drafts(
    releases: ReleasesStore,
    *,
    older_than: timedelta,
    dry_run: bool = False,
    on_draft: Callable[[str, int, datetime], None] | None = None,
) -> DraftSweep:
    """Delete drafts ``build-<hash>`` created more than ``older_than`` ago.

    Reads the release listing newest first, at most :data:`LISTED_PAGES`
    pages of :data:`PAGE_SIZE` (all GitHub serves), before deleting anything
    (a deletion moves the later pages up). The listing is no manifest of the
    builds (the ``build-*`` tags are): it is the only place drafts show, and
    only the newest 1,000 releases are in it, so the sweep must run while a
    leftover draft is still among them. ``pages.yml`` runs it hourly: at the
    releases store's ceiling (about 1,333 builds a day) 1,000 releases span
    some 18 hours, and every draft is listed while between ``older_than`` and
    that age. ``reach`` says how far back a sweep saw. Published releases and drafts of
    any other tag are never touched. ``on_draft`` hears of each old draft
    once it is deleted (dry: once it is found). A failure on GitHub's side
    is a :class:`PublishError`.
    """
    clock = datetime.now(UTC)
    sweep = DraftSweep()
    old: list[GitRelease] = []
    try:
        for page in range(LISTED_PAGES):
            listed = releases.release_page(page)
            sweep.listed += len(listed)
            for release in listed:
                if sweep.reach is None or release.created_at < sweep.reach:
                    sweep.reach = release.created_at
                if not release.draft or not _build_tag(release.tag_name):
                    continue
                if clock - release.created_at < older_than:
                    sweep.young += 1
                else:
                    old.append(release)
            if len(listed) < PAGE_SIZE:
                break
        else:
            sweep.cut_off = True
        for release in old:
            if not dry_run:
                releases.delete_draft(release)
            sweep.old.append((release.tag_name, release.id, release.created_at))
            if on_draft is not None:
                on_draft(release.tag_name, release.id, release.created_at)
    except ERRORS as exc:
        raise PublishError(f"sweeping drafts: {describe(exc)}") from exc
    return sweep


def _build_tag(tag: str) -> bool:
    return tag.startswith(TAG_PREFIX) and is_request_hash(tag[len(TAG_PREFIX) :])


def pull(releases: ReleasesStore, local: LocalStore, request_hash: str) -> bool:
    """Mirror a complete release into the local store; False when it is not published."""
    build = releases.build(request_hash)
    if build is None:
        return False
    if local.build(request_hash) is None:
        local.publish(request_hash, local.staging(request_hash), build)
    return True


def pull_all(releases: ReleasesStore, local: LocalStore) -> tuple[int, int]:
    """Mirror every complete release not mirrored yet: (mirrored now, complete in all).

    Which releases there are comes from the tags ``build-<hash>`` (one API
    request for all of them, however many); a hash the local store holds
    already costs nothing more (build.json never changes), any other one the
    download of its build.json by the public URL, which uses no API quota.

    This is the copy GitHub Pages serves, which holds no images: each image
    entry of its build.json gets ``url``, the image's public release download
    URL (made without a request), so a reader of the Pages copy finds the file.
    """
    mirrored = complete = 0
    for request_hash in releases.build_tags():
        if local.build(request_hash) is None:
            build = releases.public_build(request_hash)
            if build is None:
                continue
            _link_images(releases, request_hash, build)
            local.publish(request_hash, local.staging(request_hash), build)
            mirrored += 1
        complete += 1
    return mirrored, complete


def _link_images(releases: ReleasesStore, request_hash: str, build: dict[str, Any]) -> None:
    """Give each image entry of ``build`` its release download URL as ``url``."""
    images = build.get("images")
    for image in images if isinstance(images, list) else ():
        name = image.get("name") if isinstance(image, dict) else None
        if isinstance(name, str) and ASSET_NAME.match(name):
            image["url"] = releases.download_url(request_hash, name)

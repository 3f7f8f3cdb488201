"""A fake GitHub REST API on 127.0.0.1 for tests.

The real PyGithub client talks to it over real HTTP (``http.server`` in a
background thread), so the product's GitHub code runs unchanged.  It serves
the JSON shapes PyGithub parses for the parts of the API that asu-ci uses:
the repository, workflows, ``workflow_dispatch`` (with and without
``return_run_details``), workflow runs and their artifacts (listed, and
downloaded as a zip through a redirect to object storage), releases, release
assets (upload, list, download, delete) and ``/rate_limit``, with GitHub's rate-limit headers
and JSON error bodies.

State lives in memory and can be driven from the test: runs are started and
completed by hand or by an ``on_dispatch`` hook, faults are injected per
request (``fail_next``, ``accept_then_timeout``, ``rate_limit_next``,
``primary_rate_limit``), and every request received is recorded.

Behaviour kept from GitHub on purpose:

* ``GET /releases/tags/{tag}`` finds published releases only; a draft has no
  tag yet (its URLs use ``untagged-<hex>``).  Several drafts may name the same
  tag; creating or publishing a release whose tag a published release already
  has answers 422 ``already_exists``.
* Uploading an asset whose name the release already has answers 422
  ``already_exists``.
* ``GET /releases/assets/{id}`` with ``Accept: application/octet-stream``
  answers 302 to a download URL (served here, without auth), which answers
  the bytes with a Content-Length.
* A run's ``name`` and ``display_title`` are the workflow's ``run-name``
  rendered from the dispatch inputs (the workflow's name when it has none).
* ``GET /releases`` lists the first 1,000 releases only, newest first: the
  page past them answers 422 "Only the first 1000 results are available."
  (its Link header still offers it, so a client that walks every page fails
  there).  Drafts are in it only for a token with push access: with
  ``permissions`` set, one holding ``contents:write``.
* ``DELETE /releases/{id}`` removes a release (a draft too) with its assets.
* Dispatching a workflow that is disabled (``disabled_fork``: scheduled
  workflows of a fresh fork; ``disabled_inactivity``: 60 days without
  activity) or has no ``workflow_dispatch`` trigger answers 422 with GitHub's
  message; ``PUT .../enable`` makes it active again.
* A secondary rate limit may come without ``Retry-After``.
* Publishing a release creates its tag; deleting the release keeps the tag.
  ``GET /git/matching-refs/tags/<prefix>`` lists tags (and ``heads/``
  branches) by prefix, all in one answer.
* Budgets: each login has its hourly primary limit (``rate_limits``; the
  endpoint's token 5,000, ``GITHUB_TOKEN`` 1,000 per repository) and
  content-creating requests (POST, PATCH, PUT) are limited to 80 a minute and
  500 an hour (``content_limits``): past them a 403 secondary limit whose
  ``Retry-After`` names when the window frees.
* ``dispatch_details``: ``"return"`` answers a dispatch with
  ``return_run_details`` 200 and the run; ``"never"`` answers 204 anyway;
  ``"refuse"`` (an older GitHub Enterprise) answers 400 to the field.
* ``permissions`` (login -> e.g. ``{"actions:write", "contents:read"}``): a
  token without the permission a route needs gets 403 "Resource not
  accessible by personal access token" and ``X-Accepted-GitHub-Permissions``.
* ``immutable_releases``: a published release refuses new, changed or
  deleted assets (422), and its tag stays burnt after the release is deleted.
* Assets have a ``state`` (``uploaded``, or ``starter`` for one whose upload
  never finished) and a ``digest``.
* ``download_host``: downloads redirect to another host name (as GitHub's go
  to its object storage), which answers 400 to a request that carries an
  ``Authorization`` header.
* A workflow's ``concurrency`` group keeps one running and one pending run:
  a new run waits (``pending``) behind an active one, and cancels the run
  that was pending before it; completing the active run queues the pending one.

The ``fake_github`` pytest fixture starts one per test on an ephemeral port::

    def test_dispatch(fake_github):
        fake_github.on_dispatch = lambda run: fake_github.publish_release(
            f"build-{run.inputs['hash']}", {"sysupgrade.bin": b"..."}
        )
        gh = fake_github.client()  # or github.Github(base_url=fake_github.base_url, ...)
        wf = gh.get_repo(fake_github.repo_full_name).get_workflow("build.yml")
        run = wf.create_dispatch("main", {"hash": h}, throw=True, return_run_details=True)
        fake_github.complete_run(run.id, "success")
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import http.server
import io
import json
import re
import socket
import threading
import time
import traceback
import urllib.parse
import zipfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

DOCS = "https://docs.github.com/rest"
DEFAULT_REPO = "asu-ci/builds"
DEFAULT_TOKEN = "t"
DEFAULT_LOGIN = "asu-ci-bot"
RUN_STATUSES = frozenset({"queued", "in_progress", "completed", "requested", "waiting", "pending"})
CONCLUSIONS = frozenset(
    {
        "success",
        "failure",
        "cancelled",
        "skipped",
        "timed_out",
        "neutral",
        "action_required",
        "stale",
        "startup_failure",
    }
)
SECONDARY_RATE_LIMIT_MESSAGE = (
    "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
)
PRIMARY_RATE_LIMIT_MESSAGE = "API rate limit exceeded for user ID 1."
#: Listings such as the releases' stop here; the next page is a 422 with this message.
LIST_LIMIT = 1000
WORKFLOW_STATES = frozenset(
    {"active", "disabled_fork", "disabled_inactivity", "disabled_manually", "deleted"}
)
LIST_LIMIT_MESSAGE = "Only the first {limit} results are available."
#: The login GitHub Actions' GITHUB_TOKEN acts as, and its hourly limit per repository.
ACTIONS_LOGIN = "github-actions[bot]"
ACTIONS_RATE_LIMIT = 1000
#: Content-creating requests: (how many, per seconds).
CONTENT_LIMITS: tuple[tuple[int, float], ...] = ((80, 60.0), (500, 3600.0))
CONTENT_METHODS = frozenset({"POST", "PATCH", "PUT"})
DISPATCH_DETAILS = frozenset({"return", "never", "refuse"})
NOT_ACCESSIBLE_MESSAGE = "Resource not accessible by personal access token"
IMMUTABLE_MESSAGE = "Cannot modify an immutable release"
#: The permission each route needs (write implies read).
_PERMISSION = {
    "dispatch": "actions:write",
    "workflow_state": "actions:write",
    "cancel_run": "actions:write",
    "list_workflows": "actions:read",
    "get_workflow": "actions:read",
    "list_workflow_runs": "actions:read",
    "list_runs": "actions:read",
    "get_run": "actions:read",
    "list_run_artifacts": "actions:read",
    "artifact_zip": "actions:read",
    "create_release": "contents:write",
    "update_release": "contents:write",
    "delete_release": "contents:write",
    "upload_asset": "contents:write",
    "update_asset": "contents:write",
    "delete_asset": "contents:write",
    "create_attestation": "attestations:write",
}

RunNameTemplate = str | Callable[[dict[str, Any]], str] | None


# ---------------------------------------------------------------------------
# State objects (the fake hands out copies; mutate through FakeGitHub methods)


@dataclasses.dataclass
class RecordedRequest:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    time: float
    status: int | None = None  # None while in flight, or when the connection was dropped

    @property
    def json(self) -> Any:
        if not self.body:
            return None
        return json.loads(self.body)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclasses.dataclass
class FakeWorkflow:
    id: int
    repo: str
    file: str
    name: str
    run_name: RunNameTemplate = None
    inputs: dict[str, dict[str, Any]] | None = None  # None: accept any inputs
    #: active, disabled_fork, disabled_inactivity or disabled_manually.
    state: str = "active"
    #: False: the file has no ``workflow_dispatch`` trigger (any more).
    dispatchable: bool = True
    #: The concurrency group template (``${{ inputs.x }}``), or None.
    concurrency: str | None = None

    @property
    def path(self) -> str:
        return f".github/workflows/{self.file}"


@dataclasses.dataclass
class FakeRun:
    id: int
    repo: str
    workflow_id: int
    workflow_file: str
    workflow_name: str
    name: str
    display_title: str
    ref: str
    head_branch: str
    head_sha: str
    inputs: dict[str, Any]
    run_number: int
    actor: str
    created_at: datetime
    updated_at: datetime
    status: str = "queued"
    conclusion: str | None = None
    run_attempt: int = 1
    run_started_at: datetime | None = None
    event: str = "workflow_dispatch"
    group: str | None = None


@dataclasses.dataclass
class FakeArtifact:
    """A workflow run's artifact: a zip of files, as ``actions/upload-artifact`` leaves it."""

    id: int
    run_id: int
    name: str
    data: bytes
    created_at: datetime
    expires_at: datetime

    @property
    def expired(self) -> bool:
        return self.expires_at <= _now()


@dataclasses.dataclass
class FakeRelease:
    id: int
    repo: str
    tag_name: str
    target_commitish: str
    name: str | None
    body: str | None
    draft: bool
    prerelease: bool
    author: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    untagged: str  # "untagged-<hex>", the web tag of a draft
    asset_ids: list[int] = dataclasses.field(default_factory=list)

    @property
    def web_tag(self) -> str:
        return self.untagged if self.draft else self.tag_name


@dataclasses.dataclass
class FakeAsset:
    id: int
    release_id: int
    repo: str
    name: str
    label: str | None
    content_type: str
    data: bytes
    uploader: str
    created_at: datetime
    updated_at: datetime
    download_count: int = 0
    state: str = "uploaded"

    @property
    def size(self) -> int:
        return len(self.data)


@dataclasses.dataclass
class _Repo:
    id: int
    owner: str
    name: str
    default_branch: str
    branches: dict[str, str]
    workflows: dict[str, FakeWorkflow] = dataclasses.field(default_factory=dict)
    #: Tag name -> commit SHA. Publishing a release creates its tag; deleting it keeps the tag.
    tags: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Tags once published by an immutable release: never usable again.
    burnt: set[str] = dataclasses.field(default_factory=set)

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclasses.dataclass
class _Rule:
    kind: str  # fail | secondary | primary | timeout
    method: str | None
    pattern: re.Pattern[str]
    times: int
    status: int = 500
    body: Any = None
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    apply: bool = False
    retry_after: int | None = 1
    reset_in: float = 1.0
    mode: str = "drop"
    delay: float = 3.0
    #: Matching requests let through before the rule starts.
    skip: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.method is not None and self.method != method:
            return False
        return self.pattern.search(path) is not None


@dataclasses.dataclass
class _Response:
    status: int
    headers: dict[str, str] = dataclasses.field(default_factory=dict)
    body: bytes = b""
    drop: bool = False
    delay: float = 0.0
    inline_hooks: list[Callable[[], None]] = dataclasses.field(default_factory=list)


class _Ctx:
    """What a route handler gets: the parsed request and the caller."""

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        raw_query: str,
        headers: dict[str, str],
        body: bytes,
        groups: tuple[str, ...],
        login: str | None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.raw_query = raw_query
        self.headers = headers
        self.body = body
        self.groups = groups
        self.login = login

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        if not self.body:
            return {}
        return json.loads(self.body)


class _HttpError(Exception):
    def __init__(self, response: _Response) -> None:
        super().__init__(response.status)
        self.response = response


class _BodyError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------
# Small helpers


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _node_id(kind: str, ident: int) -> str:
    return f"{kind}_kw{ident:x}"


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


class _MissingBlank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return ""


_EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def render_run_name(
    template: RunNameTemplate,
    inputs: Mapping[str, Any],
    *,
    default: str,
    context: Mapping[str, str] | None = None,
) -> str:
    """Render a run-name the way the fake does.

    ``template`` is a callable taking the inputs, a workflow-style string with
    ``${{ inputs.X }}`` / ``${{ github.event.inputs.X }}`` / ``${{ github.NAME }}``
    expressions, or a ``str.format`` string like ``"build {hash}"``.  Unknown
    names render as empty strings, as in GitHub expressions.
    """
    if template is None:
        return default
    values = dict(inputs)
    if callable(template):
        return str(template(values))
    if "${{" in template:
        ctx = dict(context or {})

        def expr(match: re.Match[str]) -> str:
            name = match.group(1)
            for prefix in ("inputs.", "github.event.inputs."):
                if name.startswith(prefix):
                    value = values.get(name[len(prefix) :], "")
                    if isinstance(value, bool):
                        return "true" if value else "false"
                    return str(value)
            if name.startswith("github."):
                return ctx.get(name[len("github.") :], "")
            return ""

        return _EXPR.sub(expr, template)
    return template.format_map(_MissingBlank(values))


def _when(text: str) -> tuple[datetime, datetime]:
    """Parse a date or date-time of the ``created`` filter: (first, last) instant."""
    text = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        start = datetime.fromisoformat(text).replace(tzinfo=UTC)
        return start, start + timedelta(days=1) - timedelta(seconds=1)
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value, value


def created_matches(expr: str, created: datetime) -> bool:
    """GitHub's ``created`` search syntax: ``>=X``, ``>X``, ``<=X``, ``<X``, ``A..B``, ``X``."""
    expr = expr.strip()
    if ".." in expr:
        low, high = expr.split("..", 1)
        if low.strip() != "*" and created < _when(low)[0]:
            return False
        return high.strip() == "*" or created <= _when(high)[1]
    for op in (">=", "<=", ">", "<"):
        if expr.startswith(op):
            first, last = _when(expr[len(op) :])
            return {
                ">=": created >= first,
                "<=": created <= last,
                ">": created > last,
                "<": created < first,
            }[op]
    first, last = _when(expr)
    return first <= created <= last


# ---------------------------------------------------------------------------
# HTTP plumbing


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops SYNs of concurrent clients (1 s stalls)

    def __init__(self, fake: FakeGitHub) -> None:
        self.fake = fake
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((fake.host, 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "GitHub.com"
    sys_version = ""
    timeout = 30
    wbufsize = 64 * 1024  # headers and body leave in one segment (no Nagle/delayed-ACK stall)
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self.server.connections_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.open_connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PATCH(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    def _read_body(self, limit: int) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip() or b"0", 16)
                except ValueError as exc:
                    raise _BodyError(400, "Problems parsing JSON") from exc
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > limit:
                    raise _BodyError(413, "Payload too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8)
        length_text = self.headers.get("Content-Length")
        if not length_text:
            return b""
        try:
            length = int(length_text)
        except ValueError as exc:
            raise _BodyError(400, "Bad Content-Length") from exc
        if length < 0:
            raise _BodyError(400, "Bad Content-Length")
        if length > limit:
            raise _BodyError(413, "Payload too large")
        return self.rfile.read(length)

    def _handle(self) -> None:
        fake = self.server.fake
        try:
            body = self._read_body(fake.max_body_bytes)
        except _BodyError as exc:
            self.close_connection = True
            self._write(fake._error(exc.status, exc.message))
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = fake._process(self.command, self.path, headers, body)
        for hook in response.inline_hooks:
            hook()
        if response.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if response.delay > 0:
            fake._release_held.wait(response.delay)
        self._write(response)

    def _write(self, response: _Response) -> None:
        try:
            self.send_response(response.status)
            for key, value in response.headers.items():
                self.send_header(key, value)
            if response.status not in (204, 304) and "Content-Length" not in response.headers:
                self.send_header("Content-Length", str(len(response.body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD" and response.status not in (204, 304):
                self.wfile.write(response.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


_Route = tuple[str, re.Pattern[str], str, bool]  # method, pattern, handler name, needs auth

_SEG = r"([^/]+)"
_REPO = rf"/repos/{_SEG}/{_SEG}"
_ROUTES: list[tuple[str, str, str, bool]] = [
    ("GET", r"/rate_limit", "rate_limit", True),
    ("GET", r"/user", "user", True),
    ("GET", _REPO, "get_repo", True),
    ("GET", _REPO + r"/actions/workflows", "list_workflows", True),
    ("GET", _REPO + rf"/actions/workflows/{_SEG}", "get_workflow", True),
    ("POST", _REPO + rf"/actions/workflows/{_SEG}/dispatches", "dispatch", True),
    ("PUT", _REPO + rf"/actions/workflows/{_SEG}/(enable|disable)", "workflow_state", True),
    ("GET", _REPO + rf"/actions/workflows/{_SEG}/runs", "list_workflow_runs", True),
    ("GET", _REPO + r"/actions/runs", "list_runs", True),
    ("GET", _REPO + r"/actions/runs/(\d+)", "get_run", True),
    ("POST", _REPO + r"/actions/runs/(\d+)/cancel", "cancel_run", True),
    ("GET", _REPO + r"/actions/runs/(\d+)/artifacts", "list_run_artifacts", True),
    ("GET", _REPO + r"/actions/artifacts/(\d+)/zip", "artifact_zip", True),
    ("GET", r"/_fake/artifact-downloads/(\d+)", "artifact_bytes", False),
    ("GET", _REPO + r"/git/matching-refs/(.+)", "matching_refs", True),
    ("GET", _REPO + r"/releases", "list_releases", True),
    ("POST", _REPO + r"/releases", "create_release", True),
    ("GET", _REPO + r"/releases/latest", "latest_release", True),
    ("GET", _REPO + rf"/releases/tags/{_SEG}", "release_by_tag", True),
    ("GET", _REPO + r"/releases/assets/(\d+)", "get_asset", True),
    ("PATCH", _REPO + r"/releases/assets/(\d+)", "update_asset", True),
    ("DELETE", _REPO + r"/releases/assets/(\d+)", "delete_asset", True),
    ("GET", _REPO + r"/releases/(\d+)", "get_release", True),
    ("PATCH", _REPO + r"/releases/(\d+)", "update_release", True),
    ("DELETE", _REPO + r"/releases/(\d+)", "delete_release", True),
    ("GET", _REPO + r"/releases/(\d+)/assets", "list_assets", True),
    ("POST", r"/uploads" + _REPO + r"/releases/(\d+)/assets", "upload_asset", True),
    ("GET", r"/_fake/asset-downloads/(\d+)/([^/]+)", "asset_bytes", False),
    ("POST", _REPO + r"/attestations", "create_attestation", True),
    ("HEAD", r"/_fake/asset-downloads/(\d+)/([^/]+)", "asset_bytes", False),
    ("GET", rf"/{_SEG}/{_SEG}/releases/download/{_SEG}/{_SEG}", "browser_download", False),
    ("HEAD", rf"/{_SEG}/{_SEG}/releases/download/{_SEG}/{_SEG}", "browser_download", False),
]
_COMPILED: list[_Route] = [(m, re.compile(p + r"/?"), h, a) for m, p, h, a in _ROUTES]


# ---------------------------------------------------------------------------
# The fake


class FakeGitHub:
    """An in-memory GitHub REST API served over HTTP on 127.0.0.1.

    Use ``start()``/``stop()`` (or ``with FakeGitHub() as fake:``), then point
    ``github.Github(base_url=fake.base_url, auth=github.Auth.Token(fake.token))``
    at it, or call ``fake.client()``.

    The default repository ``asu-ci/builds`` has a branch ``main`` and a
    dispatchable workflow ``build.yml`` named ``build`` whose run-name is
    ``run_name_template`` (default ``"build {hash}"``).
    """

    def __init__(
        self,
        *,
        repo: str = DEFAULT_REPO,
        tokens: str | Iterable[str] | Mapping[str, str] = DEFAULT_TOKEN,
        workflow_file: str | None = "build.yml",
        workflow_name: str = "build",
        run_name_template: RunNameTemplate = "build {hash}",
        on_dispatch: Callable[[FakeRun], None] | None = None,
        dispatch_hook_mode: str = "thread",
        asset_redirect: bool = True,
        list_delay: float = 0.0,
        rate_limit: int = 5000,
        max_requests: int = 10_000,
        max_body_bytes: int = 64 * 1024 * 1024,
        max_storage_bytes: int = 512 * 1024 * 1024,
        max_runs: int = 10_000,
        rate_limits: Mapping[str, int] | None = None,
        content_limits: Iterable[tuple[int, float]] = CONTENT_LIMITS,
        dispatch_details: str = "return",
        permissions: Mapping[str, Iterable[str]] | None = None,
        immutable_releases: bool = False,
        download_host: str | None = None,
        max_inputs: int = 25,
        max_inputs_chars: int = 65_535,
        hook_workers: int = 4,
        hook_timeout: float = 10.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.host = host
        if isinstance(tokens, str):
            self.tokens: dict[str, str] = {tokens: DEFAULT_LOGIN}
        elif isinstance(tokens, Mapping):
            self.tokens = dict(tokens)
        else:
            self.tokens = {tok: DEFAULT_LOGIN for tok in tokens}
        self.on_dispatch = on_dispatch
        if dispatch_hook_mode not in ("thread", "inline"):
            raise ValueError("dispatch_hook_mode is 'thread' or 'inline'")
        self.dispatch_hook_mode = dispatch_hook_mode
        self.asset_redirect = asset_redirect
        self.list_delay = list_delay
        self.rate_limit = rate_limit
        self.rate_limits = {ACTIONS_LOGIN: ACTIONS_RATE_LIMIT, **(rate_limits or {})}
        self.content_limits = tuple(content_limits)
        if dispatch_details not in DISPATCH_DETAILS:
            raise ValueError(f"dispatch_details is one of {sorted(DISPATCH_DETAILS)}")
        self.dispatch_details = dispatch_details
        self.permissions = (
            None if permissions is None else {k: set(v) for k, v in permissions.items()}
        )
        self.immutable_releases = immutable_releases
        self.download_host = download_host
        self._content: dict[str, deque[float]] = {}
        self.max_body_bytes = max_body_bytes
        self.max_storage_bytes = max_storage_bytes
        self.max_runs = max_runs
        self.max_inputs = max_inputs
        self.max_inputs_chars = max_inputs_chars
        self.hook_timeout = hook_timeout
        self._hook_workers = hook_workers

        self._cond = threading.Condition(threading.RLock())
        self._requests: deque[RecordedRequest] = deque(maxlen=max_requests)
        self._repos: dict[str, _Repo] = {}
        self._runs: dict[int, FakeRun] = {}
        self._releases: dict[int, FakeRelease] = {}
        self._assets: dict[int, FakeAsset] = {}
        self._artifacts: dict[int, FakeArtifact] = {}
        #: Sigstore bundles received by ``POST /repos/{o}/{r}/attestations``, in order.
        self.attestations: list[dict[str, Any]] = []
        self._rules: list[_Rule] = []
        self._usage: dict[str, tuple[int, int]] = {}  # login -> (used, reset epoch)
        self._ids = {"repo": 700_000_001, "workflow": 90_000_001, "run": 17_000_000_001}
        self._ids |= {"release": 230_000_001, "asset": 310_000_001, "request": 1}
        self._ids |= {"artifact": 4_100_000_001, "attestation": 1}
        self._run_numbers: dict[int, int] = {}
        self._errors: list[str] = []
        self._futures: list[concurrent.futures.Future[None]] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._release_held = threading.Event()
        self._clients: list[Any] = []

        owner, name = self._split_full_name(repo)
        self.repo_full_name = f"{owner}/{name}"
        self.add_repo(self.repo_full_name)
        if workflow_file is not None:
            self.add_workflow(workflow_file, name=workflow_name, run_name=run_name_template)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> FakeGitHub:
        if self._server is not None:
            return self
        self._release_held.clear()
        self._server = _Server(self)
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=self._hook_workers, thread_name_prefix="fakegithub-hook"
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fakegithub-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release held responses, wait (bounded) for hooks, close clients."""
        self._release_held.set()
        self.wait_hooks(self.hook_timeout)
        for client in self._clients:
            with contextlib.suppress(Exception):
                client.close()
        self._clients.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        server = self._server
        if server is None:
            return
        server.shutdown()
        with server.connections_lock:
            conns = list(server.open_connections)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeGitHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeGitHub is not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The API base URL, for ``github.Github(base_url=...)``."""
        return f"http://{self.host}:{self.port}"

    @property
    def token(self) -> str:
        """A valid token (the first configured)."""
        return next(iter(self.tokens))

    def client(self, *, token: str | None = None, **kwargs: Any) -> Any:
        """A ``github.Github`` for this fake, closed by ``stop()``.

        Defaults differ from PyGithub's for fast, deterministic tests:
        ``retry=None`` (no retries), ``timeout=5`` and no pauses between
        requests (PyGithub's defaults are 0.25 s between requests and 1 s
        between writes).  Pass them to override.
        """
        import github

        kwargs.setdefault("retry", None)
        kwargs.setdefault("timeout", 5)
        kwargs.setdefault("seconds_between_requests", None)
        kwargs.setdefault("seconds_between_writes", None)
        client = github.Github(
            base_url=self.base_url, auth=github.Auth.Token(token or self.token), **kwargs
        )
        self._clients.append(client)
        return client

    # -- configuration -----------------------------------------------------

    @staticmethod
    def _split_full_name(full_name: str) -> tuple[str, str]:
        owner, _, name = full_name.partition("/")
        if not owner or not name or "/" in name:
            raise ValueError(f"repository must be OWNER/NAME: {full_name!r}")
        return owner, name

    def _repo(self, full_name: str | None) -> _Repo:
        key = (full_name or self.repo_full_name).lower()
        return self._repos[key]

    def add_repo(self, full_name: str, *, default_branch: str = "main") -> None:
        owner, name = self._split_full_name(full_name)
        with self._cond:
            ident = self._next("repo")
            self._repos[full_name.lower()] = _Repo(
                id=ident,
                owner=owner,
                name=name,
                default_branch=default_branch,
                branches={default_branch: _sha(f"{full_name}:{default_branch}")},
            )

    def add_branch(self, branch: str, *, repo: str | None = None) -> None:
        with self._cond:
            r = self._repo(repo)
            r.branches[branch] = _sha(f"{r.full_name}:{branch}")

    def add_workflow(
        self,
        file: str,
        *,
        name: str | None = None,
        run_name: RunNameTemplate = None,
        inputs: Mapping[str, Mapping[str, Any]] | None = None,
        concurrency: str | None = None,
        repo: str | None = None,
    ) -> FakeWorkflow:
        """Add a dispatchable workflow (replacing one with the same file name).

        ``run_name``: see :func:`render_run_name`.  ``inputs``: the
        ``workflow_dispatch`` inputs as in the workflow file (``required``,
        ``default``, ``type``, ``options``); when given, dispatches are
        validated against it like GitHub does, and defaults fill in.
        """
        with self._cond:
            r = self._repo(repo)
            old = r.workflows.get(file)
            wf = FakeWorkflow(
                id=old.id if old else self._next("workflow"),
                repo=r.full_name,
                file=file,
                name=name or Path(file).stem,
                run_name=run_name,
                inputs=None if inputs is None else {k: dict(v or {}) for k, v in inputs.items()},
                concurrency=concurrency,
            )
            r.workflows[file] = wf
            return dataclasses.replace(wf)

    def set_workflow(
        self,
        file: str,
        *,
        state: str | None = None,
        dispatchable: bool | None = None,
        repo: str | None = None,
    ) -> None:
        """Put a workflow in a state a real fork meets: disabled on a fresh fork
        (``disabled_fork``), after 60 days without activity (``disabled_inactivity``)
        or by hand; or without its ``workflow_dispatch`` trigger."""
        with self._cond:
            wf = self._repo(repo).workflows[file]
            if state is not None:
                if state not in WORKFLOW_STATES:
                    raise ValueError(f"unknown workflow state {state!r}")
                wf.state = state
            if dispatchable is not None:
                wf.dispatchable = dispatchable

    def add_workflow_from_yaml(
        self, source: str | Path, *, file: str | None = None, repo: str | None = None
    ) -> FakeWorkflow:
        """Add a workflow from its YAML (a path, or the text): name, run-name, inputs."""
        import yaml

        if isinstance(source, Path) or ("\n" not in source and Path(source).exists()):
            path = Path(source)
            text = path.read_text()
            file = file or path.name
        else:
            text = str(source)
        if file is None:
            raise ValueError("file= is needed when the YAML is given as text")
        doc = yaml.safe_load(text) or {}
        triggers = doc.get("on", doc.get(True, {}))  # YAML 1.1 reads a bare `on` as true
        if isinstance(triggers, str):
            triggers = {triggers: None}
        elif isinstance(triggers, list):
            triggers = dict.fromkeys(triggers)
        if "workflow_dispatch" not in (triggers or {}):
            raise ValueError(f"{file} has no workflow_dispatch trigger")
        inputs = ((triggers or {}).get("workflow_dispatch") or {}).get("inputs") or {}
        concurrency = doc.get("concurrency")
        if isinstance(concurrency, dict):
            concurrency = concurrency.get("group")
        return self.add_workflow(
            file,
            name=doc.get("name") or file,
            run_name=doc.get("run-name"),
            inputs=inputs,
            concurrency=concurrency if isinstance(concurrency, str) else None,
            repo=repo,
        )

    @property
    def run_name_template(self) -> RunNameTemplate:
        """The run-name of the default workflow (settable)."""
        with self._cond:
            return self._default_workflow().run_name

    @run_name_template.setter
    def run_name_template(self, value: RunNameTemplate) -> None:
        with self._cond:
            self._default_workflow().run_name = value

    def _default_workflow(self) -> FakeWorkflow:
        r = self._repo(None)
        if not r.workflows:
            raise LookupError("the default repository has no workflow")
        return next(iter(r.workflows.values()))

    # -- fault injection -----------------------------------------------------

    def _add_rule(
        self, kind: str, method: str | None, path_regex: str, times: int, **details: Any
    ) -> None:
        rule = _Rule(
            kind=kind,
            method=method.upper() if method else None,
            pattern=re.compile(path_regex),
            times=times,
            **details,
        )
        with self._cond:
            if len(self._rules) >= 1000:
                raise RuntimeError("too many pending fault rules")
            self._rules.append(rule)

    def fail_next(
        self,
        method: str | None,
        path_regex: str,
        status: int = 500,
        times: int = 1,
        *,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
        apply: bool = False,
        skip: int = 0,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status``.

        ``path_regex`` is searched (``re.search``) in the URL path without the
        query; ``method`` None matches any method.  With ``apply=False`` the
        request has no effect; with ``apply=True`` it takes effect (a run is
        created, an asset stored) and the client still gets the error, as when
        GitHub answers 502 after doing the work.  ``skip``: the first ``skip``
        matching requests are served as usual (a failure mid-way through uploads).
        """
        message = {500: "Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
        self._add_rule(
            "fail",
            method,
            path_regex,
            times,
            status=status,
            body=body if body is not None else {"message": message.get(status, "Error")},
            headers=dict(headers or {}),
            apply=apply,
            skip=skip,
        )

    def accept_then_timeout(
        self,
        path_regex: str,
        *,
        method: str | None = None,
        mode: str = "drop",
        delay: float = 3.0,
        times: int = 1,
    ) -> None:
        """Process the next matching request(s), then fail to answer.

        The request takes effect (the dispatch is recorded and its run
        created).  ``mode="drop"`` closes the connection without an answer
        (the client sees a connection error); ``mode="delay"`` holds the
        answer ``delay`` seconds (or until ``stop()``), past a client timeout
        that is shorter.
        """
        if mode not in ("drop", "delay"):
            raise ValueError("mode is 'drop' or 'delay'")
        self._add_rule(
            "timeout",
            method,
            path_regex,
            times,
            mode=mode,
            delay=delay,
        )

    def rate_limit_next(
        self,
        path_regex: str,
        retry_after: int | None = 1,
        *,
        method: str | None = None,
        times: int = 1,
        status: int = 403,
    ) -> None:
        """Answer the next matching request(s) with a secondary rate limit:
        ``status`` (403, or 429), ``Retry-After: retry_after`` and GitHub's message.

        ``retry_after=None`` leaves the header out, as GitHub may: the client is
        to wait at least a minute."""
        self._add_rule(
            "secondary",
            method,
            path_regex,
            times,
            status=status,
            retry_after=retry_after,
        )

    def primary_rate_limit(
        self,
        path_regex: str = ".*",
        *,
        method: str | None = None,
        times: int = 1,
        status: int = 403,
        reset_in: float = 1.0,
    ) -> None:
        """Answer the next matching request(s) as an exhausted primary rate limit:
        ``status`` (403 or 429), ``X-RateLimit-Remaining: 0`` and
        ``X-RateLimit-Reset`` ``reset_in`` seconds from now."""
        self._add_rule(
            "primary",
            method,
            path_regex,
            times,
            status=status,
            reset_in=reset_in,
        )

    def clear_faults(self) -> None:
        with self._cond:
            self._rules.clear()

    def _take_rule(self, method: str, path: str, kinds: tuple[str, ...]) -> _Rule | None:
        with self._cond:
            for rule in self._rules:
                if rule.kind in kinds and rule.matches(method, path):
                    if rule.skip > 0:
                        rule.skip -= 1
                        continue
                    rule.times -= 1
                    if rule.times <= 0:
                        self._rules.remove(rule)
                    return rule
        return None

    # -- state: inspection ---------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Copies of the requests received so far, oldest first (bounded)."""
        with self._cond:
            return [dataclasses.replace(r) for r in self._requests]

    def find_requests(
        self, method: str | None = None, path_regex: str = ""
    ) -> list[RecordedRequest]:
        pattern = re.compile(path_regex)
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and pattern.search(r.path)
        ]

    def clear_requests(self) -> None:
        with self._cond:
            self._requests.clear()

    @property
    def runs(self) -> list[FakeRun]:
        """Copies of all runs, oldest first."""
        with self._cond:
            return [self._copy_run(r) for r in sorted(self._runs.values(), key=lambda r: r.id)]

    def get_run(self, run_id: int) -> FakeRun:
        with self._cond:
            return self._copy_run(self._runs[run_id])

    def find_runs(self, name: str) -> list[FakeRun]:
        """Runs whose display title is ``name``."""
        return [r for r in self.runs if r.display_title == name]

    @property
    def releases(self) -> list[FakeRelease]:
        with self._cond:
            return [
                self._copy_release(r) for r in sorted(self._releases.values(), key=lambda r: r.id)
            ]

    def release_by_tag(
        self, tag: str, *, include_drafts: bool = True, repo: str | None = None
    ) -> FakeRelease | None:
        """The published release with ``tag`` (else, if allowed, the newest draft naming it)."""
        with self._cond:
            full = self._repo(repo).full_name
            found = self._published_by_tag(full, tag)
            if found is None and include_drafts:
                drafts = [
                    r
                    for r in self._releases.values()
                    if r.repo == full and r.draft and r.tag_name == tag
                ]
                found = max(drafts, key=lambda r: r.id) if drafts else None
            return self._copy_release(found) if found else None

    def assets_of(self, release_id: int) -> list[FakeAsset]:
        with self._cond:
            rel = self._releases[release_id]
            return [dataclasses.replace(self._assets[a]) for a in rel.asset_ids]

    def _add_error(self, text: str) -> None:
        with self._cond:
            if len(self._errors) < 100:
                self._errors.append(text)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions in hooks and in the fake itself."""
        with self._cond:
            return list(self._errors)

    def check(self) -> None:
        """Raise AssertionError if a hook or the fake itself failed."""
        errors = self.errors
        if errors:
            raise AssertionError("fake GitHub errors:\n" + "\n".join(errors))

    def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        """Wait until ``predicate()`` (re-checked on each state change) is true."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def wait_hooks(self, timeout: float = 10.0) -> bool:
        """Wait for the dispatch hooks started so far; False if some still run."""
        with self._cond:
            futures = list(self._futures)
        _done, not_done = concurrent.futures.wait(futures, timeout=timeout)
        with self._cond:
            self._futures = [f for f in self._futures if not f.done()]
            if not_done:
                self._add_error(
                    f"{len(not_done)} on_dispatch hook(s) still running after {timeout}s"
                )
        return not not_done

    # -- state: control ------------------------------------------------------

    def start_run(self, run_id: int) -> FakeRun:
        """queued -> in_progress."""
        with self._cond:
            run = self._runs[run_id]
            if run.status == "completed":
                raise ValueError(f"run {run_id} is already completed")
            if run.status == "pending":
                raise ValueError(f"run {run_id} waits for its concurrency group")
            run.status = "in_progress"
            run.run_started_at = run.updated_at = _now()
            self._cond.notify_all()
            return self._copy_run(run)

    def complete_run(self, run_id: int, conclusion: str = "success") -> FakeRun:
        """-> completed with ``conclusion`` (success, failure, cancelled, ...)."""
        if conclusion not in CONCLUSIONS:
            raise ValueError(f"unknown conclusion {conclusion!r}")
        with self._cond:
            run = self._runs[run_id]
            if run.run_started_at is None:
                run.run_started_at = _now()
            run.status = "completed"
            run.conclusion = conclusion
            run.updated_at = _now()
            for other in self._runs.values():
                if (
                    other.group is not None
                    and other.group == run.group
                    and other.status == "pending"
                ):
                    other.status = "queued"  # the waiting run of the group goes next
            self._cond.notify_all()
            return self._copy_run(run)

    def set_run_status(self, run_id: int, status: str, conclusion: str | None = None) -> FakeRun:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown status {status!r}")
        with self._cond:
            run = self._runs[run_id]
            run.status = status
            run.conclusion = conclusion
            run.updated_at = _now()
            self._cond.notify_all()
            return self._copy_run(run)

    def dispatch(
        self,
        inputs: Mapping[str, Any] | None = None,
        *,
        workflow: str | None = None,
        ref: str | None = None,
        repo: str | None = None,
        run_hook: bool = False,
    ) -> FakeRun:
        """Create a run as a dispatch would (e.g. one started by someone else)."""
        with self._cond:
            r = self._repo(repo)
            wf = r.workflows[workflow] if workflow else next(iter(r.workflows.values()))
            run = self._create_run(
                r, wf, ref or r.default_branch, dict(inputs or {}), DEFAULT_LOGIN
            )
        if run_hook:
            for call in self._schedule_hook(run):
                call()
        return run

    def create_release(
        self,
        tag: str,
        *,
        name: str | None = None,
        body: str | None = None,
        draft: bool = False,
        prerelease: bool = False,
        repo: str | None = None,
        created_at: datetime | None = None,
    ) -> FakeRelease:
        """Create a release directly (no HTTP); raises ValueError where GitHub answers 422.

        ``created_at``: when it was made (default now), e.g. a draft an
        interrupted job left hours ago.
        """
        with self._cond:
            r = self._repo(repo)
            if not draft and self._published_by_tag(r.full_name, tag):
                raise ValueError(f"a published release for {tag!r} already exists")
            rel = self._new_release(
                r, tag, r.default_branch, name, body, draft, prerelease, DEFAULT_LOGIN
            )
            if created_at is not None:
                rel.created_at = rel.updated_at = created_at
                rel.published_at = None if draft else created_at
            return self._copy_release(rel)

    def add_asset(
        self,
        release_id: int,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        label: str | None = None,
        state: str = "uploaded",
    ) -> FakeAsset:
        """Store an asset directly (no HTTP); raises ValueError where GitHub answers 422.

        ``state="starter"``: an upload that never finished.
        """
        with self._cond:
            rel = self._releases[release_id]
            if any(self._assets[a].name == name for a in rel.asset_ids):
                raise ValueError(f"asset {name!r} already exists")
            try:
                asset = self._new_asset(rel, name, label, content_type, data, DEFAULT_LOGIN)
            except _HttpError as exc:
                raise ValueError("FakeGitHub storage limit reached") from exc
            asset.state = state
            return dataclasses.replace(asset)

    def add_artifact(
        self, run_id: int, name: str, files: Mapping[str, bytes], *, retention_days: float = 1.0
    ) -> FakeArtifact:
        """Attach an artifact (a zip of ``files``) to a run, as ``actions/upload-artifact`` does."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for file_name, data in files.items():
                archive.writestr(file_name, data)
        with self._cond:
            run = self._runs[run_id]
            if any(a.run_id == run.id and a.name == name for a in self._artifacts.values()):
                raise ValueError(f"run {run_id} has an artifact {name!r} already")
            now = _now()
            artifact = FakeArtifact(
                self._next("artifact"),
                run.id,
                name,
                buffer.getvalue(),
                now,
                now + timedelta(days=retention_days),
            )
            self._artifacts[artifact.id] = artifact
            return dataclasses.replace(artifact)

    def publish_release(
        self,
        tag: str,
        assets: Mapping[str, bytes],
        *,
        name: str | None = None,
        body: str | None = None,
        repo: str | None = None,
    ) -> FakeRelease:
        """Create a published release with ``assets`` in one step (what a finished build leaves)."""
        with self._cond:
            rel = self.create_release(tag, name=name, body=body, repo=repo)
            for asset_name, data in assets.items():
                self.add_asset(rel.id, asset_name, data)
            return self._copy_release(self._releases[rel.id])

    # -- internals: state ----------------------------------------------------

    def _next(self, kind: str) -> int:
        with self._cond:
            value = self._ids[kind]
            self._ids[kind] = value + 1
            return value

    @staticmethod
    def _copy_run(run: FakeRun) -> FakeRun:
        return dataclasses.replace(run, inputs=dict(run.inputs))

    @staticmethod
    def _copy_release(rel: FakeRelease) -> FakeRelease:
        return dataclasses.replace(rel, asset_ids=list(rel.asset_ids))

    def _published_by_tag(
        self, full_name: str, tag: str, *, exclude: int | None = None
    ) -> FakeRelease | None:
        for rel in self._releases.values():
            if (
                rel.repo == full_name
                and not rel.draft
                and rel.tag_name == tag
                and rel.id != exclude
            ):
                return rel
        return None

    def _storage_used(self) -> int:
        return sum(a.size for a in self._assets.values())

    def _create_run(
        self, r: _Repo, wf: FakeWorkflow, ref: str, inputs: dict[str, Any], actor: str
    ) -> FakeRun:
        if len(self._runs) >= self.max_runs:
            raise RuntimeError("FakeGitHub: max_runs reached")
        branch = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
        context = {
            "ref_name": branch,
            "ref": ref if ref.startswith("refs/") else f"refs/heads/{branch}",
            "actor": actor,
            "triggering_actor": actor,
            "event_name": "workflow_dispatch",
            "workflow": wf.name,
            "repository": r.full_name,
            "repository_owner": r.owner,
        }
        title = render_run_name(wf.run_name, inputs, default=wf.name, context=context)
        number = self._run_numbers.get(wf.id, 0) + 1
        self._run_numbers[wf.id] = number
        now = _now()
        run = FakeRun(
            id=self._next("run"),
            repo=r.full_name,
            workflow_id=wf.id,
            workflow_file=wf.file,
            workflow_name=wf.name,
            name=title,
            display_title=title,
            ref=ref,
            head_branch=branch,
            head_sha=r.branches.get(branch) or _sha(f"{r.full_name}:{branch}"),
            inputs=dict(inputs),
            run_number=number,
            actor=actor,
            created_at=now,
            updated_at=now,
        )
        if wf.concurrency is not None:
            run.group = render_run_name(wf.concurrency, inputs, default="", context=context)
            others = [
                x
                for x in self._runs.values()
                if x.group == run.group and x.repo == run.repo and x.status != "completed"
            ]
            for other in others:
                if other.status == "pending":  # GitHub cancels the run that was waiting
                    other.status, other.conclusion, other.updated_at = "completed", "cancelled", now
            if any(x.status != "pending" for x in others):
                run.status = "pending"
        self._runs[run.id] = run
        self._cond.notify_all()
        return self._copy_run(run)

    def _new_release(
        self,
        r: _Repo,
        tag: str,
        target: str,
        name: str | None,
        body: str | None,
        draft: bool,
        prerelease: bool,
        author: str,
    ) -> FakeRelease:
        now = _now()
        ident = self._next("release")
        rel = FakeRelease(
            id=ident,
            repo=r.full_name,
            tag_name=tag,
            target_commitish=target,
            name=name,
            body=body,
            draft=draft,
            prerelease=prerelease,
            author=author,
            created_at=now,
            updated_at=now,
            published_at=None if draft else now,
            untagged="untagged-" + hashlib.sha1(f"release:{ident}".encode()).hexdigest()[:20],
        )
        self._releases[rel.id] = rel
        if not draft:
            self._tag(r, tag, target)
        self._cond.notify_all()
        return rel

    def _immutable(self, rel: FakeRelease) -> bool:
        return self.immutable_releases and not rel.draft

    def _tag(self, r: _Repo, tag: str, target: str) -> None:
        """The tag a published release names: made at the target's head unless it exists."""
        if self.immutable_releases:
            r.burnt.add(tag)
        if tag not in r.tags:
            r.tags[tag] = r.branches.get(target) or _sha(f"{r.full_name}:{target}")

    def _new_asset(
        self,
        rel: FakeRelease,
        name: str,
        label: str | None,
        content_type: str,
        data: bytes,
        uploader: str,
    ) -> FakeAsset:
        if self._storage_used() + len(data) > self.max_storage_bytes:
            raise _HttpError(self._error(422, "FakeGitHub storage limit reached"))
        now = _now()
        asset = FakeAsset(
            id=self._next("asset"),
            release_id=rel.id,
            repo=rel.repo,
            name=name,
            label=label or None,
            content_type=content_type,
            data=bytes(data),
            uploader=uploader,
            created_at=now,
            updated_at=now,
        )
        self._assets[asset.id] = asset
        rel.asset_ids.append(asset.id)
        rel.updated_at = now
        self._cond.notify_all()
        return asset

    def _schedule_hook(self, run: FakeRun) -> list[Callable[[], None]]:
        hook = self.on_dispatch
        if hook is None:
            return []

        def call() -> None:
            try:
                hook(self._copy_run(run))
            except BaseException:
                self._add_error(
                    f"on_dispatch hook failed for run {run.id}:\n{traceback.format_exc()}"
                )

        if self.dispatch_hook_mode == "inline":
            return [call]
        with self._cond:
            if self._executor is None:
                return [call]
            self._futures.append(self._executor.submit(call))
        return []

    # -- internals: HTTP -----------------------------------------------------

    def _json_headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/json; charset=utf-8",
            "X-GitHub-Media-Type": "github.v3; format=json",
            "X-GitHub-Api-Version-Selected": "2022-11-28",
        }

    def _json(self, status: int, data: Any, headers: Mapping[str, str] | None = None) -> _Response:
        body = json.dumps(data).encode()
        return _Response(status, {**self._json_headers(), **(headers or {})}, body)

    def _error(
        self,
        status: int,
        message: str,
        *,
        doc: str = DOCS,
        errors: list[dict[str, Any]] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> _Response:
        data: dict[str, Any] = {"message": message}
        if errors is not None:
            data["errors"] = errors
        data["documentation_url"] = doc
        data["status"] = str(status)
        return self._json(status, data, headers)

    def _not_found(self) -> _Response:
        return self._error(404, "Not Found")

    def _validation(self, resource: str, code: str, field: str, doc: str = DOCS) -> _Response:
        return self._error(
            422,
            "Validation Failed",
            doc=doc,
            errors=[{"resource": resource, "code": code, "field": field}],
        )

    def _rate_headers(
        self, login: str | None, *, exhausted_reset_in: float | None = None
    ) -> dict[str, str]:
        now = int(time.time())
        limit = self._limit(login)
        key = login or "<anonymous>"
        with self._cond:
            used, reset = self._usage.get(key, (0, now + 3600))
        if exhausted_reset_in is not None:
            return {
                "X-RateLimit-Limit": str(limit),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(int(time.time() + exhausted_reset_in + 0.999)),
                "X-RateLimit-Used": str(limit),
                "X-RateLimit-Resource": "core",
            }
        return {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(limit - used, 0)),
            "X-RateLimit-Reset": str(reset),
            "X-RateLimit-Used": str(used),
            "X-RateLimit-Resource": "core",
        }

    def _count_request(self, login: str | None) -> bool:
        """Count one request against the caller's limit; False when exhausted."""
        now = int(time.time())
        limit = self._limit(login)
        key = login or "<anonymous>"
        with self._cond:
            used, reset = self._usage.get(key, (0, now + 3600))
            if now >= reset:
                used, reset = 0, now + 3600
            if used >= limit:
                self._usage[key] = (used, reset)
                return False
            self._usage[key] = (used + 1, reset)
            return True

    def _limit(self, login: str | None) -> int:
        if not login:
            return 60
        return self.rate_limits.get(login, self.rate_limit)

    def _count_content(self, login: str | None) -> float | None:
        """Count one content-creating request; the seconds to wait when over a limit."""
        now = time.monotonic()
        key = login or "<anonymous>"
        with self._cond:
            seen = self._content.setdefault(key, deque())
            longest = max((window for _, window in self.content_limits), default=0.0)
            while seen and seen[0] <= now - longest:
                seen.popleft()
            for count, window in self.content_limits:
                inside = [t for t in seen if t > now - window]
                if len(inside) >= count:
                    return inside[len(inside) - count] + window - now
            seen.append(now)
        return None

    def usage(self, login: str = DEFAULT_LOGIN) -> int:
        """Requests counted against ``login``'s primary limit in its current hour."""
        with self._cond:
            return self._usage.get(login, (0, 0))[0]

    def _denied(self, login: str | None, name: str) -> _Response | None:
        """403 when the token lacks the permission the route needs."""
        if self.permissions is None or login is None or name not in _PERMISSION:
            return None
        needed = _PERMISSION[name]
        held = self.permissions.get(login, set())
        scope, level = needed.split(":")
        if needed in held or (level == "read" and f"{scope}:write" in held):
            return None
        return self._error(
            403,
            NOT_ACCESSIBLE_MESSAGE,
            headers={"X-Accepted-GitHub-Permissions": f"{scope}={level}"},
        )

    def _auth(self, headers: Mapping[str, str]) -> tuple[str | None, _Response | None]:
        value = headers.get("authorization")
        if not value:
            return None, self._error(401, "Requires authentication")
        match = re.fullmatch(r"(?i)(?:bearer|token)\s+(\S+)\s*", value)
        if match is None or match.group(1) not in self.tokens:
            return None, self._error(401, "Bad credentials")
        return self.tokens[match.group(1)], None

    def _process(self, method: str, target: str, headers: dict[str, str], body: bytes) -> _Response:
        split = urllib.parse.urlsplit(target)
        path = split.path
        query = urllib.parse.parse_qs(split.query, keep_blank_values=True)
        record = RecordedRequest(method, path, query, dict(headers), body, time.time())
        with self._cond:
            self._requests.append(record)
            request_id = f"FAKE:{self._next('request'):08X}"
            self._cond.notify_all()
        try:
            response = self._route(method, path, query, split.query, headers, body)
        except Exception:
            self._add_error(f"{method} {target}:\n{traceback.format_exc()}")
            response = self._error(500, "FakeGitHub internal error")
        response.headers.setdefault("X-GitHub-Request-Id", request_id)
        with self._cond:
            record.status = None if response.drop else response.status
            self._cond.notify_all()
        return response

    def _route(
        self,
        method: str,
        path: str,
        query: dict[str, list[str]],
        raw_query: str,
        headers: dict[str, str],
        body: bytes,
    ) -> _Response:
        route = None
        groups: tuple[str, ...] = ()
        for r_method, pattern, name, needs_auth in _COMPILED:
            if r_method != method:
                continue
            match = pattern.fullmatch(path)
            if match:
                route = (name, needs_auth)
                groups = tuple(urllib.parse.unquote(g) for g in match.groups())
                break
        login: str | None = None
        if route is None or route[1]:
            login, denied = self._auth(headers)
            if denied is not None:
                denied.headers.update(self._rate_headers(None))
                return denied
        if route is None:
            return self._error(404, "Not Found", headers=self._rate_headers(login))
        name, needs_auth = route

        rule = self._take_rule(method, path, ("fail", "secondary", "primary"))
        counted = True
        if needs_auth and name != "rate_limit":
            counted = self._count_request(login)
        rate = self._rate_headers(login) if needs_auth else {}
        if not counted:
            return self._error(
                403,
                PRIMARY_RATE_LIMIT_MESSAGE,
                doc="https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api",
                headers=rate | {"X-RateLimit-Remaining": "0"},
            )

        ctx = _Ctx(method, path, query, raw_query, headers, body, groups, login)
        denied = self._denied(login, name)
        if denied is not None:
            denied.headers.update(rate)
            return denied
        if needs_auth and method in CONTENT_METHODS and rule is None:
            wait = self._count_content(login)
            if wait is not None:
                return self._error(
                    403,
                    SECONDARY_RATE_LIMIT_MESSAGE,
                    doc="https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api",
                    headers=rate | {"Retry-After": str(max(1, int(wait + 0.999)))},
                )
        if rule is not None and rule.kind == "secondary":
            return self._error(
                rule.status,
                SECONDARY_RATE_LIMIT_MESSAGE,
                doc="https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api",
                headers=rate
                | ({} if rule.retry_after is None else {"Retry-After": str(rule.retry_after)}),
            )
        if rule is not None and rule.kind == "primary":
            return self._error(
                rule.status,
                PRIMARY_RATE_LIMIT_MESSAGE,
                doc="https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api",
                headers=self._rate_headers(login, exhausted_reset_in=rule.reset_in),
            )
        if rule is not None and rule.kind == "fail" and not rule.apply:
            return self._json(rule.status, rule.body, rate | rule.headers)

        try:
            handler: Callable[[_Ctx], _Response] = getattr(self, "_h_" + name)
            response = handler(ctx)
        except _HttpError as exc:
            response = exc.response
        for key, value in rate.items():
            response.headers.setdefault(key, value)

        if (
            rule is not None and rule.kind == "fail"
        ):  # apply=True: the work is done, the answer fails
            failed = self._json(rule.status, rule.body, rate | rule.headers)
            failed.inline_hooks = response.inline_hooks
            response = failed
        timeout = self._take_rule(method, path, ("timeout",))
        if timeout is not None:
            if timeout.mode == "drop":
                response.drop = True
            else:
                response.delay = timeout.delay
        return response

    # -- URL builders and JSON shapes ------------------------------------------

    def _api(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _user_json(self, login: str) -> dict[str, Any]:
        ident = int(hashlib.sha1(login.encode()).hexdigest()[:7], 16)
        return {
            "login": login,
            "id": ident,
            "node_id": _node_id("U", ident),
            "avatar_url": f"{self.base_url}/_fake/avatars/{login}",
            "gravatar_id": "",
            "url": self._api(f"/users/{login}"),
            "html_url": self._api(f"/{login}"),
            "type": "User",
            "site_admin": False,
        }

    def _repo_json(self, r: _Repo) -> dict[str, Any]:
        api = self._api(f"/repos/{r.full_name}")
        return {
            "id": r.id,
            "node_id": _node_id("R", r.id),
            "name": r.name,
            "full_name": r.full_name,
            "private": False,
            "owner": self._user_json(r.owner),
            "html_url": self._api(f"/{r.full_name}"),
            "description": None,
            "fork": False,
            "url": api,
            "releases_url": api + "/releases{/id}",
            "default_branch": r.default_branch,
            "visibility": "public",
            "archived": False,
            "disabled": False,
            "has_issues": True,
            "permissions": {
                "admin": True,
                "maintain": True,
                "push": True,
                "triage": True,
                "pull": True,
            },
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "pushed_at": "2024-01-01T00:00:00Z",
        }

    def _workflow_json(self, wf: FakeWorkflow) -> dict[str, Any]:
        r = self._repo(wf.repo)
        return {
            "id": wf.id,
            "node_id": _node_id("W", wf.id),
            "name": wf.name,
            "path": wf.path,
            "state": wf.state,
            "created_at": "2024-01-01T00:00:00Z",
            "updated_at": "2024-01-01T00:00:00Z",
            "url": self._api(f"/repos/{r.full_name}/actions/workflows/{wf.id}"),
            "html_url": self._api(f"/{r.full_name}/blob/{r.default_branch}/{wf.path}"),
            "badge_url": self._api(f"/{r.full_name}/workflows/{wf.name}/badge.svg"),
        }

    def _run_json(self, run: FakeRun) -> dict[str, Any]:
        r = self._repo(run.repo)
        api = self._api(f"/repos/{r.full_name}/actions/runs/{run.id}")
        check_suite = run.id + 5_000_000_000
        actor = self._user_json(run.actor)
        repo_min = {
            k: v
            for k, v in self._repo_json(r).items()
            if k
            in ("id", "node_id", "name", "full_name", "private", "owner", "html_url", "url", "fork")
        }
        return {
            "id": run.id,
            "name": run.name,
            "node_id": _node_id("WFR", run.id),
            "head_branch": run.head_branch,
            "head_sha": run.head_sha,
            "path": f".github/workflows/{run.workflow_file}",
            "display_title": run.display_title,
            "run_number": run.run_number,
            "event": run.event,
            "status": run.status,
            "conclusion": run.conclusion,
            "workflow_id": run.workflow_id,
            "check_suite_id": check_suite,
            "check_suite_node_id": _node_id("CS", check_suite),
            "url": api,
            "html_url": self._api(f"/{r.full_name}/actions/runs/{run.id}"),
            "pull_requests": [],
            "created_at": _iso(run.created_at),
            "updated_at": _iso(run.updated_at),
            "actor": actor,
            "run_attempt": run.run_attempt,
            "referenced_workflows": [],
            "run_started_at": _iso(run.run_started_at or run.created_at),
            "triggering_actor": actor,
            "jobs_url": api + "/jobs",
            "logs_url": api + "/logs",
            "check_suite_url": self._api(f"/repos/{r.full_name}/check-suites/{check_suite}"),
            "artifacts_url": api + "/artifacts",
            "cancel_url": api + "/cancel",
            "rerun_url": api + "/rerun",
            "previous_attempt_url": None,
            "workflow_url": self._api(f"/repos/{r.full_name}/actions/workflows/{run.workflow_id}"),
            "head_commit": {
                "id": run.head_sha,
                "tree_id": _sha("tree:" + run.head_sha),
                "message": "fake commit",
                "timestamp": "2024-01-01T00:00:00Z",
                "author": {"name": r.owner, "email": f"{r.owner}@example.invalid"},
                "committer": {"name": r.owner, "email": f"{r.owner}@example.invalid"},
            },
            "repository": repo_min,
            "head_repository": repo_min,
        }

    def _asset_json(self, asset: FakeAsset) -> dict[str, Any]:
        rel = self._releases[asset.release_id]
        return {
            "url": self._api(f"/repos/{asset.repo}/releases/assets/{asset.id}"),
            "id": asset.id,
            "node_id": _node_id("RA", asset.id),
            "name": asset.name,
            "label": asset.label,
            "uploader": self._user_json(asset.uploader),
            "content_type": asset.content_type,
            "state": asset.state,
            "size": asset.size,
            "digest": "sha256:" + hashlib.sha256(asset.data).hexdigest(),
            "download_count": asset.download_count,
            "created_at": _iso(asset.created_at),
            "updated_at": _iso(asset.updated_at),
            "browser_download_url": self._api(
                f"/{asset.repo}/releases/download/{urllib.parse.quote(rel.web_tag, safe='')}"
                f"/{urllib.parse.quote(asset.name, safe='')}"
            ),
        }

    def _release_json(self, rel: FakeRelease) -> dict[str, Any]:
        api = self._api(f"/repos/{rel.repo}/releases/{rel.id}")
        web_tag = urllib.parse.quote(rel.web_tag, safe="")
        return {
            "url": api,
            "assets_url": api + "/assets",
            "upload_url": self._api(
                f"/uploads/repos/{rel.repo}/releases/{rel.id}/assets{{?name,label}}"
            ),
            "html_url": self._api(f"/{rel.repo}/releases/tag/{web_tag}"),
            "id": rel.id,
            "author": self._user_json(rel.author),
            "node_id": _node_id("RE", rel.id),
            "tag_name": rel.tag_name,
            "target_commitish": rel.target_commitish,
            "name": rel.name,
            "draft": rel.draft,
            "immutable": False,
            "prerelease": rel.prerelease,
            "created_at": _iso(rel.created_at),
            "updated_at": _iso(rel.updated_at),
            "published_at": _iso(rel.published_at),
            "assets": [self._asset_json(self._assets[a]) for a in rel.asset_ids],
            "tarball_url": self._api(f"/repos/{rel.repo}/tarball/{web_tag}"),
            "zipball_url": self._api(f"/repos/{rel.repo}/zipball/{web_tag}"),
            "body": rel.body,
        }

    def _page(
        self,
        ctx: _Ctx,
        items: list[Any],
        key: str | None,
        *,
        limit: int | None = None,
        render: Callable[[Any], Any] | None = None,
    ) -> _Response:
        """One page of a listing; past ``limit`` items, 422 as GitHub answers."""
        per_page = min(max(_int(ctx.param("per_page"), 30), 1), 100)
        page = max(_int(ctx.param("page"), 1), 1)
        last = max((len(items) + per_page - 1) // per_page, 1)
        if limit is not None and (page - 1) * per_page >= limit:
            return self._error(422, LIST_LIMIT_MESSAGE.format(limit=limit))
        end = page * per_page if limit is None else min(page * per_page, limit)
        chunk = items[(page - 1) * per_page : end]
        if render is not None:
            chunk = [render(item) for item in chunk]
        params = [(k, v) for k, vs in ctx.query.items() for v in vs if k != "page"]

        def url(n: int) -> str:
            return f"<{self._api(ctx.path)}?{urllib.parse.urlencode([*params, ('page', str(n))])}>"

        links = []
        if page < last:
            links += [f'{url(page + 1)}; rel="next"', f'{url(last)}; rel="last"']
        if page > 1:
            links += [f'{url(1)}; rel="first"', f'{url(min(page - 1, last))}; rel="prev"']
        headers = {"Link": ", ".join(links)} if links else {}
        data: Any = chunk if key is None else {"total_count": len(items), key: chunk}
        return self._json(200, data, headers)

    # -- lookups for handlers ----------------------------------------------------

    def _ctx_repo(self, ctx: _Ctx) -> _Repo:
        key = f"{ctx.groups[0]}/{ctx.groups[1]}".lower()
        r = self._repos.get(key)
        if r is None:
            raise _HttpError(self._not_found())
        return r

    def _ctx_workflow(self, r: _Repo, ident: str) -> FakeWorkflow:
        for wf in r.workflows.values():
            if ident == wf.file or ident == str(wf.id):
                return wf
        raise _HttpError(self._not_found())

    def _ctx_release(self, r: _Repo, ident: str) -> FakeRelease:
        rel = self._releases.get(int(ident))
        if rel is None or rel.repo != r.full_name:
            raise _HttpError(self._not_found())
        return rel

    def _ctx_asset(self, r: _Repo, ident: str) -> FakeAsset:
        asset = self._assets.get(int(ident))
        if asset is None or asset.repo != r.full_name:
            raise _HttpError(self._not_found())
        return asset

    def _body_json(self, ctx: _Ctx) -> dict[str, Any]:
        try:
            data = ctx.json()
        except ValueError as exc:
            raise _HttpError(self._error(400, "Problems parsing JSON")) from exc
        if not isinstance(data, dict):
            raise _HttpError(self._error(400, "Problems parsing JSON"))
        return data

    # -- handlers ------------------------------------------------------------------

    def _h_rate_limit(self, ctx: _Ctx) -> _Response:
        headers = self._rate_headers(ctx.login)
        core = {
            "limit": int(headers["X-RateLimit-Limit"]),
            "used": int(headers["X-RateLimit-Used"]),
            "remaining": int(headers["X-RateLimit-Remaining"]),
            "reset": int(headers["X-RateLimit-Reset"]),
        }
        reset = core["reset"]
        resources = {
            "core": core,
            "search": {"limit": 30, "used": 0, "remaining": 30, "reset": int(time.time()) + 60},
            "graphql": {"limit": 5000, "used": 0, "remaining": 5000, "reset": reset},
            "integration_manifest": {"limit": 5000, "used": 0, "remaining": 5000, "reset": reset},
            "code_search": {
                "limit": 10,
                "used": 0,
                "remaining": 10,
                "reset": int(time.time()) + 60,
            },
        }
        return self._json(200, {"resources": resources, "rate": core})

    def _h_user(self, ctx: _Ctx) -> _Response:
        assert ctx.login is not None
        return self._json(200, self._user_json(ctx.login))

    def _h_get_repo(self, ctx: _Ctx) -> _Response:
        with self._cond:
            return self._json(200, self._repo_json(self._ctx_repo(ctx)))

    def _h_list_workflows(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            items = [
                self._workflow_json(wf) for wf in sorted(r.workflows.values(), key=lambda w: w.id)
            ]
        return self._page(ctx, items, "workflows")

    def _h_get_workflow(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            return self._json(200, self._workflow_json(self._ctx_workflow(r, ctx.groups[2])))

    def _h_dispatch(self, ctx: _Ctx) -> _Response:
        doc = "https://docs.github.com/rest/actions/workflows#create-a-workflow-dispatch-event"
        data = self._body_json(ctx)
        with self._cond:
            r = self._ctx_repo(ctx)
            wf = self._ctx_workflow(r, ctx.groups[2])
            if wf.state != "active":
                return self._error(
                    422, "Cannot trigger a 'workflow_dispatch' on a disabled workflow", doc=doc
                )
            if not wf.dispatchable:
                message = "Workflow does not have 'workflow_dispatch' trigger"
                return self._error(422, message, doc=doc)
            if self.dispatch_details == "refuse" and "return_run_details" in data:
                message = 'Invalid request.\n\n"return_run_details" is not a permitted key.'
                return self._error(400, message, doc=doc)
            ref = data.get("ref")
            if not isinstance(ref, str) or not ref:
                return self._error(422, 'Invalid request.\n\n"ref" wasn\'t supplied.', doc=doc)
            name = ref.removeprefix("refs/heads/").removeprefix("refs/tags/")
            tags = {
                rel.tag_name
                for rel in self._releases.values()
                if rel.repo == r.full_name and not rel.draft
            }
            if name not in r.branches and name not in tags:
                return self._error(422, f"No ref found for: {ref}", doc=doc)
            inputs = data.get("inputs") or {}
            if not isinstance(inputs, dict):
                return self._error(
                    422, "Invalid request.\n\nFor 'properties/inputs', is not an object.", doc=doc
                )
            error = self._check_inputs(wf, inputs)
            if error:
                return self._error(422, error, doc=doc)
            if wf.inputs is not None:
                for key, spec in wf.inputs.items():
                    if key not in inputs and "default" in spec:
                        inputs[key] = spec["default"]
            run = self._create_run(r, wf, ref, inputs, ctx.login or DEFAULT_LOGIN)
        inline = self._schedule_hook(run)
        if data.get("return_run_details") and self.dispatch_details == "return":
            response = self._json(
                200,
                {
                    "workflow_run_id": run.id,
                    "run_url": self._api(f"/repos/{r.full_name}/actions/runs/{run.id}"),
                    "html_url": self._api(f"/{r.full_name}/actions/runs/{run.id}"),
                },
            )
        else:
            response = _Response(204, {})
        response.inline_hooks = inline
        return response

    def _h_workflow_state(self, ctx: _Ctx) -> _Response:
        with self._cond:
            wf = self._ctx_workflow(self._ctx_repo(ctx), ctx.groups[2])
            wf.state = "active" if ctx.groups[3] == "enable" else "disabled_manually"
        return _Response(204, {})

    def _check_inputs(self, wf: FakeWorkflow, inputs: dict[str, Any]) -> str | None:
        if len(inputs) > self.max_inputs:
            return (
                f"you may only define up to {self.max_inputs} inputs for a workflow_dispatch event"
            )
        if len(json.dumps(inputs)) > self.max_inputs_chars:
            return (
                f"inputs are too large: the maximum payload is {self.max_inputs_chars} characters"
            )
        for key, value in inputs.items():
            if not isinstance(value, str | int | float | bool):
                shown = json.dumps(value)
                return f"Invalid request.\n\nFor 'properties/{key}', {shown} is not a string."
        if wf.inputs is None:
            return None
        unexpected = sorted(set(inputs) - set(wf.inputs))
        if unexpected:
            return "Unexpected inputs provided: " + json.dumps(unexpected)
        for key, spec in wf.inputs.items():
            if key not in inputs:
                if spec.get("required") and "default" not in spec:
                    return f"Required input '{key}' not provided"
                continue
            value = str(inputs[key])
            kind = spec.get("type")
            if kind == "choice" and value not in [str(o) for o in spec.get("options") or []]:
                return (
                    f"Provided value '{value}' for input '{key}' not in the list of allowed values"
                )
            if kind == "boolean" and value.lower() not in ("true", "false"):
                return f"Provided value '{value}' for input '{key}' is not a boolean"
        return None

    def _visible_runs(self, r: _Repo, ctx: _Ctx, workflow_id: int | None) -> list[dict[str, Any]]:
        cutoff = datetime.now(UTC) - timedelta(seconds=self.list_delay)
        status = ctx.param("status")
        created = ctx.param("created")
        out = []
        for run in sorted(self._runs.values(), key=lambda x: x.id, reverse=True):
            if run.repo != r.full_name or (
                workflow_id is not None and run.workflow_id != workflow_id
            ):
                continue
            if self.list_delay and run.created_at > cutoff:
                continue
            if ctx.param("event") and run.event != ctx.param("event"):
                continue
            if ctx.param("branch") and run.head_branch != ctx.param("branch"):
                continue
            if ctx.param("actor") and run.actor != ctx.param("actor"):
                continue
            if ctx.param("head_sha") and run.head_sha != ctx.param("head_sha"):
                continue
            if status:
                if status in RUN_STATUSES and run.status != status:
                    continue
                if status not in RUN_STATUSES and run.conclusion != status:
                    continue
            if created:
                try:
                    if not created_matches(created, run.created_at):
                        continue
                except ValueError as exc:
                    raise _HttpError(
                        self._error(422, f"Invalid created filter: {created}")
                    ) from exc
            out.append(self._run_json(run))
        return out

    def _h_list_runs(self, ctx: _Ctx) -> _Response:
        with self._cond:
            items = self._visible_runs(self._ctx_repo(ctx), ctx, None)
        return self._page(ctx, items, "workflow_runs")

    def _h_list_workflow_runs(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            wf = self._ctx_workflow(r, ctx.groups[2])
            items = self._visible_runs(r, ctx, wf.id)
        return self._page(ctx, items, "workflow_runs")

    def _h_get_run(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            run = self._runs.get(int(ctx.groups[2]))
            if run is None or run.repo != r.full_name:
                return self._not_found()
            return self._json(200, self._run_json(run))

    def _artifact_json(self, r: _Repo, artifact: FakeArtifact) -> dict[str, Any]:
        api = self._api(f"/repos/{r.full_name}/actions/artifacts/{artifact.id}")
        run = self._runs[artifact.run_id]
        return {
            "id": artifact.id,
            "node_id": _node_id("Artifact", artifact.id),
            "name": artifact.name,
            "size_in_bytes": len(artifact.data),
            "url": api,
            "archive_download_url": api + "/zip",
            "expired": artifact.expired,
            "digest": "sha256:" + hashlib.sha256(artifact.data).hexdigest(),
            "created_at": _iso(artifact.created_at),
            "updated_at": _iso(artifact.created_at),
            "expires_at": _iso(artifact.expires_at),
            "workflow_run": {
                "id": run.id,
                "repository_id": r.id,
                "head_branch": run.head_branch,
                "head_sha": run.head_sha,
            },
        }

    def _h_list_run_artifacts(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            run = self._runs.get(int(ctx.groups[2]))
            if run is None or run.repo != r.full_name:
                return self._not_found()
            name = ctx.param("name")
            found = [
                self._artifact_json(r, a)
                for a in sorted(self._artifacts.values(), key=lambda a: -a.id)
                if a.run_id == run.id and (name is None or a.name == name)
            ]
            return self._json(200, {"total_count": len(found), "artifacts": found})

    def _h_artifact_zip(self, ctx: _Ctx) -> _Response:
        """302 to the zip in object storage (another host when ``download_host`` is set)."""
        with self._cond:
            r = self._ctx_repo(ctx)
            artifact = self._artifacts.get(int(ctx.groups[2]))
            if artifact is None or self._runs[artifact.run_id].repo != r.full_name:
                return self._not_found()
            if artifact.expired:
                return self._error(410, "Artifact has expired")
            path = f"/_fake/artifact-downloads/{artifact.id}"
            if self.download_host is not None:
                return _Response(
                    302, {"Location": f"http://{self.download_host}:{self.port}{path}"}
                )
            return _Response(302, {"Location": self._api(path)})

    def _h_artifact_bytes(self, ctx: _Ctx) -> _Response:
        if self.download_host is not None and "authorization" in ctx.headers:
            return self._error(400, "Only one auth mechanism allowed")
        with self._cond:
            artifact = self._artifacts.get(int(ctx.groups[0]))
            if artifact is None:
                return self._not_found()
            headers = {"Content-Type": "application/zip", "Content-Length": str(len(artifact.data))}
            return _Response(200, headers, artifact.data)

    def _h_cancel_run(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            run = self._runs.get(int(ctx.groups[2]))
            if run is None or run.repo != r.full_name:
                return self._not_found()
            if run.status == "completed":
                return self._error(409, "Cannot cancel a workflow run that is completed.")
        self.complete_run(run.id, "cancelled")
        return self._json(202, {})

    def _h_list_releases(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            drafts = self._can_push(ctx.login)
            rels = sorted(
                (
                    rel
                    for rel in self._releases.values()
                    if rel.repo == r.full_name and (drafts or not rel.draft)
                ),
                key=lambda x: x.id,
                reverse=True,
            )
            return self._page(ctx, rels, None, limit=LIST_LIMIT, render=self._release_json)

    def _can_push(self, login: str | None) -> bool:
        """Whether a token sees drafts: push access (every token when ``permissions`` is None)."""
        if self.permissions is None:
            return True
        return login is not None and "contents:write" in self.permissions.get(login, set())

    def _h_matching_refs(self, ctx: _Ctx) -> _Response:
        prefix = "refs/" + urllib.parse.unquote(ctx.groups[2])
        with self._cond:
            r = self._ctx_repo(ctx)
            refs = {f"refs/heads/{b}": sha for b, sha in r.branches.items()}
            refs |= {f"refs/tags/{t}": sha for t, sha in r.tags.items()}
            api = self._api(f"/repos/{r.full_name}/git")
            items = [
                {
                    "ref": ref,
                    "node_id": _node_id("REF", int(_sha(ref)[:8], 16)),
                    "url": f"{api}/{urllib.parse.quote(ref, safe='/')}",
                    "object": {"sha": sha, "type": "commit", "url": f"{api}/commits/{sha}"},
                }
                for ref, sha in sorted(refs.items())
                if ref.startswith(prefix)
            ]
        return self._json(200, items)

    def _h_create_attestation(self, ctx: _Ctx) -> _Response:
        """``POST /repos/{o}/{r}/attestations``: what actions/attest-build-provenance sends.

        The bundle (a Sigstore bundle: ``mediaType``, ``verificationMaterial``,
        ``dsseEnvelope``) is kept as sent; only its shape is checked.
        """
        doc = "https://docs.github.com/rest/repos/attestations#create-an-attestation"
        data = self._body_json(ctx)
        bundle = data.get("bundle")
        if not isinstance(bundle, dict) or not str(bundle.get("mediaType", "")).startswith(
            "application/vnd.dev.sigstore.bundle"
        ):
            return self._validation("Attestation", "invalid", "bundle", doc)
        with self._cond:
            self._ctx_repo(ctx)
            self.attestations.append(bundle)
            ident = self._next("attestation")
        return self._json(201, {"id": ident})

    def _h_create_release(self, ctx: _Ctx) -> _Response:
        doc = "https://docs.github.com/rest/releases/releases#create-a-release"
        data = self._body_json(ctx)
        with self._cond:
            r = self._ctx_repo(ctx)
            tag = data.get("tag_name")
            if not isinstance(tag, str) or not tag:
                return self._validation("Release", "missing_field", "tag_name", doc)
            if self._published_by_tag(r.full_name, tag):
                return self._validation("Release", "already_exists", "tag_name", doc)
            if tag in r.burnt and not data.get("draft"):
                return self._error(422, f"tag {tag} was used by an immutable release", doc=doc)
            rel = self._new_release(
                r,
                tag,
                str(data.get("target_commitish") or r.default_branch),
                data.get("name"),
                data.get("body"),
                bool(data.get("draft", False)),
                bool(data.get("prerelease", False)),
                ctx.login or DEFAULT_LOGIN,
            )
            return self._json(
                201,
                self._release_json(rel),
                {"Location": self._api(f"/repos/{r.full_name}/releases/{rel.id}")},
            )

    def _h_latest_release(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            rels = [
                x
                for x in self._releases.values()
                if x.repo == r.full_name and not x.draft and not x.prerelease
            ]
            if not rels:
                return self._not_found()
            return self._json(
                200, self._release_json(max(rels, key=lambda x: (x.published_at, x.id)))
            )

    def _h_release_by_tag(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            rel = self._published_by_tag(r.full_name, ctx.groups[2])
            if rel is None:
                return self._not_found()
            return self._json(200, self._release_json(rel))

    def _h_get_release(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            return self._json(200, self._release_json(self._ctx_release(r, ctx.groups[2])))

    def _h_update_release(self, ctx: _Ctx) -> _Response:
        doc = "https://docs.github.com/rest/releases/releases#update-a-release"
        data = self._body_json(ctx)
        with self._cond:
            r = self._ctx_repo(ctx)
            rel = self._ctx_release(r, ctx.groups[2])
            tag = data.get("tag_name", rel.tag_name)
            draft = bool(data.get("draft", rel.draft))
            if not draft and self._published_by_tag(r.full_name, tag, exclude=rel.id):
                return self._validation("Release", "already_exists", "tag_name", doc)
            if self._immutable(rel) and any(k != "draft" for k in data):
                return self._error(422, IMMUTABLE_MESSAGE, doc=doc)
            if rel.draft and not draft and tag in r.burnt:
                return self._error(422, f"tag {tag} was used by an immutable release", doc=doc)
            if rel.draft and not draft:
                rel.published_at = _now()
            rel.tag_name = tag
            rel.draft = draft
            if not draft:
                self._tag(r, tag, str(data.get("target_commitish") or rel.target_commitish))
            for key in ("name", "body"):
                if key in data:
                    setattr(rel, key, data[key])
            if "prerelease" in data:
                rel.prerelease = bool(data["prerelease"])
            if "target_commitish" in data:
                rel.target_commitish = str(data["target_commitish"])
            rel.updated_at = _now()
            self._cond.notify_all()
            return self._json(200, self._release_json(rel))

    def _h_delete_release(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            rel = self._ctx_release(r, ctx.groups[2])
            for asset_id in rel.asset_ids:
                self._assets.pop(asset_id, None)
            del self._releases[rel.id]
            self._cond.notify_all()
        return _Response(204, {})

    def _h_list_assets(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            rel = self._ctx_release(r, ctx.groups[2])
            items = [self._asset_json(self._assets[a]) for a in rel.asset_ids]
        return self._page(ctx, items, None)

    def _h_upload_asset(self, ctx: _Ctx) -> _Response:
        doc = "https://docs.github.com/rest/releases/assets#upload-a-release-asset"
        with self._cond:
            r = self._ctx_repo(ctx)
            rel = self._ctx_release(r, ctx.groups[2])
            if self._immutable(rel):
                return self._error(422, IMMUTABLE_MESSAGE, doc=doc)
            name = ctx.param("name")
            if not name:
                return self._validation("ReleaseAsset", "missing_field", "name", doc)
            if any(self._assets[a].name == name for a in rel.asset_ids):
                return self._validation("ReleaseAsset", "already_exists", "name", doc)
            asset = self._new_asset(
                rel,
                name,
                ctx.param("label"),
                ctx.headers.get("content-type") or "application/octet-stream",
                ctx.body,
                ctx.login or DEFAULT_LOGIN,
            )
            return self._json(201, self._asset_json(asset))

    def _h_get_asset(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            asset = self._ctx_asset(r, ctx.groups[2])
            if "application/octet-stream" not in ctx.headers.get("accept", ""):
                return self._json(200, self._asset_json(asset))
            if self.asset_redirect:
                return _Response(302, {"Location": self._download_url(asset)})
            return self._bytes_response(asset, ctx.method)

    def _h_update_asset(self, ctx: _Ctx) -> _Response:
        doc = "https://docs.github.com/rest/releases/assets#update-a-release-asset"
        data = self._body_json(ctx)
        with self._cond:
            r = self._ctx_repo(ctx)
            asset = self._ctx_asset(r, ctx.groups[2])
            rel = self._releases[asset.release_id]
            if self._immutable(rel):
                return self._error(422, IMMUTABLE_MESSAGE, doc=doc)
            name = data.get("name", asset.name)
            if name != asset.name and any(self._assets[a].name == name for a in rel.asset_ids):
                return self._validation("ReleaseAsset", "already_exists", "name", doc)
            asset.name = name
            if "label" in data:
                asset.label = data["label"] or None
            asset.updated_at = _now()
            return self._json(200, self._asset_json(asset))

    def _h_delete_asset(self, ctx: _Ctx) -> _Response:
        with self._cond:
            r = self._ctx_repo(ctx)
            asset = self._ctx_asset(r, ctx.groups[2])
            if self._immutable(self._releases[asset.release_id]):
                return self._error(422, IMMUTABLE_MESSAGE)
            self._releases[asset.release_id].asset_ids.remove(asset.id)
            del self._assets[asset.id]
            self._cond.notify_all()
        return _Response(204, {})

    def _download_url(self, asset: FakeAsset) -> str:
        path = f"/_fake/asset-downloads/{asset.id}/{urllib.parse.quote(asset.name, safe='')}"
        if self.download_host is not None:
            return f"http://{self.download_host}:{self.port}{path}"
        return self._api(path)

    def _bytes_response(self, asset: FakeAsset, method: str) -> _Response:
        if method == "GET":
            asset.download_count += 1
        filename = urllib.parse.quote(asset.name)
        return _Response(
            200,
            {
                "Content-Type": "application/octet-stream",
                "Content-Length": str(asset.size),
                "Content-Disposition": f"attachment; filename={filename}",
                "ETag": '"' + hashlib.md5(asset.data, usedforsecurity=False).hexdigest() + '"',
                "Last-Modified": asset.updated_at.strftime("%a, %d %b %Y %H:%M:%S GMT"),
            },
            asset.data,
        )

    def _h_asset_bytes(self, ctx: _Ctx) -> _Response:
        if self.download_host is not None and "authorization" in ctx.headers:
            # Object storage takes the signature in the URL and refuses a second credential.
            return self._error(400, "Only one auth mechanism allowed")
        with self._cond:
            asset = self._assets.get(int(ctx.groups[0]))
            if asset is None or asset.name != ctx.groups[1]:
                return self._not_found()
            return self._bytes_response(asset, ctx.method)

    def _h_browser_download(self, ctx: _Ctx) -> _Response:
        owner, name, tag, filename = ctx.groups
        with self._cond:
            r = self._repos.get(f"{owner}/{name}".lower())
            if r is None:
                return self._not_found()
            for rel in self._releases.values():
                if rel.repo != r.full_name or rel.web_tag != tag:
                    continue
                if rel.draft and self._auth(ctx.headers)[1] is not None:
                    continue  # a draft's files are for collaborators only
                for asset_id in rel.asset_ids:
                    asset = self._assets[asset_id]
                    if asset.name == filename and asset.state == "uploaded":
                        if self.asset_redirect:
                            return _Response(302, {"Location": self._download_url(asset)})
                        return self._bytes_response(asset, ctx.method)
            return self._not_found()


# ---------------------------------------------------------------------------
# pytest fixture


@pytest.fixture
def fake_github() -> Iterator[FakeGitHub]:
    """A started FakeGitHub on an ephemeral 127.0.0.1 port.

    At teardown it stops the server and fails the test if an ``on_dispatch``
    hook or the fake itself raised.
    """
    fake = FakeGitHub()
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
    fake.check()

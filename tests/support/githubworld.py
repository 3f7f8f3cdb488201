"""The world the GitHub backend's tests (and ``bench/github_budget``) run in.

The fake GitHub of :mod:`tests.support.fakegithub` on 127.0.0.1, an endpoint
(``create_app``) with the real :class:`GitHubDispatcher`, and the "workflow":
hooks for the fake's ``on_dispatch`` that check the inputs as ``build.yml``
does and then do what its jobs do with the product's own code: publish a
release (``store: releases``), or attest and hand the checked folder over as
the run artifact ``attested-<hash>`` (``store: endpoint``), or leave a
failure's report in ``store-<hash>``.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from asu_ci.api.app import create_app
from asu_ci.config import Settings
from asu_ci.dispatch.github import RUN_NAME, GitHubDispatcher, Tuning
from asu_ci.errors import BuildError
from asu_ci.github import Pace
from asu_ci.http import Session
from asu_ci.identity.hashing import request_hash
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import NormalizedRequest
from asu_ci.protocol import Failed
from asu_ci.publish.artifacts import ATTESTED_PREFIX
from asu_ci.publish.local import LocalStore
from asu_ci.publish.releases import ReleasesStore, verify_folder
from tests.support import fakegithub
from tests.support.fakegithub import FakeGitHub, FakeRun

ROOT = Path(__file__).resolve().parents[2]
TOKEN_ENV = "FAKE_GITHUB_TOKEN"
VERSION = "23.05.4"
TARGET = "ath79/generic"
PROFILE = "tplink_archer-c7-v5"
IMAGE = f"openwrt-{VERSION}-ath79-generic-{PROFILE}-squashfs-sysupgrade.bin"
NO_PAUSES = Pace(seconds_between_requests=None, seconds_between_writes=None)
FAST = Tuning(
    poll_interval=0.05,
    claim_timeout=0.05,
    lookup_delays=(0.0, 0.1),
    backoff_initial=0.2,
    backoff_max=0.5,
    success_grace_polls=1,
    pace=NO_PAUSES,
)


def request_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "version": VERSION,
        "target": TARGET,
        "profile": PROFILE,
        "packages": ["luci"],
        "client": "test/1",
    }
    body.update(changes)
    return body


def write_index(public: Path) -> None:
    """The smallest rendered index that validates requests for one device."""
    branch = {
        "name": "23.05",
        "enabled": True,
        "snapshot": False,
        "path": "releases/{version}",
        "versions": [VERSION],
        "targets": {TARGET: "mips_24kc"},
        "package_changes": [],
    }
    files: dict[str, Any] = {
        "json/v1/overview.json": {"latest": [VERSION], "branches": {"23.05": branch}},
        f"releases/{VERSION}/.targets.json": {TARGET: "mips_24kc"},
        f"json/v1/releases/{VERSION}/targets/{TARGET}/{PROFILE}.json": {
            "id": PROFILE,
            "target": TARGET,
            "images": [{"name": IMAGE, "type": "sysupgrade", "filesystem": "squashfs"}],
        },
    }
    for name, data in files.items():
        path = public / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))


def image_bytes(key: str) -> bytes:
    return (key * 500).encode()


def build_body(key: str, request: dict[str, Any]) -> dict[str, Any]:
    """A build.json as ``asu-ci build`` writes it (the fields that matter here)."""
    return {
        "status": 200,
        "detail": "done",
        "request_hash": key,
        "bin_dir": key,
        "request": request,
        "images": [
            {
                "name": IMAGE,
                "type": "sysupgrade",
                "filesystem": "squashfs",
                "sha256": hashlib.sha256(image_bytes(key)).hexdigest(),
            }
        ],
    }


def build_folder(root: Path, key: str, request: dict[str, Any]) -> Path:
    """What a build leaves in ``store/<hash>/`` before it is published."""
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / IMAGE).write_bytes(image_bytes(key))
    (folder / "sha256sums").write_text(f"{hashlib.sha256(image_bytes(key)).hexdigest()} *{IMAGE}\n")
    (folder / "profiles.json").write_text('{"profiles": {}}')
    (folder / f"openwrt-{PROFILE}.manifest").write_text("luci - 1\n")
    body = build_body(key, request)
    (folder / "build.json").write_text(json.dumps(body))
    (folder / "status.json").write_text(json.dumps(body))
    return folder


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


def settings_for(
    base: Path, api_url: str, *, build: dict[str, object] | None = None, **github: object
) -> Settings:
    return Settings.model_validate(
        {
            "home": str(base / "home"),
            "backend": "github",
            "build": build or {},
            "github": {
                "repository": fakegithub.DEFAULT_REPO,
                "api_url": api_url,
                "token_env": TOKEN_ENV,
                "timeout_seconds": 2,
                **github,
            },
        }
    )


# -- the world: fake GitHub, endpoint, dispatcher, the "workflow" ----------------------------


@dataclass
class World:
    fake: FakeGitHub
    settings: Settings
    client: TestClient
    service: Any
    dispatcher: GitHubDispatcher
    jobs: Path

    @property
    def store(self) -> LocalStore:
        return LocalStore(self.settings.public_dir / "store")

    def releases(self) -> ReleasesStore:
        return ReleasesStore(self.settings.github, pace=NO_PAUSES)

    def post(self, **changes: object) -> Any:
        return self.client.post("/api/v1/build", json=request_body(**changes))

    def poll(self, key: str) -> Any:
        return self.client.get(f"/api/v1/build/{key}")

    def wait_status(self, key: str, code: int, timeout: float = 20.0) -> Any:
        found: list[Any] = []

        def done() -> bool:
            response = self.poll(key)
            found[:] = [response]
            return bool(response.status_code == code)

        wait_for(done, timeout)
        return found[0]

    def runs_of(self, key: str) -> list[FakeRun]:
        return self.fake.find_runs(RUN_NAME.format(hash=key))

    def dispatches(self) -> list[fakegithub.RecordedRequest]:
        return self.fake.find_requests("POST", r"/dispatches$")

    def checked_inputs(self, run: FakeRun) -> tuple[str, dict[str, Any]]:
        """What build.yml does first: the hash must be the request's own."""
        key = run.inputs["hash"]
        request = json.loads(run.inputs["request"])
        assert request_hash(normalized_of(request)) == key
        return key, request

    def workflow_publishes(self, run: FakeRun, *, release: threading.Event | None = None) -> None:
        """The on_dispatch hook of a successful build."""
        key, request = self.checked_inputs(run)
        self.fake.start_run(run.id)
        if release is not None:
            assert release.wait(10)
        releases = self.releases()
        try:
            releases.publish(key, build_folder(self.jobs, key, request), build_body(key, request))
        finally:
            releases.close()
        self.fake.complete_run(run.id, "success")

    def workflow_hands_over(
        self,
        run: FakeRun,
        *,
        tamper: Callable[[dict[str, bytes]], None] | None = None,
        retention_days: float = 3.0,
    ) -> None:
        """The on_dispatch hook of a successful build with ``store: endpoint``: the
        publish job checks the images, attests them and hands the folder over as the
        artifact ``attested-<hash>``. ``tamper`` changes the files on the way."""
        key, request = self.checked_inputs(run)
        assert run.inputs["store"] == "endpoint"
        self.fake.start_run(run.id)
        folder = build_folder(self.jobs, key, request)
        attestation = self.attest()
        verify_folder(LocalStore(self.jobs), key, attestation=attestation)
        files = {path.name: path.read_bytes() for path in sorted(folder.iterdir())}
        if tamper is not None:
            tamper(files)
        self.fake.add_artifact(run.id, ATTESTED_PREFIX + key, files, retention_days=retention_days)
        self.fake.complete_run(run.id, "success")

    def attest(self) -> str:
        return attest(self.fake, self.fake.token)

    def workflow_fails(self, run: FakeRun) -> None:
        """The on_dispatch hook of a failed build: the report goes into the run's artifact."""
        key, _ = self.checked_inputs(run)
        self.fake.start_run(run.id)
        error = BuildError("Image too big", stdout="make image", stderr="is too big")
        report = json.dumps(Failed.of(key, error).json_body()).encode()
        self.fake.add_artifact(run.id, f"store-{key}", {"status.json": report})
        self.fake.complete_run(run.id, "failure")


@pytest.fixture
def world(
    fake_github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., World]]:
    monkeypatch.setenv(TOKEN_ENV, fake_github.token)
    fake_github.add_workflow_from_yaml(ROOT / ".github" / "workflows" / "build.yml")
    started: list[tuple[GitHubDispatcher, TestClient]] = []

    def make(
        fake: FakeGitHub = fake_github,
        *,
        build: dict[str, object] | None = None,
        github: dict[str, object] | None = None,
        **tuning: Any,
    ) -> World:
        settings = settings_for(tmp_path, fake.base_url, build=build, **(github or {}))
        write_index(settings.public_dir)
        app = create_app(settings, dispatch=False)
        service = app.state.service
        dispatcher = GitHubDispatcher(
            settings, service.queue, service.store, tuning=replace(FAST, **tuning)
        )
        service.dispatcher = dispatcher
        client = TestClient(app)
        client.__enter__()
        dispatcher.start()
        started.append((dispatcher, client))
        return World(fake, settings, client, service, dispatcher, tmp_path / "jobs")

    yield make
    for dispatcher, client in started:
        dispatcher.stop()
        client.__exit__(None, None, None)


def attest(fake: FakeGitHub, token: str) -> str:
    """What actions/attest-build-provenance does with the workflow's token: one POST of
    a Sigstore bundle. Returns the attestation's URL."""
    repo = fake.repo_full_name
    bundle = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}
    with Session(timeout=(2.0, 2.0), retries=0) as http:
        made = http.post(
            f"{fake.base_url}/repos/{repo}/attestations",
            json={"bundle": bundle},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert made.status_code == 201, made.text
    return f"https://github.com/{repo}/attestations/{made.json()['id']}"


def normalized_of(request: dict[str, Any]) -> NormalizedRequest:
    """A request as the endpoint normalises it before hashing (without the index)."""
    return NormalizedRequest.from_request(BuildRequest.model_validate(request))


def ref_of(w: World, key: str) -> str | None:
    """The backend reference the queue keeps for ``key`` (None while it has no row)."""
    row = w.dispatcher.queue.get(key)
    return None if row is None else row.backend_ref

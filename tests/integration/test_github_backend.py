"""The ``github`` backend against the fake GitHub REST API, over real HTTP.

The product code runs unchanged (real PyGithub, real requests): only
``github.api_url`` points at the fake on 127.0.0.1. The fake's ``on_dispatch``
hook plays the workflow: it checks the inputs as ``build.yml`` does and
publishes a release with the product's own :class:`ReleasesStore`.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import inspect
import json
import re
import socket
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import github
import pytest
import requests
from github.Workflow import Workflow
from typer.testing import CliRunner

from asu_ci.api.app import create_app
from asu_ci.build.matrix import MAX_MATRIX_JOBS, matrix, select
from asu_ci.cli import app as cli
from asu_ci.dispatch.github import GitHubDispatcher
from asu_ci.errors import BuildError, ConfigError, UsageError
from asu_ci.github import rate_limit_wait
from asu_ci.identity.hashing import request_hash
from asu_ci.protocol import Failed
from asu_ci.publish.local import LocalStore
from asu_ci.publish.releases import (
    ReleasesStore,
    built_here,
    publish_folder,
    pull,
    pull_all,
)
from tests.support import fakegithub, githubworld
from tests.support.fakegithub import FakeGitHub, FakeRun
from tests.support.githubworld import (
    FAST,
    IMAGE,
    NO_PAUSES,
    PROFILE,
    ROOT,
    TARGET,
    TOKEN_ENV,
    VERSION,
    World,
    build_body,
    build_folder,
    image_bytes,
    normalized_of,
    ref_of,
    request_body,
    settings_for,
    wait_for,
)

fake_github = fakegithub.fake_github
world = githubworld.world

# -- end to end ------------------------------------------------------------------------------


def test_request_is_built_by_one_run_and_mirrored(world: Callable[..., World]) -> None:
    w = world()
    building = threading.Event()
    w.fake.on_dispatch = lambda run: w.workflow_publishes(run, release=building)

    first = w.post()
    assert first.status_code == 202
    key = first.json()["request_hash"]
    assert w.post().status_code == 202  # a repeated POST is a poll

    started = w.wait_status(key, 202)
    wait_for(lambda: w.poll(key).headers["X-Imagebuilder-Status"] == "building_image")
    started = w.poll(key)
    assert started.json()["detail"] == "started"
    building.set()

    done = w.wait_status(key, 200)
    assert done.json()["request_hash"] == key
    assert done.headers["X-Imagebuilder-Status"] == "done"
    # Mirrored: later polls are the static files.
    folder = w.store.folder(key)
    assert json.loads((folder / "build.json").read_text()) == done.json()
    # status.json turns 200 just after build.json appears (publish writes it second).
    wait_for(lambda: json.loads((folder / "status.json").read_text())["status"] == 200)
    static = w.client.get(f"/store/{key}/build.json")
    assert static.status_code == 200
    assert static.json() == done.json()

    (run,) = w.runs_of(key)
    assert len(w.dispatches()) == 1
    assert w.dispatches()[0].json["ref"] == "main"
    assert run.status == "completed"
    row = w.dispatcher.queue.get(key)
    assert row is not None
    assert (row.state, row.backend_ref) == ("done", f"run:{run.id}")
    # The image is proxied from the release with its length and CORS.
    image = w.client.get(f"/store/{key}/{IMAGE}", headers={"Origin": "http://luci.example"})
    assert image.status_code == 200
    assert image.content == image_bytes(key)
    assert image.headers["Content-Length"] == str(len(image_bytes(key)))
    assert image.headers["Access-Control-Allow-Origin"] == "*"
    head = w.client.head(f"/store/{key}/{IMAGE}")
    assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(image_bytes(key))))
    missing = w.client.get(f"/store/{key}/nothing.bin")
    assert missing.status_code == 404
    assert "detail" in missing.json()
    unknown = w.client.get(f"/store/{'0' * 64}/{IMAGE}")
    assert unknown.status_code == 404


def test_complete_release_means_no_dispatch(
    fake_github: FakeGitHub, world: Callable[..., World]
) -> None:
    # A prebuild published this request before anyone asked for it.
    normalized = normalized_of(request_body())
    key = request_hash(normalized)
    body = build_body(key, normalized.to_json())
    fake_github.publish_release(
        f"build-{key}", {IMAGE: image_bytes(key), "build.json": json.dumps(body).encode()}
    )
    w = world()
    assert w.post().json()["request_hash"] == key
    assert w.wait_status(key, 200).json() == body
    assert w.dispatches() == []
    assert w.fake.runs == []


def test_failed_run_is_500_naming_the_run_with_the_output(world: Callable[..., World]) -> None:
    w = world()
    w.fake.download_host = "localhost"  # the artifact's zip comes from another host
    w.fake.on_dispatch = w.workflow_fails
    key = w.post().json()["request_hash"]
    failed = w.wait_status(key, 500).json()
    (run,) = w.runs_of(key)
    assert failed["detail"].startswith("Image too big")
    assert f"/actions/runs/{run.id}" in failed["detail"]
    assert failed["stderr"] == "is too big"
    assert failed["imagebuilder_status"] == "failed"
    row = w.dispatcher.queue.get(key)
    assert row is not None and row.state == "failed"
    # The failure took no release and no tag: build-<hash> stays free for a retry.
    assert w.fake.releases == []
    assert w.releases().build_tags() == []


def test_a_retried_failure_publishes_under_its_tag_with_immutable_releases(
    world: Callable[..., World],
) -> None:
    w = world(build={"failure_retry_seconds": 600})
    w.fake.immutable_releases = True
    w.fake.on_dispatch = w.workflow_fails
    key = w.post().json()["request_hash"]
    assert w.wait_status(key, 500).json()["detail"].startswith("Image too big")
    assert w.fake.releases == []
    assert w.post().status_code == 500  # within failure_retry_seconds: the failure stands
    assert len(w.dispatches()) == 1

    # Ten minutes later (the failure's time moved back rather than the test waiting):
    failed = Failed.model_validate(w.store.status(key))
    assert failed.failed_at is not None
    w.store.write_status(key, failed.model_copy(update={"failed_at": failed.failed_at - 601}))
    w.fake.on_dispatch = w.workflow_publishes
    assert w.post().status_code == 202  # dispatched again
    expected = build_body(key, normalized_of(request_body()).to_json())
    assert w.wait_status(key, 200).json() == expected
    assert len(w.dispatches()) == 2
    (release,) = w.fake.releases
    assert (release.tag_name, release.draft) == (f"build-{key}", False)
    assert w.releases().build_tags() == [key]
    image = w.client.get(f"/store/{key}/{IMAGE}")
    assert (image.status_code, image.content) == (200, image_bytes(key))


def test_a_run_report_about_another_request_is_not_used(world: Callable[..., World]) -> None:
    w = world()

    def fails(run: FakeRun) -> None:
        key, _ = w.checked_inputs(run)
        other = Failed.of("0" * 64, BuildError("someone else's failure"))
        report = json.dumps(other.json_body()).encode()
        w.fake.add_artifact(run.id, f"store-{key}", {"status.json": report})
        w.fake.complete_run(run.id, "failure")

    w.fake.on_dispatch = fails
    key = w.post().json()["request_hash"]
    detail = w.wait_status(key, 500).json()["detail"]
    assert detail.startswith("The build job ended with 'failure'")
    assert "someone else" not in detail


def test_cancelled_run_without_a_report_is_500(world: Callable[..., World]) -> None:
    w = world()

    def cancelled(run: FakeRun) -> None:
        w.fake.complete_run(run.id, "cancelled")

    w.fake.on_dispatch = cancelled
    key = w.post().json()["request_hash"]
    failed = w.wait_status(key, 500).json()
    assert "ended with 'cancelled'" in failed["detail"]
    assert "/actions/runs/" in failed["detail"]


# -- one request, at most one run ------------------------------------------------------------


def test_5xx_without_a_run_is_sent_again_after_a_look(world: Callable[..., World]) -> None:
    w = world()
    w.fake.on_dispatch = w.workflow_publishes
    w.fake.fail_next("POST", r"/dispatches$", status=500)
    key = w.post().json()["request_hash"]
    w.wait_status(key, 200)
    assert [r.status for r in w.dispatches()] == [500, 200]
    assert len(w.runs_of(key)) == 1
    posts = w.dispatches()
    looks = [
        r
        for r in w.fake.find_requests("GET", r"/actions/workflows/[^/]+/runs$")
        if posts[0].time <= r.time <= posts[1].time
    ]
    assert looks, "no look for the run between the two dispatches"


def test_5xx_after_the_run_started_is_not_sent_again(world: Callable[..., World]) -> None:
    w = world()
    w.fake.on_dispatch = w.workflow_publishes
    w.fake.fail_next("POST", r"/dispatches$", status=502, apply=True)
    key = w.post().json()["request_hash"]
    w.wait_status(key, 200)
    assert [r.status for r in w.dispatches()] == [502]
    assert len(w.runs_of(key)) == 1


@pytest.mark.parametrize("mode", ["drop", "delay"])
def test_lost_answer_gives_exactly_one_run(world: Callable[..., World], mode: str) -> None:
    w = world()
    w.fake.on_dispatch = w.workflow_publishes
    w.fake.accept_then_timeout(r"/dispatches$", mode=mode, delay=3)
    key = w.post().json()["request_hash"]
    w.wait_status(key, 200)
    assert len(w.dispatches()) == 1
    assert len(w.runs_of(key)) == 1
    assert len(w.fake.runs) == 1


def test_secondary_rate_limit_pauses_for_retry_after(world: Callable[..., World]) -> None:
    w = world()
    w.fake.on_dispatch = w.workflow_publishes
    w.fake.rate_limit_next(r"/dispatches$", retry_after=1, method="POST")
    key = w.post().json()["request_hash"]
    w.wait_status(key, 200)
    first, second = w.dispatches()
    assert (first.status, second.status) == (403, 200)
    assert second.time - first.time >= 0.95
    # A refused dispatch started nothing: no look-up was needed, one run.
    assert len(w.runs_of(key)) == 1
    assert w.dispatcher.outage() is None


def test_dispatch_attempts_are_bounded_and_clients_get_503(world: Callable[..., World]) -> None:
    w = world(dispatch_attempts=2, backoff_initial=30.0, backoff_max=30.0)
    w.fake.fail_next("POST", r"/dispatches$", status=503, times=100)
    key = w.post().json()["request_hash"]
    wait_for(lambda: w.dispatcher.outage() is not None)
    time.sleep(0.3)
    assert len(w.dispatches()) == 2
    assert w.fake.runs == []
    # Nothing lost: the request is still in flight and polls keep answering 202.
    assert w.poll(key).status_code == 202
    row = w.dispatcher.queue.get(key)
    assert row is not None and row.state == "running"
    # A new request is queued durably but its client hears why nothing happens.
    other = w.post(packages=["luci", "tcpdump"])
    assert other.status_code == 503
    body = other.json()
    assert body["status"] == 503
    assert "GitHub answered 503" in body["detail"]
    assert "kept in the queue" in body["detail"]
    queued = w.dispatcher.queue.counts()
    assert queued["queued"] + queued["running"] == 2


@pytest.mark.parametrize(
    "change",
    [{"state": "disabled_fork"}, {"state": "disabled_inactivity"}, {"dispatchable": False}],
    ids=["fresh-fork", "60-days", "no-trigger"],
)
def test_a_refused_workflow_is_an_outage_and_requests_wait_for_the_fix(
    world: Callable[..., World], change: dict[str, Any]
) -> None:
    w = world()
    w.fake.on_dispatch = w.workflow_publishes
    w.fake.set_workflow("build.yml", **change)
    assert w.post().status_code in (202, 503)  # 503 once the dispatcher met the refusal
    wait_for(lambda: w.dispatcher.outage() is not None)
    other = w.post(packages=["luci", "tcpdump"])
    assert other.status_code == 503
    assert "GitHub answered 422" in other.json()["detail"]
    assert "enable the workflow build.yml" in other.json()["detail"]
    time.sleep(1.0)  # several back-off rounds: refused again each time, never failed
    again = w.post()  # the same request: kept in the queue, a poll
    assert again.status_code == 202
    key = again.json()["request_hash"]
    assert w.poll(key).status_code == 202
    assert all(r.status == 422 for r in w.dispatches()) and w.fake.runs == []
    counts = w.dispatcher.queue.counts()
    assert counts["queued"] + counts["running"] == 2

    w.fake.set_workflow("build.yml", state="active", dispatchable=True)  # the operator's fix
    assert w.wait_status(key, 200).json()["request_hash"] == key
    other_key = w.post(packages=["luci", "tcpdump"]).json()["request_hash"]  # kept: a poll
    assert w.wait_status(other_key, 200).json()["request_hash"] == other_key
    assert len(w.runs_of(key)) == len(w.runs_of(other_key)) == 1
    wait_for(lambda: w.dispatcher.outage() is None)


def test_secondary_rate_limit_without_retry_after_waits_a_minute(
    world: Callable[..., World],
) -> None:
    w = world()
    w.fake.on_dispatch = w.workflow_publishes
    w.fake.rate_limit_next(r"/dispatches$", retry_after=None, method="POST")
    key = w.post().json()["request_hash"]
    wait_for(lambda: len(w.dispatches()) == 1 and w.dispatches()[0].status == 403)
    time.sleep(1.5)  # a Retry-After: 1 limit is sent again by now (see above); this one is not
    assert len(w.dispatches()) == 1
    assert w.poll(key).status_code == 202
    assert w.dispatcher.outage() is None  # paused for a limit, not out of order


def test_upload_secondary_rate_limit_without_retry_after_is_a_limit(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    fake_github.rate_limit_next(r"/assets$", retry_after=None, method="POST")
    releases.max_wait = 5.0  # below the minute such a limit asks for: given up, not retried
    with pytest.raises(github.RateLimitExceededException) as err:
        releases.publish(KEY, folder, build_body(KEY, REQUEST))
    assert rate_limit_wait(err.value) == 60.0
    uploads = fake_github.find_requests("POST", r"/assets$")
    assert [r.status for r in uploads] == [403]


def test_an_enterprise_refusing_run_details_is_dispatched_without_them(
    world: Callable[..., World],
) -> None:
    w = world()
    w.fake.dispatch_details = "refuse"
    w.fake.on_dispatch = w.workflow_publishes
    first = w.post().json()["request_hash"]
    assert w.wait_status(first, 200).json()["request_hash"] == first
    second = w.post(packages=["luci", "tcpdump"]).json()["request_hash"]
    w.wait_status(second, 200)
    sent = [("return_run_details" in r.json, r.status) for r in w.dispatches()]
    assert sent == [(True, 400), (False, 204), (False, 204)]  # refused once, then never asked
    assert len(w.runs_of(first)) == len(w.runs_of(second)) == 1


def test_a_204_whose_run_shows_late_is_looked_for_never_sent_again(
    world: Callable[..., World],
) -> None:
    w = world(lookup_delays=(0.0, 0.1), accepted_look_interval=0.2)
    w.fake.dispatch_details = "never"
    w.fake.list_delay = 1.5  # runs show in listings late
    w.fake.on_dispatch = w.workflow_publishes
    key = w.post().json()["request_hash"]
    assert w.poll(key).status_code == 202  # never a failure while the run may exist
    assert w.wait_status(key, 200).json()["request_hash"] == key
    assert len(w.dispatches()) == 1
    assert [r.json["return_run_details"] for r in w.dispatches()] == [True]
    assert len(w.runs_of(key)) == 1


def test_a_token_without_a_permission_is_an_outage_naming_it(
    world: Callable[..., World],
) -> None:
    w = world(backoff_initial=30.0, backoff_max=30.0)
    login = fakegithub.DEFAULT_LOGIN
    w.fake.permissions = {login: {"actions:read", "contents:read"}}
    # Queued either way: 202, or 503 when the refused dispatch comes back first.
    assert w.post().status_code in (202, 503)
    key = request_hash(normalized_of(request_body()))
    wait_for(lambda: w.dispatcher.outage() is not None)
    refused = w.fake.find_requests("POST", r"/dispatches$")
    assert [r.status for r in refused] == [403]
    other = w.post(packages=["luci", "tcpdump"])
    assert other.status_code == 503
    assert "Resource not accessible" in other.json()["detail"]
    assert "actions=write" in other.json()["detail"]
    assert w.poll(key).status_code == 202  # kept, not a 500 cached
    # The operator grants the permission: the kept request is dispatched.
    w.fake.permissions = None
    w.fake.on_dispatch = w.workflow_publishes
    w.dispatcher._paused_until = 0.0  # skip the 30 s back-off
    w.wait_status(key, 200)


def test_a_run_cancelled_by_a_newer_one_of_its_group_is_followed_to_the_newer(
    world: Callable[..., World],
) -> None:
    w = world()
    normalized = normalized_of(request_body())
    key = request_hash(normalized)
    inputs = {"hash": key, "request": json.dumps(normalized.to_json())}
    running = w.fake.dispatch(inputs)  # another replica's run of this hash
    w.fake.start_run(running.id)
    assert w.post().json()["request_hash"] == key
    wait_for(lambda: len(w.runs_of(key)) == 2)
    ours = max(r.id for r in w.runs_of(key))
    assert w.fake.get_run(ours).status == "pending"  # behind the running one
    wait_for(lambda: ref_of(w, key) == f"run:{ours}")
    newer = w.fake.dispatch(inputs)  # a third: GitHub cancels ours, the pending one
    assert w.fake.get_run(ours).conclusion == "cancelled"
    w.fake.complete_run(running.id, "failure")
    assert w.fake.get_run(newer.id).status == "queued"
    wait_for(lambda: ref_of(w, key) == f"run:{newer.id}")
    w.workflow_publishes(w.fake.get_run(newer.id))
    assert w.wait_status(key, 200).json()["request_hash"] == key


def test_runs_the_listing_misses_are_all_followed_past_the_fetch_bound(
    world: Callable[..., World],
) -> None:
    w = world(follow_max_gets=2)
    w.fake.list_delay = 3600.0  # listings show none of them: each is fetched on its own
    keys = [w.post(packages=["luci", f"pkg{i}"]).json()["request_hash"] for i in range(5)]
    wait_for(lambda: all(len(w.runs_of(k)) == 1 for k in keys))
    for key in keys[:2]:  # still building, and the first to be fetched
        w.fake.start_run(w.runs_of(key)[0].id)
    for key in keys[2:]:
        w.workflow_publishes(w.runs_of(key)[0])
    for key in keys[2:]:
        assert w.wait_status(key, 200).json()["request_hash"] == key
    for key in keys[:2]:
        assert w.poll(key).headers["X-Imagebuilder-Status"] == "building_image"


def test_rate_limit_wait_reads_github_headers() -> None:
    import github

    now = 1_000_000.0
    secondary = github.GithubException(403, {"message": "x"}, {"Retry-After": "7"})
    assert rate_limit_wait(secondary, now) == 7.0
    primary = github.RateLimitExceededException(
        403,
        {"message": "API rate limit exceeded"},
        {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 30)},
    )
    assert rate_limit_wait(primary, now) == 30.0
    assert rate_limit_wait(github.GithubException(429, {}, {}), now) == 60.0
    assert rate_limit_wait(github.GithubException(403, {"message": "no"}, {}), now) is None
    assert rate_limit_wait(github.GithubException(500, {}, {}), now) is None


# -- GitHub unreachable -------------------------------------------------------------------------


class Gate:
    """A TCP forwarder on a fixed 127.0.0.1 port that can be shut (refusing) and opened again."""

    def __init__(self, target: int) -> None:
        self.target = target
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._open = threading.Event()
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()

    def open(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(64)
        server.settimeout(0.05)
        self._open.set()
        self._thread = threading.Thread(target=self._accept, args=(server,), daemon=True)
        self._thread.start()

    def shut(self) -> None:
        self._open.clear()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock:
            conns, self._conns = self._conns, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, server: socket.socket) -> None:
        with server:
            while self._open.is_set():
                try:
                    client, _ = server.accept()
                except TimeoutError:
                    continue
                upstream = socket.create_connection(("127.0.0.1", self.target))
                with self._lock:
                    self._conns |= {client, upstream}
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


class GatedGitHub(FakeGitHub):
    """The fake, reached (and naming its own URLs) through a :class:`Gate`."""

    gate: Gate | None = None

    @property
    def base_url(self) -> str:
        if self.gate is None:
            return super().base_url
        return f"http://{self.host}:{self.gate.port}"


def test_unreachable_github_503_then_everything_dispatched_once(
    world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = GatedGitHub()
    fake.start()
    gate = Gate(fake.port)
    fake.gate = gate
    gate.open()
    try:
        monkeypatch.setenv(TOKEN_ENV, fake.token)
        fake.add_workflow_from_yaml(ROOT / ".github" / "workflows" / "build.yml")
        w = world(fake)
        fake.on_dispatch = w.workflow_publishes
        gate.shut()  # GitHub is gone

        first = w.post()
        assert first.status_code in (202, 503)
        key_a = first.json().get("request_hash") or w.post().json()["request_hash"]
        wait_for(lambda: w.dispatcher.outage() is not None)
        second = w.post(packages=["luci", "tcpdump"])
        assert second.status_code == 503
        assert second.headers["content-type"].startswith("application/json")
        detail = second.json()["detail"]
        assert "GitHub cannot be reached" in detail
        assert "kept in the queue" in detail
        again = w.post(packages=["luci", "tcpdump"])  # known now: a poll, 202
        assert again.status_code == 202
        key_b = again.json()["request_hash"]
        assert w.poll(key_a).status_code == 202
        assert w.dispatches() == []

        gate.open()  # GitHub is back
        w.wait_status(key_a, 200, timeout=15)
        w.wait_status(key_b, 200, timeout=15)
        assert w.dispatcher.outage() is None
        assert len(w.runs_of(key_a)) == 1
        assert len(w.runs_of(key_b)) == 1
        assert len(w.dispatches()) == 2
    finally:
        gate.shut()
        fake.stop()
    fake.check()


def test_restart_follows_the_recorded_run(world: Callable[..., World]) -> None:
    w = world()
    go = threading.Event()
    w.fake.on_dispatch = lambda run: w.workflow_publishes(run, release=go)
    key = w.post().json()["request_hash"]

    def recorded() -> str:
        row = w.dispatcher.queue.get(key)
        return (row.backend_ref or "") if row is not None else ""

    wait_for(lambda: recorded().startswith("run:"))
    w.dispatcher.stop()  # the endpoint goes away while the run goes on

    again = GitHubDispatcher(w.settings, w.service.queue, w.service.store, tuning=FAST)
    w.service.dispatcher = again
    again.start()
    try:
        go.set()
        w.wait_status(key, 200)
    finally:
        again.stop()
    assert len(w.dispatches()) == 1
    assert len(w.runs_of(key)) == 1


# -- the releases store ---------------------------------------------------------------------------


@pytest.fixture
def releases(
    fake_github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ReleasesStore]:
    monkeypatch.setenv(TOKEN_ENV, fake_github.token)
    store = ReleasesStore(
        settings_for(tmp_path, fake_github.base_url).github, pace=NO_PAUSES, attempts=3
    )
    yield store
    store.close()


KEY = "c" * 64
REQUEST = {"version": VERSION, "target": TARGET, "profile": PROFILE}


def test_publish_uploads_build_json_after_every_file(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    (release,) = fake_github.releases
    assert release.tag_name == f"build-{KEY}"
    names = [a.name for a in fake_github.assets_of(release.id)]
    assert names[-2:] == ["build.json", "status.json"]
    assert sorted(names[:-2]) == sorted(
        [IMAGE, "sha256sums", "profiles.json", f"openwrt-{PROFILE}.manifest"]
    )
    assert releases.is_complete(KEY)
    assert releases.build(KEY) == build_body(KEY, REQUEST)
    assert releases.status(KEY) == build_body(KEY, REQUEST)
    create = fake_github.find_requests("POST", r"/releases$")[0].json
    assert create["make_latest"] == "false"


def test_publish_again_changes_nothing(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    before = [(a.id, a.name) for a in fake_github.assets_of(fake_github.releases[0].id)]
    fake_github.clear_requests()
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    assert len(fake_github.releases) == 1
    assert [(a.id, a.name) for a in fake_github.assets_of(fake_github.releases[0].id)] == before
    assert [r for r in fake_github.requests if r.method in ("POST", "DELETE", "PATCH")] == []


def test_interrupted_publish_resumes_without_duplicates(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    # An earlier run created the release, uploaded the image and a truncated manifest.
    release = fake_github.create_release(f"build-{KEY}")
    fake_github.add_asset(release.id, IMAGE, image_bytes(KEY))
    fake_github.add_asset(release.id, f"openwrt-{PROFILE}.manifest", b"lu")
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    assert len(fake_github.releases) == 1
    assets = fake_github.assets_of(release.id)
    names = [a.name for a in assets]
    assert len(names) == len(set(names)) == 6
    manifest = next(a for a in assets if a.name.endswith(".manifest"))
    assert manifest.data == b"luci - 1\n"
    uploads = fake_github.find_requests("POST", r"/assets$")
    assert IMAGE not in [r.param("name") for r in uploads]  # same size: skipped


def test_upload_answer_lost_then_422_already_exists_is_done(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    fake_github.accept_then_timeout(r"/assets$", method="POST")
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    statuses = [r.status for r in fake_github.find_requests("POST", r"/assets$")]
    assert statuses[:2] == [None, 422]  # stored, answer lost; the retry finds it there
    names = [a.name for a in fake_github.assets_of(fake_github.releases[0].id)]
    assert len(names) == len(set(names)) == 6


def test_racing_publish_leaves_the_winner_and_drops_our_draft(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    # Another job publishes the tag between our uploads and our publishing.
    fake_github.fail_next(
        "PATCH",
        r"/releases/\d+$",
        status=422,
        body={"message": "Validation Failed", "errors": [{"code": "already_exists"}]},
    )
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    assert fake_github.releases == []  # our draft is gone; the winner's release stands
    assert len(fake_github.find_requests("DELETE", r"/releases/\d+$")) == 1


def test_immutable_releases_are_drafted_uploaded_then_published(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    fake_github.immutable_releases = True
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    (release,) = fake_github.releases
    assert not release.draft
    assert len(fake_github.assets_of(release.id)) == 6
    create = fake_github.find_requests("POST", r"/releases$")[0].json
    assert create["draft"] is True
    patch = fake_github.find_requests("PATCH", r"/releases/\d+$")
    assert [r.json["draft"] for r in patch] == [False]
    last_upload = fake_github.find_requests("POST", r"/assets$")[-1].time
    assert patch[0].time >= last_upload
    assert releases.build(KEY) == build_body(KEY, REQUEST)
    # Published: GitHub refuses any change, and publishing again sends none.
    fake_github.clear_requests()
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    assert [r for r in fake_github.requests if r.method != "GET"] == []


def test_reuse_compares_the_digest_and_replaces_unfinished_uploads(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    release = fake_github.create_release(f"build-{KEY}")
    same_size = bytes(len(image_bytes(KEY)))  # other bytes of the same length
    fake_github.add_asset(release.id, IMAGE, same_size)
    fake_github.add_asset(release.id, "sha256sums", b"", state="starter")
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    assets = {a.name: a for a in fake_github.assets_of(release.id)}
    assert assets[IMAGE].data == image_bytes(KEY)
    assert assets["sha256sums"].state == "uploaded"
    assert assets["sha256sums"].data == (folder / "sha256sums").read_bytes()


def test_rate_limited_upload_waits_and_goes_on(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    fake_github.rate_limit_next(r"/assets$", retry_after=1, method="POST")
    started = time.monotonic()
    releases.publish(KEY, folder, build_body(KEY, REQUEST))
    assert time.monotonic() - started >= 0.95
    names = [a.name for a in fake_github.assets_of(fake_github.releases[0].id)]
    assert len(names) == len(set(names)) == 6


def test_publish_refuses_a_build_of_another_request(
    releases: ReleasesStore, tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    with pytest.raises(Exception, match="not about request"):
        releases.publish("d" * 64, folder, build_body(KEY, REQUEST))


def test_local_store_round_trip(
    fake_github: FakeGitHub, releases: ReleasesStore, tmp_path: Path
) -> None:
    built = LocalStore(tmp_path / "built")
    build_folder(built.root, KEY, REQUEST)
    failed_key = "e" * 64
    built.write_status(failed_key, Failed.of(failed_key, BuildError("broken", stderr="x")))
    assert built_here(built) == [KEY, failed_key]
    assert publish_folder(releases, built, KEY) == "published"
    assert publish_folder(releases, built, KEY) == "published already"
    # A failure publishes nothing: its tag stays free for a retry.
    assert publish_folder(releases, built, failed_key) == "failed: nothing published"
    assert releases.release(failed_key) is None
    assert releases.build_tags() == [KEY]
    with pytest.raises(UsageError, match="nothing to publish"):
        publish_folder(releases, built, "f" * 64)

    mirror = LocalStore(tmp_path / "mirror")
    assert pull(releases, mirror, KEY)
    assert not pull(releases, mirror, failed_key)
    assert mirror.build(KEY) == build_body(KEY, REQUEST)
    assert sorted(p.name for p in mirror.folder(KEY).iterdir()) == ["build.json", "status.json"]
    assert built_here(mirror) == []  # mirrored folders are not published again
    other = LocalStore(tmp_path / "other")
    assert pull_all(releases, other) == (1, 1)
    assert pull_all(releases, other) == (0, 1)
    # The Pages copy holds no images: each entry links its release download URL.
    (image,) = other.build(KEY)["images"]  # type: ignore[index]
    assert image["url"] == releases.download_url(KEY, IMAGE)
    assert image["url"].endswith(f"/releases/download/build-{KEY}/{IMAGE}")
    with requests.get(image["url"], timeout=10) as fetched:  # no token: a public download
        assert fetched.status_code == 200 and fetched.content == image_bytes(KEY)


def test_pages_pull_mirrors_more_than_1000_releases(
    fake_github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asu-ci release pull --all`` as pages.yml runs it, past GitHub's 1,000-release listing."""
    keys = [hashlib.sha256(str(n).encode()).hexdigest() for n in range(1005)]
    for key in keys:
        body = json.dumps(build_body(key, REQUEST)).encode()
        fake_github.publish_release(f"build-{key}", {IMAGE: b"img", "build.json": body})
    incomplete, failed = "c" * 64, "d" * 64
    fake_github.publish_release(f"build-{incomplete}", {IMAGE: b"half"})
    fake_github.publish_release(f"build-{failed}", {"status.json": b'{"status": 500}'})
    fake_github.create_release("build-not-a-hash")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASU_CI_GITHUB__REPOSITORY", fake_github.repo_full_name)
    monkeypatch.setenv("ASU_CI_GITHUB__API_URL", fake_github.base_url)
    monkeypatch.setenv("GITHUB_TOKEN", fake_github.token)
    public = tmp_path / "public"
    runner = CliRunner()

    first = runner.invoke(cli, ["release", "pull", "--all", "--public", str(public)])
    assert first.exit_code == 0, first.output
    assert "1005 complete release(s), 1005 mirrored now" in first.output
    store = LocalStore(public / "store")
    for key in keys[:3] + keys[-3:]:  # the Pages copy links each image to its release
        linked = build_body(key, REQUEST)
        linked["images"][0]["url"] = (
            f"{fake_github.base_url}/{fake_github.repo_full_name}/releases/download/build-{key}/{IMAGE}"
        )
        assert store.build(key) == linked
    assert all(store.build(key) is not None for key in keys)
    assert store.build(incomplete) is None and store.build(failed) is None
    api = [r for r in fake_github.requests if "/releases/download/" not in r.path]
    api = [r for r in api if not r.path.startswith("/_fake/")]
    assert not any(r.path.endswith("/releases") for r in api)  # never the capped listing
    assert len(api) <= 3, [r.path for r in api]  # the repository and its build tags

    fake_github.clear_requests()
    again = runner.invoke(cli, ["release", "pull", "--all", "--public", str(public)])
    assert again.exit_code == 0, again.output
    assert "1005 complete release(s), 0 mirrored now" in again.output
    downloads = [r.path for r in fake_github.requests if "/releases/download/" in r.path]
    assert sorted(downloads) == sorted(  # only what is not mirrored yet is looked at
        f"/{fake_github.repo_full_name}/releases/download/build-{k}/build.json"
        for k in (incomplete, failed)
    )


#: The first PyGithub release that takes each keyword asu-ci passes (read from the wheels).
PYGITHUB_SINCE = {
    ("Github", "auth"): (2, 1),
    ("Github", "base_url"): (2, 1),
    ("Github", "timeout"): (2, 1),
    ("Github", "user_agent"): (2, 1),
    ("Github", "per_page"): (2, 1),
    ("Github", "retry"): (2, 1),
    ("Github", "seconds_between_requests"): (2, 1),
    ("Github", "seconds_between_writes"): (2, 1),
    ("Github", "lazy"): (2, 5),
    ("create_dispatch", "throw"): (2, 9),
    ("create_dispatch", "return_run_details"): (2, 10),
}


def _pygithub_keywords() -> set[tuple[str, str]]:
    """(callee, keyword) of every call to ``Github(...)`` or ``.create_dispatch(...)`` in asu_ci."""
    used = set()
    for path in (ROOT / "asu_ci").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("Github", "create_dispatch"):
                used |= {(name, k.arg) for k in node.keywords if k.arg is not None}
    return used


def test_declared_pygithub_floor_takes_every_keyword_the_code_passes() -> None:
    used = _pygithub_keywords()
    assert ("create_dispatch", "return_run_details") in used  # the scan sees the code
    unknown = used - set(PYGITHUB_SINCE)
    assert not unknown, f"look up which PyGithub release first takes {sorted(unknown)}"
    needed = max(PYGITHUB_SINCE[key] for key in used)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (spec,) = [d for d in pyproject["project"]["dependencies"] if d.lower().startswith("pygithub")]
    floor = re.fullmatch(r"pygithub\s*>=\s*(\d+)\.(\d+)(?:\.\d+)?", spec, re.IGNORECASE)
    assert floor is not None, spec
    declared = (int(floor[1]), int(floor[2]))
    assert declared >= needed, f"{spec}: the code needs PyGithub >= {needed[0]}.{needed[1]}"
    # And the PyGithub installed here takes them all (the table is not wishful).
    takes = {
        "Github": inspect.signature(github.Github.__init__).parameters,
        "create_dispatch": inspect.signature(Workflow.create_dispatch).parameters,
    }
    assert all(keyword in takes[callee] for callee, keyword in used)


def test_token_and_repository_come_from_the_right_places(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, "http://127.0.0.1:9")
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        ReleasesStore(settings.github, environ={})
    no_repo = settings.github.model_copy(update={"repository": None})
    with pytest.raises(ConfigError, match=r"github\.repository"):
        ReleasesStore(no_repo, environ={TOKEN_ENV: "t"})
    with pytest.raises(ConfigError, match=TOKEN_ENV):
        create_app(settings)


# -- matrices -----------------------------------------------------------------------------------


def test_matrix_groups_by_version_and_target_in_a_stable_order() -> None:
    entries = [
        {"version": "23.05.4", "target": "x86/64", "profile": "generic"},
        {"version": "23.05.4", "target": "ath79/generic", "profile": "b"},
        {"version": "23.05.4", "target": "ath79/generic", "profile": "a", "packages": ["luci"]},
        {"version": "23.05.4", "target": "ath79/generic", "profile": "b", "packages": ["x"]},
        {"version": "22.03.7", "target": "x86/64", "profile": "generic"},
    ]
    assert matrix(entries) == {
        "include": [
            {"version": "22.03.7", "target": "x86/64", "profiles": ["generic"]},
            {"version": "23.05.4", "target": "ath79/generic", "profiles": ["b", "a"]},
            {"version": "23.05.4", "target": "x86/64", "profiles": ["generic"]},
        ]
    }
    assert matrix(reversed(entries))["include"][1]["profiles"] == ["b", "a"]
    assert select(entries, "23.05.4", "ath79/generic") == entries[1:4]


def test_matrix_refuses_more_than_256_jobs_and_bad_entries() -> None:
    many = [
        {"version": "23.05.4", "target": f"t{n}/generic", "profile": "p"}
        for n in range(MAX_MATRIX_JOBS + 1)
    ]
    assert len(matrix(many[:-1])["include"]) == MAX_MATRIX_JOBS
    with pytest.raises(UsageError, match=r"257 .* more than the 256 jobs"):
        matrix(many)
    for bad in ({"version": "23.05.4", "target": "x86", "profile": "p"}, ["list"]):
        with pytest.raises(UsageError, match="entry 1"):
            matrix([bad])
    with pytest.raises(UsageError, match="'version'"):
        matrix([{"version": "$(reboot)", "target": "x86/64", "profile": "generic"}])


def test_matrix_command(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["matrix", str(ROOT / "prebuild.yaml")])
    assert result.exit_code == 0, result.output
    include = json.loads(result.stdout)["include"]
    assert 0 < len(include) <= MAX_MATRIX_JOBS
    assert include == sorted(include, key=lambda j: (j["version"], j["target"]))
    one = include[0]
    part = runner.invoke(
        cli,
        [
            "matrix",
            str(ROOT / "prebuild.yaml"),
            "--version",
            one["version"],
            "--target",
            one["target"],
        ],
    )
    assert part.exit_code == 0, part.output
    import yaml

    entries = yaml.safe_load(part.stdout)
    assert {e["profile"] for e in entries} == set(one["profiles"])
    too_many = tmp_path / "many.yaml"
    too_many.write_text(
        "\n".join(f"- {{version: 23.05.4, target: t{n}/s, profile: p}}" for n in range(300))
    )
    refused = runner.invoke(cli, ["matrix", str(too_many)])
    assert refused.exit_code == 2
    assert "more than the 256 jobs" in refused.stderr


def test_defaults_are_refused_and_inputs_carry_no_client(world: Callable[..., World]) -> None:
    """GitHub has no private path for a first-boot script (workflow inputs and release
    assets are public): the endpoint refuses it; other requests reach the workflow
    without what the requester called itself."""
    w = world()
    w.fake.on_dispatch = w.workflow_publishes
    refused = w.post(defaults="echo 'root:hunter2' | chpasswd\n")
    assert refused.status_code == 400
    detail = refused.json()["detail"]
    assert "defaults" in detail and "GitHub" in detail and "hunter2" not in detail
    assert w.dispatcher.queue.counts()["queued"] == 0

    built = w.post(client="evil/ see http://evil.example/")
    key = built.json()["request_hash"]
    done = w.wait_status(key, 200)
    (run,) = w.runs_of(key)
    assert "client" not in json.loads(run.inputs["request"])
    assert "evil" not in run.inputs["request"] and "evil" not in done.text
    assert len(w.dispatches()) == 1

"""The ``github`` backend: every build is one GitHub Actions run of ``build.yml``.

Two threads share the durable queue with the endpoint:

- the *dispatcher* claims queued requests. For each it first reads the release
  ``build-<hash>``: a complete one (it has ``build.json``) is mirrored into the
  local store and the request is done without a run. Otherwise it dispatches
  the workflow with three inputs, ``hash``, ``request`` (the normalised
  request as compact JSON: data, never code) and ``store``, and records the
  run's id in the queue (``backend_ref``), so a restarted endpoint follows the
  same run (with ``github.store: endpoint`` too: prebuilds are releases);
- the *follower* polls the runs in flight, at most once per ``poll_interval``
  with one listing of the workflow's recent runs: a queued run answers 202
  ``init``, a running one 202 ``building_image``; a finished one is read from
  its release, whose ``build.json`` is mirrored into ``store/<hash>/`` (with
  ``status.json``), so every later poll is a static file. A run that failed or
  was cancelled becomes a 500 naming the run, with the detail and output
  tails of the ``status.json`` the build job handed on in the run's artifact
  ``store-<hash>`` when there is one. A failure publishes no release: the tag
  ``build-<hash>`` stays free for the retry that succeeds. With
  ``github.store: endpoint`` a successful run is read from its artifact
  ``attested-<hash>`` instead, which :mod:`asu_ci.publish.artifacts` checks and
  moves into ``store/<hash>/``.

One request, at most one run. The dispatch POST is never repeated blindly
(the PyGithub client retries GET only). When its answer is lost (a timeout, a
dropped connection, a 5xx) the run may exist anyway, so the dispatcher looks
for it by its name (``run-name: build <hash>`` in the workflow) among the
workflow's recent runs, a few times over ``lookup_delays``, before it sends
again; after ``dispatch_attempts`` sends it backs off. A request picked up
again after a restart looks for its run the same way before any new dispatch.
A duplicate that slips through anyway (another replica, say) is harmless: the
workflow's concurrency group serialises runs of one hash, and a run first
checks whether the release is complete.

Rate limits. A 403/429 with ``Retry-After`` or an exhausted
``X-RateLimit-Remaining`` pauses the whole backend (both threads) until the
time GitHub names; a secondary limit that names no time pauses it a minute,
as GitHub asks. Nothing is sent meanwhile. The request that met the limit
stays claimed and is sent when the pause ends, without a look-up (GitHub
refused it, so it started nothing).

Where a client gets 503. When GitHub cannot be reached (no connection, time
outs, 5xx), refuses our credentials (401, 403, 404) or refuses the workflow
(a 422 for a disabled workflow — a fresh fork, 60 days without activity — no
``workflow_dispatch`` trigger, an unknown ref, undeclared inputs), the backend is
*unavailable*: it backs off exponentially up to ``backoff_max`` and then asks
GitHub again (``GET /rate_limit``, which costs no quota). Meanwhile the endpoint
still validates and queues new requests durably — nothing accepted is lost —
and the request that met the refusal stays claimed and is dispatched once it
passes, but :meth:`GitHubDispatcher.wake`, which the endpoint calls right after
queueing a *new* request, raises :class:`BackendUnavailableError`: that client
gets a 503 JSON body whose ``detail`` says what is wrong and that the request
is kept. A repeated POST or a poll of a queued request answers 202 from its
``status.json`` as usual. Once GitHub answers again, the queue drains in order.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import github
from github.Workflow import Workflow
from github.WorkflowRun import WorkflowRun

from asu_ci.config import Settings
from asu_ci.dispatch.base import log_outcome, recover
from asu_ci.dispatch.queue import Queue, Row
from asu_ci.errors import BackendUnavailableError, BuildError
from asu_ci.github import (
    ERRORS,
    Pace,
    describe,
    is_transient,
    missing_permission,
    rate_limit_wait,
    repository_name,
    token_from_env,
)
from asu_ci.protocol import Failed, Progress
from asu_ci.publish import artifacts
from asu_ci.publish.local import LocalStore
from asu_ci.publish.releases import PublishError, ReleasesStore

log = logging.getLogger(__name__)

#: The workflow's ``run-name``, rendered; it is how a run is found again by its hash.
RUN_NAME = "build {hash}"
#: GitHub refuses dispatches whose inputs exceed 65 535 characters.
MAX_INPUT_CHARS = 65_000


@dataclass(frozen=True)
class Tuning:
    """Intervals and bounds of the backend (seconds unless named otherwise)."""

    #: How often runs in flight are polled.
    poll_interval: float = 15.0
    #: How long one wait for a queued request lasts before the dispatcher looks around.
    claim_timeout: float = 1.0
    #: Sends of one dispatch (each after looking for a run of the lost one) before backing off.
    dispatch_attempts: int = 3
    #: Waits before each look for the run of a dispatch whose answer was lost.
    lookup_delays: tuple[float, ...] = (1.0, 3.0, 8.0)
    #: How far back to look for the run of a request picked up after a restart.
    lookup_window: float = 6 * 3600.0
    #: Runs examined by one look-up or one follow listing (newest first).
    lookup_max_runs: int = 500
    #: Runs fetched one by one in a follow round when the listing missed them.
    follow_max_gets: int = 20
    #: Difference allowed between our clock and GitHub's.
    clock_slack: float = 120.0
    #: First and largest pause while GitHub cannot be reached.
    backoff_initial: float = 5.0
    backoff_max: float = 300.0
    #: Longest pause a rate limit may impose in one go.
    max_rate_wait: float = 3600.0
    #: Polls a successful run gets to show its build.json before it counts as failed.
    success_grace_polls: int = 3
    #: Pauses PyGithub keeps between calls.
    pace: Pace = field(default_factory=Pace)
    #: Between looks for the run of a dispatch GitHub accepted without naming it.
    accepted_look_interval: float = 15.0


@dataclass
class _Job:
    hash: str
    request: dict[str, Any]
    #: Runs of this job were created after this (epoch seconds, our clock).
    since: float
    #: A dispatch may have gone through without us learning its run.
    maybe_sent: bool = False
    #: GitHub accepted a dispatch (204) without naming the run: only look, never send again.
    accepted: bool = False
    #: Not looked at again before this (monotonic seconds).
    not_before: float = 0.0
    run_id: int | None = None
    success_polls: int = 0
    #: When the follower last had news of the run (monotonic): the stalest is fetched first.
    seen: float = 0.0


class _Link:
    """One thread's own PyGithub client, repository, workflow and releases."""

    def __init__(self, settings: Settings, environ: Mapping[str, str] | None, pace: Pace) -> None:
        self.cfg = settings.github
        self.releases = ReleasesStore(self.cfg, environ=environ, pace=pace)
        self._workflow: Workflow | None = None

    def workflow(self) -> Workflow:
        if self._workflow is None:
            self._workflow = self.releases.repo.get_workflow(self.cfg.workflow)
        return self._workflow

    def probe(self) -> None:
        """One call that costs no quota: is GitHub there, and does it take our token?"""
        self.releases.github.get_rate_limit()

    def close(self) -> None:
        self.releases.close()


def _refused_for_its_size(exc: github.GithubException) -> bool:
    """A 422 about this request's inputs, not about the workflow.

    Every request sends the same two string inputs, so the only refusal one
    request can earn alone is its size; any other 422 (a disabled workflow,
    no ``workflow_dispatch`` trigger, an unknown ref, inputs the file does not
    declare) refuses every request until the operator fixes the repository.
    """
    message = exc.data.get("message") if isinstance(exc.data, dict) else None
    return exc.status == 422 and "too large" in str(message or "").lower()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(max(epoch, 0), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def dispatch_inputs(
    request_hash: str, request: Mapping[str, Any], store: str = "releases"
) -> dict[str, str]:
    """The ``workflow_dispatch`` inputs of ``build.yml`` for one request."""
    text = json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return {"hash": request_hash, "request": text, "store": store}


class GitHubDispatcher:
    """Implements :class:`~asu_ci.dispatch.base.Dispatcher` on GitHub Actions."""

    def __init__(
        self,
        settings: Settings,
        queue: Queue,
        store: LocalStore,
        *,
        tuning: Tuning | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        repository_name(settings.github)
        token_from_env(settings.github, environ)
        self.settings = settings
        self.queue = queue
        self.store = store
        self.tuning = tuning or Tuning()
        self._environ = environ
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._pending: dict[str, _Job] = {}
        self._running: dict[str, _Job] = {}
        self._paused_until = 0.0
        self._failures = 0
        self._outage: str | None = None
        self._threads: list[threading.Thread] = []
        #: False once GitHub refused ``return_run_details`` (an older GitHub Enterprise).
        self._run_details = True
        self._endpoint_store = settings.github.store == "endpoint"

    # -- the Dispatcher protocol -------------------------------------------------

    def start(self) -> None:
        # A run on GitHub outlives the endpoint: a restart follows it again, however often.
        recover(self.queue, self.store, give_up=None)
        for name, target in (("dispatch", self._dispatch_loop), ("follow", self._follow_loop)):
            thread = threading.Thread(target=target, name=f"asu-ci-github-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def wake(self) -> None:
        """Called after a new request was queued: 503 for its client while GitHub is away."""
        outage = self.outage()
        if outage is not None:
            raise BackendUnavailableError(
                f"The build backend (GitHub Actions) is unavailable right now: {outage}. "
                "The request is kept in the queue and is built once GitHub answers again; "
                "send it again later to see its state."
            )

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        for thread in self._threads:
            thread.join(timeout=2)

    # -- state -------------------------------------------------------------------

    def outage(self) -> str | None:
        """What is wrong with GitHub right now, or None."""
        with self._lock:
            return self._outage

    def _paused(self) -> bool:
        """Wait (a second at most) while the backend is paused; True if it is."""
        with self._lock:
            left = self._paused_until - time.monotonic()
        if left <= 0:
            return False
        self._stop.wait(min(left, 1.0))
        return True

    def _trouble(self, exc: BaseException) -> None:
        """Pause the whole backend after a failed call: as asked for, or with a back-off."""
        wait = rate_limit_wait(exc)
        with self._lock:
            if wait is not None:
                wait = min(wait, self.tuning.max_rate_wait)
                self._paused_until = max(self._paused_until, time.monotonic() + wait)
                log.warning("GitHub rate limit (%s): pausing for %.0f s", describe(exc), wait)
                return
            self._failures += 1
            delay = min(
                self.tuning.backoff_initial * 2 ** min(self._failures - 1, 16),
                self.tuning.backoff_max,
            )
            self._paused_until = max(self._paused_until, time.monotonic() + delay)
            permission = missing_permission(exc)
            if is_transient(exc):
                self._outage = describe(exc)
            elif permission is not None:
                cfg = self.settings.github
                self._outage = (
                    f"{describe(exc)}; the token in ${cfg.token_env} lacks the permission "
                    f"{permission} on {cfg.repository} (fine-grained token: Actions read/write, "
                    "Contents read, Metadata read)"
                )
            elif isinstance(exc, github.GithubException) and exc.status == 422:
                cfg = self.settings.github
                self._outage = (
                    f"{describe(exc)}; the operator should enable the workflow "
                    f"{cfg.workflow} in {cfg.repository} (Actions tab; a fork starts with "
                    "workflows disabled, and GitHub disables them after 60 days without "
                    f"activity) and check that it has workflow_dispatch with the inputs hash "
                    f"and request on {cfg.ref}"
                )
            else:
                cfg = self.settings.github
                self._outage = (
                    f"{describe(exc)}; the operator should check github.repository "
                    f"({cfg.repository}), github.workflow ({cfg.workflow}) and the token in "
                    f"${cfg.token_env}"
                )
            outage = self._outage
        log.warning("GitHub trouble (%s): pausing for %.0f s", outage, delay)

    def _healthy(self) -> None:
        with self._lock:
            self._failures = 0
            if self._outage is not None:
                log.warning("GitHub answers again")
            self._outage = None

    def _forget(self, request_hash: str) -> None:
        with self._lock:
            self._pending.pop(request_hash, None)
            self._running.pop(request_hash, None)

    # -- the dispatcher thread ---------------------------------------------------

    def _dispatch_loop(self) -> None:
        link = _Link(self.settings, self._environ, self.tuning.pace)
        try:
            while not self._stop.is_set():
                if self._paused():
                    continue
                job = self._next_job(link)
                if job is None:
                    continue
                try:
                    self._start(link, job)
                except ERRORS as exc:
                    self._trouble(exc)
                except Exception:  # a bug must not stop every other request
                    log.exception("dispatching %s failed", job.hash)
                    self._fail(job, BuildError("The dispatcher failed unexpectedly"))
                else:
                    self._healthy()
        finally:
            link.close()

    def _next_job(self, link: _Link) -> _Job | None:
        """The claimed request still to dispatch, else a new one from the queue."""
        now = time.monotonic()
        with self._lock:
            pending = next((j for j in self._pending.values() if j.not_before <= now), None)
        if pending is not None:
            return pending
        if self.outage() is not None:
            try:  # nothing to retry: ask GitHub whether it is back
                link.probe()
            except ERRORS as exc:
                self._trouble(exc)
            else:
                self._healthy()
            return None
        row = self.queue.claim(timeout=self.tuning.claim_timeout)
        if row is None:
            return None
        job = self._job_of(row)
        with self._lock:
            if job.run_id is not None:
                self._running[job.hash] = job
                self._kick.set()
                return None
            self._pending[job.hash] = job
        return job

    def _job_of(self, row: Row) -> _Job:
        now = time.time()
        job = _Job(row.hash, row.request, since=now)
        ref = row.backend_ref or ""
        if row.attempts <= 1:
            # A new build of this request: any older reference is about an earlier one.
            self.queue.set_backend_ref(row.hash, f"since:{now:.0f}")
        elif ref.startswith("run:") and ref[4:].isdigit():
            job.run_id = int(ref[4:])
        elif ref.startswith("since:") and ref[6:].isdigit():
            job.since, job.maybe_sent = float(ref[6:]), True
        else:
            job.since, job.maybe_sent = now - self.tuning.lookup_window, True
        return job

    def _start(self, link: _Link, job: _Job) -> None:
        # A release is read in both stores: prebuild.yml publishes the operator's list as
        # releases, whichever store on-demand builds use.
        build = link.releases.build(job.hash)
        if build is not None:
            log.info("%s is published already: mirrored, not built", job.hash)
            self._mirror(job, build)
            return
        if job.accepted:
            self._look_again(link, job, (0.0,))
            return
        if job.maybe_sent:
            found = self._lookup(link, job, (0.0,))
            if found is not None:
                self._follow_run(job, found.id)
                return
        inputs = dispatch_inputs(job.hash, job.request, self.settings.github.store)
        if len(json.dumps(inputs)) > MAX_INPUT_CHARS:
            self._fail(
                job,
                BuildError(
                    "The request is too large to hand to GitHub Actions "
                    f"(more than {MAX_INPUT_CHARS} characters); shorten defaults or "
                    "repository_keys"
                ),
            )
            return
        try:
            self._dispatch(link, job, inputs)
        except github.GithubException as exc:
            if not _refused_for_its_size(exc):
                raise  # a 422 about the workflow is an outage: the job waits for the fix
            self._fail(job, BuildError(f"GitHub refused to start the build: {describe(exc)}"))

    def _send(self, link: _Link, inputs: dict[str, str]) -> WorkflowRun | bool:
        """One dispatch; an older GitHub Enterprise that refuses ``return_run_details``
        (400) gets it again without the field, and every later one goes without it."""
        ref = self.settings.github.ref
        link.releases.content.wait()
        if self._run_details:
            try:
                return link.workflow().create_dispatch(
                    ref, inputs, throw=True, return_run_details=True
                )
            except github.GithubException as exc:
                if exc.status != 400 or "return_run_details" not in str(exc.data):
                    raise
                log.warning("GitHub refuses return_run_details: runs are found by their name")
                self._run_details = False
            link.releases.content.wait()
        return link.workflow().create_dispatch(ref, inputs, throw=True)

    def _look_again(self, link: _Link, job: _Job, delays: Iterable[float]) -> None:
        """A dispatch GitHub accepted: its run exists or will; look (never send) until found."""
        found = self._lookup(link, job, delays)
        if found is not None:
            self._follow_run(job, found.id)
            return
        job.accepted = job.maybe_sent = True
        job.not_before = time.monotonic() + self.tuning.accepted_look_interval
        self.store.write_status(job.hash, Progress.queued(job.hash))
        log.info("%s: GitHub accepted the dispatch; its run is not listed yet", job.hash)

    def _dispatch(self, link: _Link, job: _Job, inputs: dict[str, str]) -> None:
        """Send the dispatch; after a lost answer, look for its run before sending again."""
        lost: BaseException | None = None
        for _ in range(self.tuning.dispatch_attempts):
            job.since = min(job.since, time.time())
            try:
                result = self._send(link, inputs)
            except ERRORS as exc:
                if rate_limit_wait(exc) is not None or not is_transient(exc):
                    raise  # refused: GitHub started nothing
                lost = exc
                job.maybe_sent = True
                log.warning("dispatch of %s: %s; looking for its run", job.hash, describe(exc))
            else:
                if isinstance(result, WorkflowRun):
                    self._follow_run(job, result.id)
                    return
                # Accepted, but GitHub did not say which run (204): sending again could
                # start a second run, and runs show in listings late. Look, keyed by hash.
                self._look_again(link, job, self.tuning.lookup_delays)
                return
            found = self._lookup(link, job, self.tuning.lookup_delays)
            if found is not None:
                self._follow_run(job, found.id)
                return
            if self._stop.is_set():
                return
        assert lost is not None
        raise lost

    def _lookup(
        self, link: _Link, job: _Job, delays: Iterable[float], *, after: int = 0
    ) -> WorkflowRun | None:
        """The newest run named after this job's hash, created since the job began
        (and newer than run ``after``)."""
        title = RUN_NAME.format(hash=job.hash)
        created = ">=" + _iso(job.since - self.tuning.clock_slack)
        for delay in delays:
            if delay > 0 and self._stop.wait(delay):
                return None
            runs = link.workflow().get_runs(event="workflow_dispatch", created=created)
            for seen, run in enumerate(runs):
                if seen >= self.tuning.lookup_max_runs:
                    break
                if run.display_title == title and run.id > after:
                    log.info("found run %s of %s", run.id, job.hash)
                    return run
        return None

    def _follow_run(self, job: _Job, run_id: int) -> None:
        job.run_id = run_id
        self.queue.set_backend_ref(job.hash, f"run:{run_id}")
        self.store.write_status(job.hash, Progress.queued(job.hash))
        with self._lock:
            self._pending.pop(job.hash, None)
            self._running[job.hash] = job
        self._kick.set()
        log.info("%s: following run %s", job.hash, run_id)

    # -- the follower thread -----------------------------------------------------

    def _follow_loop(self) -> None:
        link = _Link(self.settings, self._environ, self.tuning.pace)
        try:
            while not self._stop.is_set():
                self._kick.wait(self.tuning.poll_interval)
                self._kick.clear()
                if self._stop.is_set() or self._paused():
                    continue
                with self._lock:
                    jobs = list(self._running.values())
                if not jobs:
                    continue
                try:
                    self._follow(link, jobs)
                except ERRORS as exc:
                    self._trouble(exc)
                except Exception:
                    log.exception("following the runs in flight failed")
                else:
                    self._healthy()
        finally:
            link.close()

    def _follow(self, link: _Link, jobs: list[_Job]) -> None:
        wanted = {job.run_id for job in jobs}
        created = ">=" + _iso(min(job.since for job in jobs) - self.tuning.clock_slack)
        listed: dict[int, WorkflowRun] = {}
        runs = link.workflow().get_runs(event="workflow_dispatch", created=created)
        for seen, run in enumerate(runs):
            if run.id in wanted:
                listed[run.id] = run
            if len(listed) == len(wanted) or seen >= self.tuning.lookup_max_runs:
                break
        fetched = 0
        # The runs the listing missed are fetched one by one, stalest first, so that more
        # than follow_max_gets of them (after a restart, say) are all followed in turn.
        for job in sorted(jobs, key=lambda j: j.seen):
            if self._stop.is_set():
                return
            assert job.run_id is not None
            found = listed.get(job.run_id)
            if found is None:
                if fetched >= self.tuning.follow_max_gets:
                    continue
                fetched += 1
                found = link.releases.repo.get_workflow_run(job.run_id)
            job.seen = time.monotonic()
            self._observe(link, job, found)

    def _observe(self, link: _Link, job: _Job, run: WorkflowRun) -> None:
        if run.status != "completed":
            if run.status == "in_progress":
                self.store.write_status(job.hash, Progress.building(job.hash, "building_image"))
            else:
                self.store.write_status(job.hash, Progress.queued(job.hash))
            return
        if self._endpoint_store and run.conclusion == "success":
            self._take(link, job, run)
            return
        build = None if self._endpoint_store else link.releases.build(job.hash)
        if build is not None:
            self._mirror(job, build)
            return
        if run.conclusion == "success" and job.success_polls < self.tuning.success_grace_polls:
            job.success_polls += 1  # a release can lag behind its run
            return
        if run.conclusion == "cancelled":
            # The concurrency group keeps one running and one pending run of a hash: a
            # newer run of the same hash cancels the one that was pending. Follow it.
            newer = self._lookup(link, job, (0.0,), after=run.id)
            if newer is not None:
                self._follow_run(job, newer.id)
                return
        report: dict[str, Any] = {}
        if run.conclusion != "success":  # a failure's report, from the run's artifact
            report = link.releases.run_report(run, job.hash) or {}
        if run.conclusion == "success":
            detail = "The build job finished without publishing build.json"
        else:
            detail = f"The build job ended with '{run.conclusion}'"
        if report.get("status") == 500 and report.get("detail"):
            detail = str(report["detail"])
        self._fail(
            job,
            BuildError(
                f"{detail} (GitHub Actions run {run.html_url})",
                stdout=str(report.get("stdout", "")),
                stderr=str(report.get("stderr", "")),
            ),
        )

    def _take(self, link: _Link, job: _Job, run: WorkflowRun) -> None:
        """A successful run's attested output into the local store (``store: endpoint``)."""
        try:
            build = artifacts.take(link.releases, run, job.hash, self.store)
        except PublishError as exc:
            self._fail(
                job,
                BuildError(
                    f"The output of GitHub Actions run {run.html_url} was refused: {exc.message}"
                ),
            )
            return
        if build is not None:
            self._done(job)
            return
        if job.success_polls < self.tuning.success_grace_polls:
            job.success_polls += 1
            return
        # Expired before the endpoint came to it (it was down for days): nothing failed
        # that a new run would not fix, so the next request builds it again at once.
        self._fail(
            job,
            BuildError(
                f"GitHub Actions run {run.html_url} built the request, but its output "
                f"({artifacts.artifact_name(job.hash)}) is no longer there; send the "
                "request again to build it again"
            ),
            retry_now=True,
        )

    # -- endings -----------------------------------------------------------------

    def _mirror(self, job: _Job, build: dict[str, Any]) -> None:
        """Copy build.json (and the 200 status.json) of a finished build into the local store."""
        self.store.publish(job.hash, self.store.staging(job.hash), build)
        self._done(job)

    def _done(self, job: _Job) -> None:
        log_outcome(job.hash, job.request, time.time() - job.since, None)
        self.queue.finish(job.hash, ok=True)
        self._forget(job.hash)

    def _fail(self, job: _Job, error: BuildError, *, retry_now: bool = False) -> None:
        failed = Failed.of(job.hash, error)
        if retry_now:
            failed = failed.model_copy(update={"failed_at": None})
        self.store.write_status(job.hash, failed)
        log_outcome(job.hash, job.request, time.time() - job.since, error.message)
        self.queue.finish(job.hash, ok=False, detail=error.message)
        self._forget(job.hash)

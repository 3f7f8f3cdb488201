"""GitHub API requests per build, per token, and whether 10,000 builds a day fit.

    .venv/bin/python -m bench.github_budget [--builds 8]

N builds go through the fake GitHub of ``tests/support`` on 127.0.0.1 with
GitHub's limits enforced (the endpoint's token 5,000 requests an hour,
``GITHUB_TOKEN`` 1,000 an hour per repository, content creation 80 a minute
and 500 an hour): the endpoint (``create_app`` and the real
:class:`GitHubDispatcher`) takes each POST and dispatches; the workflow, played
by the fake's ``on_dispatch`` hook with ``GITHUB_TOKEN``, checks the release as
``build.yml`` does and publishes (draft, uploads, publish); the client polls
until 200 and downloads the image through ``/store/``; the pages job pulls
every release once at the end. Every request the fake saw is counted by the
token that sent it.

The follower lists the runs in flight once per poll interval whatever the
number of builds, so run listings are a cost per hour (at the default 15 s),
not per build. The verdict scales the rest to 10,000 builds a day (417 an
hour, spread evenly) and names the limit that binds first.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

from fastapi.testclient import TestClient

from asu_ci.api.app import create_app
from asu_ci.dispatch.github import GitHubDispatcher, Tuning
from asu_ci.github import CONTENT_LIMITS, Pace
from asu_ci.publish.artifacts import ATTESTED_PREFIX
from asu_ci.publish.local import LocalStore
from asu_ci.publish.releases import ReleasesStore, pull_all, verify_folder
from bench.common import machine
from tests.support.fakegithub import ACTIONS_LOGIN, ACTIONS_RATE_LIMIT, FakeGitHub, FakeRun
from tests.support.githubworld import (
    IMAGE,
    ROOT,
    TOKEN_ENV,
    attest,
    build_body,
    build_folder,
    request_body,
    settings_for,
    write_index,
)

ENDPOINT_TOKEN, ACTIONS_TOKEN = "endpoint-token", "actions-token"
ENDPOINT_LOGIN = "asu-ci-bot"
ENDPOINT_LIMIT = 5000
DAY_GOAL = 10_000
#: The follower's default poll interval (seconds) and the pages job's schedule (runs a day).
POLL_INTERVAL = Tuning().poll_interval
PAGES_RUNS_PER_DAY = 24
STORES = ("releases", "endpoint")
NO_PAUSES = Pace(seconds_between_requests=None, seconds_between_writes=None)


def kind(method: str, path: str) -> str:
    if method == "GET" and path.endswith("/runs"):
        return "run listing"
    if method in ("POST", "PATCH", "PUT"):
        return "content-creating"
    return "other"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--builds", type=int, default=8, help="builds to drive (≤ 9: 80/min)")
    parser.add_argument(
        "--store",
        choices=STORES,
        action="append",
        help="github.store to measure (repeatable; default: both)",
    )
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for store in args.store or STORES:
        measure(store, args.builds)


def measure(store: str, builds: int) -> None:
    """Drive ``builds`` builds with ``github.store: <store>`` and print the verdict."""
    fake = FakeGitHub(tokens={ENDPOINT_TOKEN: ENDPOINT_LOGIN, ACTIONS_TOKEN: ACTIONS_LOGIN})
    fake.start()
    with tempfile.TemporaryDirectory(prefix="asu-ci-bench-") as tmp:
        base = Path(tmp)
        fake.add_workflow_from_yaml(ROOT / ".github" / "workflows" / "build.yml")
        settings = settings_for(base, fake.base_url, store=store)
        write_index(settings.public_dir)
        endpoint_env = {TOKEN_ENV: ENDPOINT_TOKEN}
        actions_env = {TOKEN_ENV: ACTIONS_TOKEN}

        def workflow(run: FakeRun) -> None:
            key, request = run.inputs["hash"], json.loads(run.inputs["request"])
            fake.start_run(run.id)
            if store == "endpoint":  # publish job: verify, attest, hand over (no REST)
                folder = build_folder(base / "jobs", key, request)
                verify_folder(LocalStore(base / "jobs"), key, attest(fake, ACTIONS_TOKEN))
                files = {path.name: path.read_bytes() for path in folder.iterdir()}
                fake.add_artifact(run.id, ATTESTED_PREFIX + key, files)
                fake.complete_run(run.id, "success")
                return
            releases = ReleasesStore(settings.github, environ=actions_env, pace=NO_PAUSES)
            try:
                if releases.build(key) is None:  # build.yml: "Already published?"
                    folder = build_folder(base / "jobs", key, request)
                    verify_folder(LocalStore(base / "jobs"), key, attest(fake, ACTIONS_TOKEN))
                    releases.publish(key, folder, build_body(key, request))
            finally:
                releases.close()
            fake.complete_run(run.id, "success")

        fake.on_dispatch = workflow
        os.environ[TOKEN_ENV] = ENDPOINT_TOKEN  # the /store/ route's client reads it
        app = create_app(settings, dispatch=False)
        service = app.state.service
        tuning = replace(Tuning(), poll_interval=0.5, claim_timeout=0.05, pace=NO_PAUSES)
        dispatcher = GitHubDispatcher(
            settings, service.queue, service.store, tuning=tuning, environ=endpoint_env
        )
        service.dispatcher = dispatcher
        started = time.monotonic()
        with TestClient(app) as client:
            dispatcher.start()
            try:
                keys = []
                polls = 0
                for i in range(builds):
                    body = request_body(packages=["luci", f"bench{i}"])
                    response = client.post("/api/v1/build", json=body)
                    keys.append(response.json()["request_hash"])
                for key in keys:
                    deadline = time.monotonic() + 60
                    while client.get(f"/api/v1/build/{key}").status_code != 200:
                        polls += 1
                        if time.monotonic() > deadline:
                            raise SystemExit(f"{key} not built in 60 s")
                        time.sleep(0.2)
                    image = client.get(f"/store/{key}/{IMAGE}")
                    assert image.status_code == 200, image.text
                    missing = client.get(f"/store/{'0' * 64}/{IMAGE}")
                    assert missing.status_code == 404
            finally:
                dispatcher.stop()
        elapsed = time.monotonic() - started
        pages = ReleasesStore(settings.github, environ=actions_env, pace=NO_PAUSES)
        before_pages = len(fake.requests)
        mirrored, complete = pull_all(pages, LocalStore(base / "pages" / "store"))
        pages.close()
        pages_requests = [r for r in fake.requests[before_pages:] if r.headers.get("authorization")]
        seen = fake.requests
        fake.stop()
    fake.check()

    login_of = {f"token {ENDPOINT_TOKEN}": ENDPOINT_LOGIN, f"token {ACTIONS_TOKEN}": ACTIONS_LOGIN}
    login_of |= {
        f"Bearer {ENDPOINT_TOKEN}": ENDPOINT_LOGIN,
        f"Bearer {ACTIONS_TOKEN}": ACTIONS_LOGIN,
    }
    counts: Counter[tuple[str, str]] = Counter()
    limited = 0
    for record in seen[:before_pages]:
        login = login_of.get(record.headers.get("authorization", ""), "anonymous")
        counts[(login, kind(record.method, record.path))] += 1
        limited += record.status in (403, 429)
    n = builds
    per_build = {key: value / n for key, value in counts.items()}
    per_hour = DAY_GOAL / 24

    endpoint_build = sum(
        v for (login, k), v in per_build.items() if login == ENDPOINT_LOGIN and k != "run listing"
    )
    endpoint_content = per_build.get((ENDPOINT_LOGIN, "content-creating"), 0.0)
    actions_build = sum(v for (login, _), v in per_build.items() if login == ACTIONS_LOGIN)
    actions_content = per_build.get((ACTIONS_LOGIN, "content-creating"), 0.0)
    anonymous = sum(v for (login, _), v in per_build.items() if login == "anonymous")
    listings_per_hour = 3600 / POLL_INTERVAL
    pages_per_hour = len(pages_requests) * PAGES_RUNS_PER_DAY / 24
    (per_minute, _), (per_hour_limit, _) = CONTENT_LIMITS

    limits = {
        "endpoint token 5,000/h": (
            endpoint_build * per_hour + listings_per_hour,
            ENDPOINT_LIMIT,
            int((ENDPOINT_LIMIT - listings_per_hour) / endpoint_build * 24),
        ),
        "endpoint content 500/h": (
            endpoint_content * per_hour,
            per_hour_limit,
            int(per_hour_limit / endpoint_content * 24) if endpoint_content else 10**9,
        ),
        "GITHUB_TOKEN 1,000/h": (
            actions_build * per_hour + pages_per_hour,
            ACTIONS_RATE_LIMIT,
            int((ACTIONS_RATE_LIMIT - pages_per_hour) / actions_build * 24),
        ),
        "GITHUB_TOKEN content 500/h": (
            actions_content * per_hour,
            per_hour_limit,
            int(per_hour_limit / actions_content * 24) if actions_content else 10**9,
        ),
        "GITHUB_TOKEN content 80/min": (
            actions_content * per_hour / 60,
            per_minute,
            int(per_minute / actions_content * 60 * 24) if actions_content else 10**9,
        ),
    }

    print(f"\ngithub.store: {store}")
    print(
        f"{n} builds through the fake GitHub with its limits on, {elapsed:.1f} s; "
        f"client polls {polls}; limit answers (403/429) {limited}; pages: {mirrored} mirrored "
        f"of {complete} with {len(pages_requests)} API requests"
    )
    print("API requests per build, by token and kind:")
    for (login, what), value in sorted(per_build.items()):
        print(f"  {login:22} {what:17} {value:6.2f}")
    print(
        f"  run listings are per poll round, not per build: {listings_per_hour:.0f}/h at "
        f"{POLL_INTERVAL:.0f} s; anonymous (public downloads) {anonymous:.2f}/build, no quota"
    )
    print(f"at {DAY_GOAL:,} builds a day ({per_hour:.0f}/h):")
    binding = min(limits.items(), key=lambda item: item[1][2])
    for name, (need, limit, most) in limits.items():
        verdict = "fits" if need <= limit else "EXCEEDED"
        print(f"  {name:28} needs {need:8.0f} of {limit:5}: {verdict:8} (at most {most:,}/day)")
    ok = all(need <= limit for need, limit, _ in limits.values())
    print(
        f"verdict: {DAY_GOAL:,} builds/day through one repository "
        f"{'FIT' if ok else 'do NOT fit'}; the binding limit is {binding[0]} "
        f"(at most {binding[1][2]:,} builds/day)"
    )


if __name__ == "__main__":
    main()

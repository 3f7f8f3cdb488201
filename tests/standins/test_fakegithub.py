"""The fake GitHub REST API, driven by the real PyGithub client over HTTP."""

from __future__ import annotations

import io
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import github
import pytest
import requests

from tests.support import fakegithub
from tests.support.fakegithub import FakeGitHub, FakeRun, created_matches, render_run_name

# The fixture (the conftest imports it too; binding it here keeps this file self-contained).
fake_github = fakegithub.fake_github

HASH_A = "a" * 64
HASH_B = "b" * 64


def _repo(fake: FakeGitHub, **kwargs: Any) -> Any:
    return fake.client(**kwargs).get_repo(fake.repo_full_name)


def _raw(fake: FakeGitHub, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {fake.token}", **kwargs.pop("headers", {})}
    with requests.Session() as session:
        return session.request(method, fake.base_url + path, headers=headers, timeout=5, **kwargs)


# -- repository, workflow, dispatch ------------------------------------------------


def test_repo_and_workflow_shapes(fake_github: FakeGitHub) -> None:
    repo = _repo(fake_github)
    assert repo.full_name == "asu-ci/builds"
    assert repo.default_branch == "main"
    workflow = repo.get_workflow("build.yml")
    assert workflow.name == "build"
    assert workflow.path == ".github/workflows/build.yml"
    assert workflow.state == "active"
    # PyGithub follows the numeric id from here on.
    assert workflow.url.endswith(f"/actions/workflows/{workflow.id}")
    assert [w.name for w in repo.get_workflows()] == ["build"]


def test_dispatch_with_run_details_gives_a_run(fake_github: FakeGitHub) -> None:
    workflow = _repo(fake_github).get_workflow("build.yml")
    run = workflow.create_dispatch("main", {"hash": HASH_A}, throw=True, return_run_details=True)
    assert isinstance(run, github.WorkflowRun.WorkflowRun)
    assert run.id == fake_github.runs[0].id
    # The returned object is lazy: reading a field GETs run_url.
    assert run.status == "queued"
    assert run.conclusion is None
    assert run.name == run.display_title == f"build {HASH_A}"
    assert run.event == "workflow_dispatch"
    assert run.head_branch == "main"
    assert run.run_attempt == 1
    assert run.html_url.endswith(f"/asu-ci/builds/actions/runs/{run.id}")

    (post,) = fake_github.find_requests("POST", r"/dispatches$")
    assert post.json == {"ref": "main", "inputs": {"hash": HASH_A}, "return_run_details": True}
    assert post.status == 200


def test_dispatch_without_run_details_answers_204(fake_github: FakeGitHub) -> None:
    workflow = _repo(fake_github).get_workflow("build.yml")
    assert workflow.create_dispatch("main", {"hash": HASH_A}, throw=True) is True
    assert fake_github.find_requests("POST", r"/dispatches$")[0].status == 204
    assert len(fake_github.runs) == 1


def test_dispatch_validates_ref_and_workflow(fake_github: FakeGitHub) -> None:
    repo = _repo(fake_github)
    workflow = repo.get_workflow("build.yml")
    with pytest.raises(github.GithubException) as err:
        workflow.create_dispatch("nope", {"hash": HASH_A}, throw=True)
    assert err.value.status == 422
    assert "No ref found" in err.value.data["message"]
    with pytest.raises(github.UnknownObjectException):
        repo.get_workflow("missing.yml")
    assert fake_github.runs == []


def test_disabled_workflow_and_missing_trigger_refuse_dispatches(fake_github: FakeGitHub) -> None:
    workflow = _repo(fake_github).get_workflow("build.yml")
    for state in ("disabled_fork", "disabled_inactivity", "disabled_manually"):
        fake_github.set_workflow("build.yml", state=state)
        with pytest.raises(github.GithubException) as err:
            workflow.create_dispatch("main", {"hash": HASH_A}, throw=True)
        assert err.value.status == 422
        assert "disabled workflow" in err.value.data["message"]
    assert workflow.enable()  # PUT .../enable
    fake_github.set_workflow("build.yml", dispatchable=False)
    with pytest.raises(github.GithubException) as err:
        workflow.create_dispatch("main", {"hash": HASH_A}, throw=True)
    assert err.value.data["message"] == "Workflow does not have 'workflow_dispatch' trigger"
    assert fake_github.runs == []
    fake_github.set_workflow("build.yml", dispatchable=True)
    assert workflow.create_dispatch("main", {"hash": HASH_A}, throw=True)
    assert len(fake_github.runs) == 1


def test_secondary_rate_limit_without_retry_after(fake_github: FakeGitHub) -> None:
    fake_github.rate_limit_next(r"/releases$", retry_after=None)
    with pytest.raises(github.RateLimitExceededException) as err:
        _repo(fake_github).get_releases()[0]
    headers = err.value.headers or {}
    assert "retry-after" not in {k.lower() for k in headers}
    assert int(headers["x-ratelimit-remaining"]) > 0  # not the primary limit


def test_runs_listed_filtered_and_found_by_name(fake_github: FakeGitHub) -> None:
    repo = _repo(fake_github)
    workflow = repo.get_workflow("build.yml")
    first = workflow.create_dispatch("main", {"hash": HASH_A}, throw=True, return_run_details=True)
    second = workflow.create_dispatch("main", {"hash": HASH_B}, throw=True, return_run_details=True)
    fake_github.start_run(second.id)

    listed = repo.get_workflow_runs(event="workflow_dispatch", branch="main")
    assert listed.totalCount == 2
    assert [r.id for r in listed] == [second.id, first.id]  # newest first
    found = [r for r in workflow.get_runs() if r.display_title == f"build {HASH_B}"]
    assert [r.id for r in found] == [second.id]
    assert found[0].status == "in_progress"

    assert [r.id for r in repo.get_workflow_runs(status="queued")] == [first.id]
    fake_github.complete_run(first.id, "failure")
    fake_github.complete_run(second.id)
    assert [r.id for r in repo.get_workflow_runs(status="failure")] == [first.id]
    assert [r.id for r in repo.get_workflow_runs(status="success")] == [second.id]
    assert repo.get_workflow_run(second.id).conclusion == "success"
    assert repo.get_workflow_runs(branch="other").totalCount == 0

    created = fake_github.get_run(first.id).created_at
    since = (created - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert repo.get_workflow_runs(created=f">={since}").totalCount == 2
    assert repo.get_workflow_runs(created=f"<{since}").totalCount == 0
    assert fake_github.find_runs(f"build {HASH_A}")[0].id == first.id


def test_run_pagination_follows_link_headers(fake_github: FakeGitHub) -> None:
    for n in range(5):
        fake_github.dispatch({"hash": f"{n:064x}"})
    repo = _repo(fake_github, per_page=2)
    runs = repo.get_workflow_runs()
    assert len(list(runs)) == 5
    pages = fake_github.find_requests("GET", r"/actions/runs$")
    assert [r.param("page") for r in pages] == [None, "2", "3"]
    assert all(r.param("per_page") == "2" for r in pages)


def test_cancel_run(fake_github: FakeGitHub) -> None:
    run = fake_github.dispatch({"hash": HASH_A})
    gh_run = _repo(fake_github).get_workflow_run(run.id)
    assert gh_run.cancel() is True
    assert fake_github.get_run(run.id).conclusion == "cancelled"
    assert gh_run.cancel() is False  # 409: already completed


def test_run_name_forms() -> None:
    inputs = {"hash": "h1", "flag": True}
    assert render_run_name("build {hash}", inputs, default="w") == "build h1"
    assert render_run_name("build {missing}", inputs, default="w") == "build "
    gha = "build ${{ inputs.hash }} ${{ github.event.inputs.flag }} on ${{ github.ref_name }}"
    assert render_run_name(gha, inputs, default="w", context={"ref_name": "main"}) == (
        "build h1 true on main"
    )
    assert render_run_name(lambda i: f"x-{i['hash']}", inputs, default="w") == "x-h1"
    assert render_run_name(None, inputs, default="workflow") == "workflow"


def test_workflow_from_yaml_validates_inputs(fake_github: FakeGitHub, tmp_path: Path) -> None:
    path = tmp_path / "image.yml"
    path.write_text(
        "name: Image\n"
        "run-name: image ${{ inputs.hash }}\n"
        "on:\n"
        "  workflow_dispatch:\n"
        "    inputs:\n"
        "      hash: {required: true, type: string}\n"
        "      mode: {type: choice, options: [fast, full], default: fast}\n"
        "permissions: {contents: write}\n"
    )
    fake_github.add_workflow_from_yaml(path)
    workflow = _repo(fake_github).get_workflow("image.yml")
    run = workflow.create_dispatch("main", {"hash": HASH_A}, throw=True, return_run_details=True)
    assert run.display_title == f"image {HASH_A}"
    assert fake_github.get_run(run.id).inputs == {"hash": HASH_A, "mode": "fast"}
    for bad in ({"hash": HASH_A, "extra": "1"}, {"mode": "full"}, {"hash": "x", "mode": "slow"}):
        with pytest.raises(github.GithubException) as err:
            workflow.create_dispatch("main", bad, throw=True)
        assert err.value.status == 422
    assert len(fake_github.runs) == 1


def test_on_dispatch_hook_simulates_the_build(fake_github: FakeGitHub) -> None:
    def build(run: FakeRun) -> None:
        fake_github.start_run(run.id)
        # The "workflow" publishes with its own client, over HTTP, like asu-ci build would.
        repo = fake_github.client().get_repo(fake_github.repo_full_name)
        release = repo.create_git_release(f"build-{run.inputs['hash']}", "build", "", draft=True)
        release.upload_asset_from_memory(io.BytesIO(b"image"), 5, "sysupgrade.bin")
        release.update_release(name="build", message="", draft=False)
        fake_github.complete_run(run.id, "success")

    fake_github.on_dispatch = build
    workflow = _repo(fake_github).get_workflow("build.yml")
    run = workflow.create_dispatch("main", {"hash": HASH_A}, throw=True, return_run_details=True)
    assert fake_github.wait_until(lambda: fake_github.get_run(run.id).status == "completed")
    assert fake_github.wait_hooks()
    run.update()
    assert (run.status, run.conclusion) == ("completed", "success")
    release = _repo(fake_github).get_release(f"build-{HASH_A}")
    assert [a.name for a in release.assets] == ["sysupgrade.bin"]


def test_inline_hook_runs_before_the_answer() -> None:
    with FakeGitHub(dispatch_hook_mode="inline") as fake:

        def build(run: FakeRun) -> None:
            fake.start_run(run.id)
            fake.publish_release(f"build-{run.inputs['hash']}", {"image.bin": b"img"})
            fake.complete_run(run.id)

        fake.on_dispatch = build
        workflow = fake.client().get_repo(fake.repo_full_name).get_workflow("build.yml")
        run = workflow.create_dispatch(
            "main", {"hash": HASH_A}, throw=True, return_run_details=True
        )
        assert run.conclusion == "success"
        release = fake.release_by_tag(f"build-{HASH_A}")
        assert release is not None
        assert [a.name for a in fake.assets_of(release.id)] == ["image.bin"]
    fake.check()


def test_failing_hook_is_reported(fake_github: FakeGitHub) -> None:
    def broken(run: FakeRun) -> None:
        raise RuntimeError("boom")

    fake_github.on_dispatch = broken
    fake_github.dispatch({"hash": HASH_A}, run_hook=True)
    fake_github.wait_hooks()
    assert "boom" in fake_github.errors[0]
    with pytest.raises(AssertionError, match="boom"):
        fake_github.check()
    fake_github._errors.clear()  # keep the fixture's own check green


# -- releases and assets ---------------------------------------------------------------


def test_release_is_created_once(fake_github: FakeGitHub) -> None:
    repo = _repo(fake_github)
    with pytest.raises(github.UnknownObjectException):
        repo.get_release(f"build-{HASH_A}")
    created = repo.create_git_release(f"build-{HASH_A}", "build", "body")
    assert created.upload_url.endswith(f"/releases/{created.id}/assets{{?name,label}}")
    with pytest.raises(github.GithubException) as err:
        repo.create_git_release(f"build-{HASH_A}", "build", "again")
    assert err.value.status == 422
    assert err.value.data["errors"][0]["code"] == "already_exists"
    assert repo.get_release(f"build-{HASH_A}").id == created.id
    assert repo.get_release(created.id).tag_name == f"build-{HASH_A}"
    assert [r.id for r in repo.get_releases()] == [created.id]


def test_draft_release_is_not_found_by_tag_until_published(fake_github: FakeGitHub) -> None:
    repo = _repo(fake_github)
    draft = repo.create_git_release("build-x", "build", "", draft=True)
    assert "untagged-" in draft.html_url
    with pytest.raises(github.UnknownObjectException):
        repo.get_release("build-x")
    # Drafts do not hold the tag: a second draft is accepted, as on GitHub.
    other = repo.create_git_release("build-x", "build", "", draft=True)
    published = draft.update_release(name="build", message="", draft=False)
    assert published.published_at is not None
    assert repo.get_release("build-x").id == draft.id
    with pytest.raises(github.GithubException) as err:
        other.update_release(name="build", message="", draft=False)
    assert err.value.status == 422


def test_release_listing_stops_at_1000_like_github(fake_github: FakeGitHub) -> None:
    for n in range(1001):
        fake_github.create_release(f"build-{n:064x}")
    repo = _repo(fake_github, per_page=100)
    seen = []
    with pytest.raises(github.GithubException) as err:
        for release in repo.get_releases():
            seen.append(release.tag_name)
    assert err.value.status == 422
    assert err.value.data["message"] == "Only the first 1000 results are available."
    assert len(seen) == len(set(seen)) == 1000
    assert seen[0] == f"build-{1000:064x}"  # newest first
    # A page inside the first 1,000 is served as before.
    page = _raw(fake_github, "GET", f"/repos/{fake_github.repo_full_name}/releases?per_page=30")
    assert page.status_code == 200 and len(page.json()) == 30
    assert 'rel="next"' in page.headers["Link"]


def test_drafts_are_listed_to_push_access_with_their_age_and_deleted(
    fake_github: FakeGitHub,
) -> None:
    hours_ago = datetime.now(UTC) - timedelta(hours=5)
    old = fake_github.create_release("build-" + HASH_A, draft=True, created_at=hours_ago)
    young = fake_github.create_release("build-" + HASH_A, draft=True)
    published = fake_github.create_release("build-" + HASH_B)
    repo = _repo(fake_github)
    listed = repo.get_releases().get_page(0)
    assert [(r.id, r.draft) for r in listed] == [
        (published.id, False),
        (young.id, True),
        (old.id, True),
    ]
    assert listed[2].created_at == hours_ago.replace(microsecond=0)
    assert listed[1].created_at > hours_ago + timedelta(hours=4)
    # A token that cannot push sees the published releases only, as on GitHub.
    fake_github.permissions = {fakegithub.DEFAULT_LOGIN: {"contents:read"}}
    assert [r.id for r in repo.get_releases().get_page(0)] == [published.id]
    with pytest.raises(github.GithubException) as err:
        listed[2].delete_release()
    assert err.value.status == 403
    fake_github.permissions = {fakegithub.DEFAULT_LOGIN: {"contents:write"}}
    assert len(repo.get_releases().get_page(0)) == 3
    listed[2].delete_release()  # a draft is deleted with its id
    assert [r.id for r in fake_github.releases] == [young.id, published.id]
    with pytest.raises(github.UnknownObjectException):
        listed[2].delete_release()


def test_tags_are_listed_by_prefix_and_outlive_their_release(fake_github: FakeGitHub) -> None:
    for n in range(1001):
        fake_github.create_release(f"build-{n:064x}")
    fake_github.create_release("v1.0")
    draft = fake_github.create_release("build-" + HASH_A, draft=True)
    repo = _repo(fake_github)
    refs = [ref.ref for ref in repo.get_git_matching_refs("tags/build-")]
    assert len(refs) == 1001  # every tag, in one answer; the draft has none yet
    assert "refs/tags/build-" + HASH_A not in refs
    assert refs[0] == f"refs/tags/build-{0:064x}"
    assert [ref.ref for ref in repo.get_git_matching_refs("heads/")] == ["refs/heads/main"]
    release = repo.get_release(draft.id)
    release.update_release(name="published", message="", draft=False)
    repo.get_release(f"build-{1:064x}").delete_release()
    refs = [ref.ref for ref in repo.get_git_matching_refs("tags/build-")]
    assert "refs/tags/build-" + HASH_A in refs  # made when the draft was published
    assert f"refs/tags/build-{1:064x}" in refs  # a deleted release leaves its tag
    assert len(refs) == 1002


def test_asset_upload_listing_and_duplicate(fake_github: FakeGitHub, tmp_path: Path) -> None:
    release = _repo(fake_github).create_git_release("build-y", "build", "")
    image = tmp_path / "openwrt-sysupgrade.bin"
    image.write_bytes(b"\x00\x01" * 1000)
    uploaded = release.upload_asset(str(image), content_type="application/octet-stream")
    assert (uploaded.name, uploaded.size, uploaded.state) == (
        "openwrt-sysupgrade.bin",
        2000,
        "uploaded",
    )
    assert uploaded.digest.startswith("sha256:")
    release.upload_asset_from_memory(io.BytesIO(b"{}"), 2, "profiles.json", "application/json")
    assert [(a.name, a.content_type) for a in release.get_assets()] == [
        ("openwrt-sysupgrade.bin", "application/octet-stream"),
        ("profiles.json", "application/json"),
    ]
    with pytest.raises(github.GithubException) as err:
        release.upload_asset(str(image))
    assert err.value.status == 422
    assert err.value.data["errors"][0]["code"] == "already_exists"
    (upload,) = fake_github.find_requests("POST", r"^/uploads/.*/assets$")[:1]
    assert upload.param("name") == "openwrt-sysupgrade.bin"

    uploaded.delete_asset()
    again = release.upload_asset(str(image))
    assert again.id != uploaded.id
    assert [a.name for a in fake_github.assets_of(release.id)] == [
        "profiles.json",
        "openwrt-sysupgrade.bin",
    ]


def test_asset_download_bytes_and_length(fake_github: FakeGitHub, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 300
    release = _repo(fake_github).create_git_release("build-z", "build", "")
    asset = release.upload_asset_from_memory(io.BytesIO(payload), len(payload), "image.bin")

    status, headers, chunks = asset.download_asset(chunk_size=65536)
    assert status == 200
    assert int(headers["content-length"]) == len(payload)
    assert b"".join(chunks) == payload
    target = tmp_path / "image.bin"
    asset.download_asset(str(target), chunk_size=65536)
    assert target.read_bytes() == payload

    # The API answers 302 to a download URL, as GitHub does.
    api = _raw(
        fake_github,
        "GET",
        f"/repos/asu-ci/builds/releases/assets/{asset.id}",
        headers={"Accept": "application/octet-stream"},
        allow_redirects=False,
    )
    assert api.status_code == 302
    # browser_download_url needs no token for a published release.
    with requests.get(asset.browser_download_url, timeout=5) as public:
        assert public.status_code == 200
        assert public.headers["Content-Length"] == str(len(payload))
        assert public.content == payload
    assert fake_github.assets_of(release.id)[0].download_count == 3


def test_asset_bytes_without_redirect() -> None:
    with FakeGitHub(asset_redirect=False) as fake:
        release = fake.publish_release("build-q", {"a.bin": b"abc"})
        asset = fake.client().get_repo(fake.repo_full_name).get_release(release.id).assets[0]
        status, headers, chunks = asset.download_asset(chunk_size=1024)
        assert (status, headers["content-length"], b"".join(chunks)) == (200, "3", b"abc")
        assert not [r for r in fake.requests if r.path.startswith("/_fake/")]
    fake.check()


# -- faults ------------------------------------------------------------------------------------


def test_fail_next_500_on_dispatch(fake_github: FakeGitHub) -> None:
    workflow = _repo(fake_github).get_workflow("build.yml")
    fake_github.fail_next("POST", r"/dispatches$", status=500, times=2)
    with pytest.raises(github.GithubException) as err:
        workflow.create_dispatch("main", {"hash": HASH_A}, throw=True, return_run_details=True)
    assert err.value.status == 500
    # PyGithub's default throw=False turns the error into False.
    assert workflow.create_dispatch("main", {"hash": HASH_A}, return_run_details=True) is False
    assert fake_github.runs == []
    assert workflow.create_dispatch("main", {"hash": HASH_A}, throw=True) is True
    assert len(fake_github.runs) == 1


def test_fail_next_skip_lets_the_first_requests_through(fake_github: FakeGitHub) -> None:
    release = _repo(fake_github).create_git_release("build-z", "build", "", draft=True)
    fake_github.fail_next("POST", r"/assets$", status=500, times=2, skip=2)
    statuses = [_upload_status(fake_github, release.id, f"f{n}") for n in range(5)]
    assert statuses == [201, 201, 500, 500, 201]
    assert [a.name for a in fake_github.assets_of(release.id)] == ["f0", "f1", "f4"]


def _upload_status(fake: FakeGitHub, release_id: int, name: str) -> int:
    path = f"/uploads/repos/{fake.repo_full_name}/releases/{release_id}/assets"
    return _raw(fake, "POST", path, params={"name": name}, data=b"x").status_code


def test_fail_next_apply_does_the_work_then_fails(fake_github: FakeGitHub) -> None:
    workflow = _repo(fake_github).get_workflow("build.yml")
    fake_github.fail_next("POST", r"/dispatches$", status=502, apply=True)
    with pytest.raises(github.GithubException) as err:
        workflow.create_dispatch("main", {"hash": HASH_A}, throw=True)
    assert err.value.status == 502
    assert len(fake_github.runs) == 1


def test_github_retry_retries_post_after_500(fake_github: FakeGitHub) -> None:
    retry = github.GithubRetry(total=3, backoff_factor=0)
    workflow = _repo(fake_github, retry=retry).get_workflow("build.yml")
    fake_github.fail_next("POST", r"/dispatches$", status=500)
    assert workflow.create_dispatch("main", {"hash": HASH_A}, throw=True) is True
    assert [r.status for r in fake_github.find_requests("POST", r"/dispatches$")] == [500, 204]


def test_secondary_rate_limit_has_retry_after(fake_github: FakeGitHub) -> None:
    workflow = _repo(fake_github).get_workflow("build.yml")
    fake_github.rate_limit_next(r"/dispatches$", retry_after=1)
    with pytest.raises(github.RateLimitExceededException) as err:
        workflow.create_dispatch("main", {"hash": HASH_A}, throw=True)
    assert err.value.status == 403
    assert (err.value.headers or {})["retry-after"] == "1"
    assert err.value.data["message"].startswith("You have exceeded a secondary rate limit")

    # GithubRetry waits Retry-After seconds, then succeeds.
    retry = github.GithubRetry(total=3, backoff_factor=0)
    workflow = _repo(fake_github, retry=retry).get_workflow("build.yml")
    fake_github.rate_limit_next(r"/dispatches$", retry_after=1)
    started = time.monotonic()
    assert workflow.create_dispatch("main", {"hash": HASH_A}, throw=True) is True
    assert time.monotonic() - started >= 0.9
    assert len(fake_github.runs) == 1


def test_primary_rate_limit(fake_github: FakeGitHub) -> None:
    client = fake_github.client()
    fake_github.primary_rate_limit(r"^/repos/[^/]+/[^/]+$", reset_in=30)
    with pytest.raises(github.RateLimitExceededException) as err:
        client.get_repo(fake_github.repo_full_name)
    headers = err.value.headers or {}
    assert headers["x-ratelimit-remaining"] == "0"
    assert int(headers["x-ratelimit-reset"]) > time.time() + 20
    assert client.get_repo(fake_github.repo_full_name).name == "builds"

    fake_github.primary_rate_limit(status=429)
    with pytest.raises(github.GithubException) as err429:
        client.get_repo(fake_github.repo_full_name)
    assert err429.value.status == 429  # PyGithub has no special class for 429


def test_rate_limit_endpoint_and_headers(fake_github: FakeGitHub) -> None:
    client = fake_github.client()
    client.get_repo(fake_github.repo_full_name)
    core = client.get_rate_limit().resources.core
    assert core.limit == 5000
    assert core.remaining == 4999
    assert client.rate_limiting == (4999, 5000)
    response = _raw(fake_github, "GET", "/repos/asu-ci/builds")
    assert response.headers["X-RateLimit-Used"] == "2"
    assert int(response.headers["X-RateLimit-Reset"]) > time.time()


def test_accept_then_drop_creates_the_run(fake_github: FakeGitHub) -> None:
    workflow = _repo(fake_github).get_workflow("build.yml")
    fake_github.accept_then_timeout(r"/dispatches$")
    with pytest.raises(requests.exceptions.ConnectionError):
        workflow.create_dispatch("main", {"hash": HASH_A}, throw=True, return_run_details=True)
    assert len(fake_github.runs) == 1
    assert fake_github.find_requests("POST", r"/dispatches$")[0].status is None


def test_accept_then_delay_past_client_timeout(fake_github: FakeGitHub) -> None:
    workflow = _repo(fake_github, timeout=1).get_workflow("build.yml")
    fake_github.accept_then_timeout(r"/dispatches$", mode="delay", delay=3)
    started = time.monotonic()
    with pytest.raises(requests.exceptions.Timeout):
        workflow.create_dispatch("main", {"hash": HASH_A}, throw=True, return_run_details=True)
    assert time.monotonic() - started < 2.5
    assert len(fake_github.runs) == 1


def test_github_retry_repeats_a_dropped_dispatch(fake_github: FakeGitHub) -> None:
    # GithubRetry allows POST, so a dispatch whose answer is lost is sent again:
    # two runs for one request. Dispatchers must find their run and tolerate repeats.
    retry = github.GithubRetry(total=2, backoff_factor=0)
    workflow = _repo(fake_github, retry=retry).get_workflow("build.yml")
    fake_github.accept_then_timeout(r"/dispatches$")
    run = workflow.create_dispatch("main", {"hash": HASH_A}, throw=True, return_run_details=True)
    assert len(fake_github.runs) == 2
    assert run.id == fake_github.runs[1].id


# -- auth ---------------------------------------------------------------------------------------


def test_unauthenticated_gets_401(fake_github: FakeGitHub) -> None:
    anonymous = github.Github(base_url=fake_github.base_url, retry=None)
    try:
        with pytest.raises(github.GithubException) as err:
            anonymous.get_repo(fake_github.repo_full_name)
        assert err.value.status == 401
        assert err.value.data["message"] == "Requires authentication"
    finally:
        anonymous.close()
    with pytest.raises(github.BadCredentialsException):
        fake_github.client(token="wrong").get_repo(fake_github.repo_full_name)

    response = requests.get(f"{fake_github.base_url}/repos/asu-ci/builds", timeout=5)
    assert response.status_code == 401
    assert set(response.json()) >= {"message", "documentation_url"}
    assert response.headers["X-RateLimit-Limit"] == "60"
    assert _raw(fake_github, "GET", "/repos/asu-ci/builds").status_code == 200
    token_form = _raw(
        fake_github, "GET", "/repos/asu-ci/builds", headers={"Authorization": "token t"}
    )
    assert token_form.status_code == 200


# -- plumbing ------------------------------------------------------------------------------------


def test_created_filter_syntax() -> None:
    from datetime import UTC, datetime

    when = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert created_matches(">=2026-03-01", when)
    assert created_matches("2026-03-01", when)
    assert not created_matches(">2026-03-01", when)
    assert created_matches("<2026-03-02", when)
    assert created_matches("2026-02-28..2026-03-01", when)
    assert created_matches("2026-03-01T11:00:00Z..*", when)
    assert not created_matches("<=2026-03-01T11:59:59Z", when)


def test_concurrent_clients_and_bounded_log() -> None:
    with FakeGitHub(max_requests=5) as fake:
        errors: list[BaseException] = []

        def worker(n: int) -> None:
            try:
                fake.client().get_repo(fake.repo_full_name).get_workflow(
                    "build.yml"
                ).create_dispatch("main", {"hash": f"{n:064x}"}, throw=True)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        assert errors == []
        assert len(fake.runs) == 8
        assert len({r.id for r in fake.runs}) == 8
        assert len(fake.requests) == 5
    fake.check()


# -- attestations ----------------------------------------------------------------------


def test_attestations_take_a_sigstore_bundle_with_their_permission(fake_github: FakeGitHub) -> None:
    path = f"/repos/{fake_github.repo_full_name}/attestations"
    bundle = {"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "dsseEnvelope": {}}
    made = _raw(fake_github, "POST", path, json={"bundle": bundle})
    assert made.status_code == 201
    assert isinstance(made.json()["id"], int)
    assert fake_github.attestations == [bundle]
    wrong = _raw(fake_github, "POST", path, json={"bundle": {"mediaType": "text/plain"}})
    assert wrong.status_code == 422
    fake_github.permissions = {fakegithub.DEFAULT_LOGIN: {"contents:write"}}
    refused = _raw(fake_github, "POST", path, json={"bundle": bundle})
    assert refused.status_code == 403
    assert fake_github.attestations == [bundle]

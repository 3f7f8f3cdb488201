"""Drafts that interrupted publish jobs leave: resumed by the next publish, swept when old.

The product's :class:`ReleasesStore` and ``asu-ci release prune-drafts`` run
unchanged against the fake GitHub on 127.0.0.1, which lists drafts to a
token that can push and never finds one by its tag.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import github
import pytest
from typer.testing import CliRunner

from asu_ci.cli import app as cli
from asu_ci.publish.releases import ReleasesStore
from tests.support import fakegithub
from tests.support.fakegithub import FakeGitHub
from tests.support.githubworld import (
    IMAGE,
    NO_PAUSES,
    PROFILE,
    TOKEN_ENV,
    VERSION,
    build_body,
    build_folder,
    settings_for,
)

fake_github = fakegithub.fake_github

KEY = "d" * 64
TAG = f"build-{KEY}"
REQUEST = {"version": VERSION, "target": "ath79/generic", "profile": PROFILE}
#: What publish uploads, in its order: the files by name, then build.json and status.json.
FILES = sorted([IMAGE, f"openwrt-{PROFILE}.manifest", "profiles.json", "sha256sums"])
ALL = [*FILES, "build.json", "status.json"]


@pytest.fixture
def store(
    fake_github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., ReleasesStore]]:
    monkeypatch.setenv(TOKEN_ENV, fake_github.token)
    opened: list[ReleasesStore] = []

    def make(attempts: int = 3) -> ReleasesStore:
        cfg = settings_for(tmp_path, fake_github.base_url).github
        opened.append(ReleasesStore(cfg, pace=NO_PAUSES, attempts=attempts))
        return opened[-1]

    yield make
    for each in opened:
        each.close()


def uploads(fake: FakeGitHub) -> list[str]:
    """Names of the assets POSTed that GitHub stored (201), in order."""
    return [
        str(r.param("name")) for r in fake.find_requests("POST", r"/assets$") if r.status == 201
    ]


def interrupted(fake: FakeGitHub, store: ReleasesStore, folder: Path, done: int) -> None:
    """A publish job that dies after ``done`` uploads: its upload fails for good."""
    fake.fail_next("POST", r"/assets$", status=500, times=100, skip=done)
    with pytest.raises(github.GithubException):
        store.publish(KEY, folder, build_body(KEY, REQUEST))
    fake.clear_faults()


@pytest.mark.parametrize("immutable", [False, True], ids=["mutable", "immutable"])
def test_a_retry_carries_on_with_the_draft_an_interrupted_job_left(
    fake_github: FakeGitHub, store: Callable[..., ReleasesStore], tmp_path: Path, immutable: bool
) -> None:
    fake_github.immutable_releases = immutable
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    interrupted(fake_github, store(attempts=1), folder, done=2)
    (draft,) = fake_github.releases
    assert draft.draft and draft.tag_name == TAG
    assert [a.name for a in fake_github.assets_of(draft.id)] == FILES[:2]
    assert uploads(fake_github) == FILES[:2]

    fake_github.clear_requests()
    retry = store()
    retry.publish(KEY, folder, build_body(KEY, REQUEST))
    (release,) = fake_github.releases  # one release in the end: the draft, published
    assert release.id == draft.id and not release.draft
    assert sorted(a.name for a in fake_github.assets_of(release.id)) == sorted(ALL)
    assert all(a.state == "uploaded" for a in fake_github.assets_of(release.id))
    assert uploads(fake_github) == ALL[2:]  # what was there is not sent again
    assert fake_github.find_requests("POST", r"/releases$") == []  # no second draft
    # The cost of finding the draft: one listing of the newest releases.
    listings = fake_github.find_requests("GET", r"/releases$")
    assert [(r.param("per_page"), r.param("page")) for r in listings] == [("100", None)]
    assert retry.build(KEY) == build_body(KEY, REQUEST)
    with (folder / IMAGE).open("rb") as image:
        digest = hashlib.file_digest(image, "sha256").hexdigest()
    (stored,) = [a for a in fake_github.assets_of(release.id) if a.name == IMAGE]
    assert hashlib.sha256(stored.data).hexdigest() == digest


def test_a_fresh_publish_costs_one_listing_and_makes_one_draft(
    fake_github: FakeGitHub, store: Callable[..., ReleasesStore], tmp_path: Path
) -> None:
    fake_github.create_release(f"build-{'e' * 64}", draft=True)  # another hash's draft
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    store().publish(KEY, folder, build_body(KEY, REQUEST))
    assert len(fake_github.find_requests("GET", r"/releases$")) == 1
    assert len(fake_github.find_requests("POST", r"/releases$")) == 1
    assert uploads(fake_github) == ALL
    mine = [r for r in fake_github.releases if r.tag_name == TAG]
    assert [r.draft for r in mine] == [False]
    assert len(fake_github.releases) == 2  # the other hash's draft is not ours to touch


def test_a_draft_that_holds_build_json_is_published_not_taken_for_complete(
    fake_github: FakeGitHub, store: Callable[..., ReleasesStore], tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    # The job died between uploading build.json and publishing.
    fake_github.fail_next("PATCH", r"/releases/\d+$", status=500, times=100)
    with pytest.raises(github.GithubException):
        store(attempts=1).publish(KEY, folder, build_body(KEY, REQUEST))
    fake_github.clear_faults()
    (draft,) = fake_github.releases
    assert draft.draft and len(fake_github.assets_of(draft.id)) == len(ALL)

    fake_github.clear_requests()
    retry = store()
    retry.publish(KEY, folder, build_body(KEY, REQUEST))
    (release,) = fake_github.releases
    assert release.id == draft.id and not release.draft
    assert uploads(fake_github) == []
    assert retry.is_complete(KEY)


def test_jobs_interrupted_one_after_another_fill_one_draft(
    fake_github: FakeGitHub, store: Callable[..., ReleasesStore], tmp_path: Path
) -> None:
    fake_github.immutable_releases = True
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    interrupted(fake_github, store(attempts=1), folder, done=1)
    interrupted(fake_github, store(attempts=1), folder, done=1)
    (draft,) = fake_github.releases  # the second job carried on with the first one's draft
    assert [a.name for a in fake_github.assets_of(draft.id)] == FILES[:2]
    store().publish(KEY, folder, build_body(KEY, REQUEST))
    (release,) = fake_github.releases
    assert release.id == draft.id and not release.draft
    assert uploads(fake_github) == ALL  # each file once over the three jobs


def test_two_leftover_drafts_the_retry_publishes_one_the_other_is_gone(
    fake_github: FakeGitHub, store: Callable[..., ReleasesStore], tmp_path: Path
) -> None:
    fake_github.immutable_releases = True
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    # Two drafts of one tag: left by jobs that raced, or by an asu-ci that never looked.
    older = fake_github.create_release(TAG, draft=True)
    fake_github.add_asset(older.id, FILES[0], (folder / FILES[0]).read_bytes())
    newer = fake_github.create_release(TAG, draft=True)
    fake_github.add_asset(newer.id, FILES[1], (folder / FILES[1]).read_bytes())

    store().publish(KEY, folder, build_body(KEY, REQUEST))
    (release,) = fake_github.releases
    assert release.id == newer.id and not release.draft  # the newest draft is carried on
    assert sorted(a.name for a in fake_github.assets_of(release.id)) == sorted(ALL)
    assert FILES[1] not in uploads(fake_github)
    deletes = fake_github.find_requests("DELETE", r"/releases/\d+$")
    assert [r.path.rsplit("/", 1)[1] for r in deletes] == [str(older.id)]
    patch = fake_github.find_requests("PATCH", r"/releases/\d+$")[0]
    assert deletes[0].time >= patch.time  # only once the build is published


def test_leftover_drafts_are_deleted_after_publishing(
    fake_github: FakeGitHub, store: Callable[..., ReleasesStore], tmp_path: Path
) -> None:
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    first = fake_github.create_release(TAG, draft=True)
    fake_github.add_asset(first.id, IMAGE, b"half", state="starter")
    second = fake_github.create_release(TAG, draft=True)
    fake_github.add_asset(second.id, FILES[0], (folder / FILES[0]).read_bytes())
    fake_github.add_asset(second.id, "sha256sums", b"other bytes")
    published = fake_github.create_release(f"build-{'e' * 64}")

    store().publish(KEY, folder, build_body(KEY, REQUEST))
    mine = [r for r in fake_github.releases if r.tag_name == TAG]
    assert [(r.id, r.draft) for r in mine] == [(second.id, False)]  # the newest draft
    assets = {a.name: a for a in fake_github.assets_of(second.id)}
    assert sorted(assets) == sorted(ALL)
    assert assets["sha256sums"].data == (folder / "sha256sums").read_bytes()  # replaced
    assert FILES[0] not in uploads(fake_github)  # same digest: kept
    assert [r.id for r in fake_github.releases if r.id == published.id] == [published.id]


def test_publishing_a_draft_another_job_published_first_is_done(
    fake_github: FakeGitHub, store: Callable[..., ReleasesStore], tmp_path: Path
) -> None:
    fake_github.immutable_releases = True
    folder = build_folder(tmp_path / "store", KEY, REQUEST)
    # Both jobs carried on with one draft; the other published it a moment before us,
    # and GitHub refuses to edit a published immutable release.
    fake_github.fail_next(
        "PATCH",
        r"/releases/\d+$",
        status=422,
        body={"message": fakegithub.IMMUTABLE_MESSAGE},
        apply=True,
    )
    done = store()
    done.publish(KEY, folder, build_body(KEY, REQUEST))
    (release,) = fake_github.releases
    assert not release.draft
    assert fake_github.find_requests("DELETE", r"/releases/\d+$") == []
    assert done.is_complete(KEY)


# -- asu-ci release prune-drafts ------------------------------------------------------------


@pytest.fixture
def prune(
    fake_github: FakeGitHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Any]:
    """Run ``asu-ci release prune-drafts ARGS`` as pages.yml does (repository and token by env)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASU_CI_GITHUB__REPOSITORY", fake_github.repo_full_name)
    monkeypatch.setenv("ASU_CI_GITHUB__API_URL", fake_github.base_url)
    monkeypatch.setenv("GITHUB_TOKEN", fake_github.token)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(cli, ["release", "prune-drafts", *args])

    return run


def hours_ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def test_prune_deletes_old_build_drafts_only(
    fake_github: FakeGitHub, prune: Callable[..., Any]
) -> None:
    old = fake_github.create_release(TAG, draft=True, created_at=hours_ago(3))
    fake_github.add_asset(old.id, IMAGE, b"half an image")
    old_too = fake_github.create_release(f"build-{'e' * 64}", draft=True, created_at=hours_ago(30))
    young = fake_github.create_release(TAG, draft=True, created_at=hours_ago(1))
    published = fake_github.create_release(f"build-{'f' * 64}", created_at=hours_ago(50))
    other_tag = fake_github.create_release("v1.0", draft=True, created_at=hours_ago(50))
    not_a_hash = fake_github.create_release("build-1", draft=True, created_at=hours_ago(50))
    kept = {young.id, published.id, other_tag.id, not_a_hash.id}

    dry = prune("--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"{TAG} (draft {old.id}, created " in dry.output
    assert f"(draft {old_too.id}, created " in dry.output
    assert dry.output.count(": would delete") == 2
    assert "2 draft(s) to delete (--dry-run: none deleted), 1 younger than 120 min kept, " in (
        dry.output
    )
    assert "6 release(s) listed" in dry.output
    assert len(fake_github.releases) == 6
    assert fake_github.find_requests("DELETE") == []

    done = prune()
    assert done.exit_code == 0, done.output
    assert done.output.count(": deleted") == 2
    assert "release prune-drafts: 2 draft(s) deleted, 1 younger than 120 min kept" in done.output
    assert {r.id for r in fake_github.releases} == kept
    assert fake_github.assets_of(young.id) == []
    assert {a.release_id for a in _all_assets(fake_github)} <= kept  # the old image went too

    shorter = prune("--older-than", "30")
    assert shorter.exit_code == 0, shorter.output
    assert {r.id for r in fake_github.releases} == kept - {young.id}
    assert fake_github.find_requests("DELETE", rf"/releases/{published.id}$") == []
    assert fake_github.find_requests("GET", r"/releases$")  # it did list


def _all_assets(fake: FakeGitHub) -> list[fakegithub.FakeAsset]:
    return [a for r in fake.releases for a in fake.assets_of(r.id)]


def test_prune_reads_at_most_ten_pages_and_says_so(
    fake_github: FakeGitHub, prune: Callable[..., Any]
) -> None:
    # The oldest draft is past GitHub's 1,000 listed releases: it cannot be seen.
    hidden = fake_github.create_release(f"build-{'a' * 64}", draft=True, created_at=hours_ago(9))
    eight_hours_ago = hours_ago(8)
    for n in range(1000):
        fake_github.create_release(f"build-{n:064x}", created_at=eight_hours_ago)
    newest = fake_github.create_release(TAG, draft=True, created_at=hours_ago(3))

    result = prune()
    assert result.exit_code == 0, result.output
    assert "stopped after 10 pages of 100" in result.output
    # It says how far back it saw, so an operator knows how often to run it.
    reach = eight_hours_ago.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"drafts created before {reach} are not seen" in result.output
    assert "1 draft(s) deleted" in result.output and "1000 release(s) listed" in result.output
    listings = fake_github.find_requests("GET", r"/releases$")
    assert [r.status for r in listings] == [200] * 10  # never the page GitHub refuses
    ids = {r.id for r in fake_github.releases}
    assert newest.id not in ids and hidden.id in ids and len(ids) == 1001


def test_prune_failures_are_one_line_and_exit_3(
    fake_github: FakeGitHub, prune: Callable[..., Any]
) -> None:
    draft = fake_github.create_release(TAG, draft=True, created_at=hours_ago(3))
    fake_github.fail_next(
        "DELETE", r"/releases/\d+$", status=403, body={"message": "Must have admin rights"}
    )
    result = prune()
    assert result.exit_code == 3
    assert "asu-ci: sweeping drafts: GitHub answered 403: Must have admin rights" in result.output
    assert "Traceback" not in result.output
    assert [r.id for r in fake_github.releases] == [draft.id]


@pytest.mark.parametrize("value", ["0", "-5", "two"])
def test_prune_refuses_a_bad_age(
    fake_github: FakeGitHub, prune: Callable[..., Any], value: str
) -> None:
    fake_github.create_release(TAG, draft=True, created_at=hours_ago(3))
    result = prune("--older-than", value)
    assert result.exit_code == 2
    assert len(fake_github.releases) == 1
    assert fake_github.requests == []

"""``github.store: endpoint``: GitHub Actions builds, the endpoint keeps the images.

The run's publish job checks and attests the images and hands the folder over
as the artifact ``attested-<hash>``; the endpoint takes it into its own store
(no release, no tag). The fake GitHub plays the workflow (``workflow_hands_over``).
"""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from asu_ci.identity.hashing import request_hash
from asu_ci.publish.artifacts import unpack
from asu_ci.publish.releases import PublishError
from tests.support import fakegithub, githubworld
from tests.support.fakegithub import CONTENT_METHODS
from tests.support.githubworld import (
    IMAGE,
    World,
    build_body,
    image_bytes,
    normalized_of,
    request_body,
)

fake_github = fakegithub.fake_github
world = githubworld.world

ENDPOINT = {"store": "endpoint"}


def test_a_build_is_kept_by_the_endpoint_without_a_release(world: Callable[..., World]) -> None:
    w = world(github=ENDPOINT)
    w.fake.on_dispatch = w.workflow_hands_over
    key = w.post().json()["request_hash"]
    done = w.wait_status(key, 200).json()
    assert done["request_hash"] == key
    assert done["attestation"].startswith("https://github.com/asu-ci/builds/attestations/")

    (dispatch,) = w.dispatches()
    assert dispatch.json["inputs"]["store"] == "endpoint"
    # No release and no tag: the endpoint's store is the build's home.
    assert w.fake.releases == []
    assert w.fake.find_requests("POST", r"/releases") == []
    # Content-creating requests of the whole build: the endpoint's dispatch and the
    # workflow's attestation (no draft, no uploads, no publishing).
    created = [r for r in w.fake.requests if r.method in CONTENT_METHODS]
    assert [r.path.rsplit("/", 1)[-1] for r in created] == ["dispatches", "attestations"]

    folder = w.store.folder(key)
    assert (folder / IMAGE).read_bytes() == image_bytes(key)
    assert json.loads((folder / "build.json").read_text()) == done
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [
            IMAGE,
            "build.json",
            "status.json",
            "sha256sums",
            "profiles.json",
            "openwrt-tplink_archer-c7-v5.manifest",
        ]
    )
    # The image is served from the endpoint's disk: GitHub is not asked.
    before = len(w.fake.requests)
    image = w.client.get(f"/store/{key}/{IMAGE}", headers={"Origin": "http://luci.example"})
    assert (image.status_code, image.content) == (200, image_bytes(key))
    assert image.headers["Access-Control-Allow-Origin"] == "*"  # LuCI fetches it in the browser
    assert len(w.fake.requests) == before
    assert w.client.get(f"/store/{key}/nothing.bin").status_code == 404
    row = w.dispatcher.queue.get(key)
    assert row is not None and row.state == "done"
    # A later identical request is answered from the store: no second run.
    assert w.post().status_code == 200
    assert len(w.dispatches()) == 1


def test_a_prebuilt_release_is_used_without_a_run(
    fake_github: fakegithub.FakeGitHub, world: Callable[..., World]
) -> None:
    # prebuild.yml publishes the operator's list as releases, whatever github.store says.
    key = request_hash(normalized_of(request_body()))
    body = build_body(key, normalized_of(request_body()).to_json())
    fake_github.publish_release(
        f"build-{key}", {IMAGE: image_bytes(key), "build.json": json.dumps(body).encode()}
    )
    w = world(github=ENDPOINT)
    assert w.post().json()["request_hash"] == key
    assert w.wait_status(key, 200).json() == body
    assert w.dispatches() == []
    image = w.client.get(f"/store/{key}/{IMAGE}")
    assert (image.status_code, image.content) == (200, image_bytes(key))


def test_what_a_crashed_take_left_is_cleared_by_the_next(world: Callable[..., World]) -> None:
    w = world(github=ENDPOINT)
    key = request_hash(normalized_of(request_body()))
    stale = w.store.staging(key)  # an endpoint died while unpacking this hash's output
    (stale / IMAGE).write_bytes(b"half an image")
    w.fake.on_dispatch = w.workflow_hands_over
    assert w.post().json()["request_hash"] == key
    assert w.wait_status(key, 200).json()["request_hash"] == key
    assert not stale.exists()
    assert (w.store.folder(key) / IMAGE).read_bytes() == image_bytes(key)
    assert [p.name for p in w.store.root.iterdir()] == [key]


def _flip_image(files: dict[str, bytes]) -> None:
    files[IMAGE] = files[IMAGE][::-1] + b"x"


def _add(name: str) -> Callable[[dict[str, bytes]], None]:
    return lambda files: files.__setitem__(name, b"surprise")


def _other_hash(files: dict[str, bytes]) -> None:
    build = json.loads(files["build.json"])
    build["request_hash"] = "0" * 64
    files["build.json"] = json.dumps(build).encode()


def _no_build(files: dict[str, bytes]) -> None:
    del files["build.json"]


@pytest.mark.parametrize(
    ("tamper", "says"),
    [
        (_flip_image, "does not match the sha256 build.json names"),
        (_add("../escaped"), "not a file name a build writes"),
        (_add("sub/file.bin"), "not a file name a build writes"),
        (_add(".hidden"), "not a file name a build writes"),
        (_other_hash, "not about request"),
        (_no_build, "holds no build.json"),
    ],
    ids=["altered-image", "dot-dot", "folder", "hidden", "other-hash", "no-build-json"],
)
def test_output_that_fails_the_checks_is_refused_and_nothing_is_kept(
    world: Callable[..., World],
    tmp_path: Path,
    tamper: Callable[[dict[str, bytes]], None],
    says: str,
) -> None:
    w = world(github=ENDPOINT)
    w.fake.on_dispatch = lambda run: w.workflow_hands_over(run, tamper=tamper)
    key = w.post().json()["request_hash"]
    failed = w.wait_status(key, 500).json()
    assert "was refused" in failed["detail"] and says in failed["detail"]
    assert "/actions/runs/" in failed["detail"]
    folder = w.store.folder(key)
    assert sorted(p.name for p in folder.iterdir()) == ["status.json"]
    assert (
        not (w.store.root / "escaped").exists() and not (w.store.root.parent / "escaped").exists()
    )
    assert [p.name for p in w.store.root.iterdir()] == [key]  # no staging folder left behind


def test_output_that_expired_before_the_endpoint_took_it_is_built_again(
    world: Callable[..., World],
) -> None:
    w = world(github=ENDPOINT)
    w.fake.on_dispatch = lambda run: w.workflow_hands_over(run, retention_days=-1)
    key = w.post().json()["request_hash"]
    failed = w.wait_status(key, 500).json()
    assert "is no longer there" in failed["detail"]
    assert failed.get("failed_at") is None
    # Nothing failed that a new run does not fix: the next request is dispatched at once.
    w.fake.on_dispatch = w.workflow_hands_over
    assert w.post().status_code == 202
    assert w.wait_status(key, 200).json()["request_hash"] == key
    assert len(w.dispatches()) == 2


def test_a_run_that_handed_nothing_over_fails_after_the_grace_polls(
    world: Callable[..., World],
) -> None:
    w = world(github=ENDPOINT)

    def succeeds_silently(run: fakegithub.FakeRun) -> None:
        w.checked_inputs(run)
        w.fake.start_run(run.id)
        w.fake.complete_run(run.id, "success")

    w.fake.on_dispatch = succeeds_silently
    key = w.post().json()["request_hash"]
    assert "is no longer there" in w.wait_status(key, 500).json()["detail"]
    listings = w.fake.find_requests("GET", r"/artifacts$")
    assert len(listings) == 2  # the first look and one grace poll (success_grace_polls=1)


def test_a_failed_build_still_reports_from_its_artifact(world: Callable[..., World]) -> None:
    w = world(github=ENDPOINT)
    w.fake.on_dispatch = w.workflow_fails
    key = w.post().json()["request_hash"]
    failed = w.wait_status(key, 500).json()
    assert failed["detail"].startswith("Image too big")
    assert failed["stderr"] == "is too big"
    assert w.fake.releases == []


def _zip(entries: dict[str, bytes], *, link: str | None = None) -> io.BytesIO:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    buffer.seek(0)
    return buffer


def test_unpack_refuses_links_duplicates_and_non_zips(tmp_path: Path) -> None:
    key = "ab" * 32
    build = json.dumps({"request_hash": key, "images": [{"name": "a.bin", "sha256": "0" * 64}]})
    with pytest.raises(PublishError, match="not a file name a build writes"):
        unpack(_zip({"build.json": build.encode()}, link="a.bin"), tmp_path / "one", key)
    with pytest.raises(PublishError, match="not a zip"):
        unpack(io.BytesIO(b"PK no zip at all"), tmp_path / "two", key)
    twice = io.BytesIO()
    with zipfile.ZipFile(twice, "w") as archive, pytest.warns(UserWarning, match="Duplicate"):
        archive.writestr("a.bin", b"1")
        archive.writestr("a.bin", b"2")
    (tmp_path / "three").mkdir()
    with pytest.raises(PublishError, match="twice"):
        unpack(twice, tmp_path / "three", key)

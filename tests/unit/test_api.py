"""The endpoint's contract that needs no build: errors, headers, CORS, limits, OpenAPI.

Bodies are compared whole where PROTOCOL.md fixes them, so a changed error
shape fails here first.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from asu_ci.api.app import create_app
from asu_ci.config import Settings, load_settings
from asu_ci.dispatch.queue import Queue
from asu_ci.index.render import render_tree
from tests.support.mirror import MirrorServer, mirror_key

pytest_plugins = ["tests.support.fixtures"]

VERSION = "23.05.4"
TARGET = "ath79/generic"
PROFILE = "tplink_archer-c7-v5"


def request_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "version": VERSION,
        "target": TARGET,
        "profile": PROFILE,
        "packages": ["luci"],
        "diff_packages": True,
        "client": "test/1",
    }
    body.update(changes)
    return body


def settings_for(rendered: Settings, tmp_path: Path, **server: object) -> Settings:
    """A private copy of the rendered index, a fresh data dir and the given server limits."""
    public = tmp_path / "public"
    shutil.copytree(rendered.public_dir, public, copy_function=os.link)
    overrides: dict[str, object] = {
        "upstream": rendered.upstream,
        "signatures.trusted_keys": list(rendered.signatures.trusted_keys),
        "public": public,
        "data": tmp_path / "data",
    }
    overrides.update({f"server.{k}": v for k, v in server.items()})
    return load_settings(None, overrides, environ={})


@pytest.fixture
def client(rendered: Settings, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(settings_for(rendered, tmp_path), dispatch=False)
    with TestClient(app) as test_client:
        yield test_client


def test_unknown_version_is_400_with_detail(client: TestClient) -> None:
    r = client.post("/api/v1/build", json=request_body(version="99.99.0"))
    assert r.status_code == 400
    assert r.json() == {"status": 400, "detail": "Unsupported version: 99.99.0"}


def test_unknown_target_is_400(client: TestClient) -> None:
    r = client.post("/api/v1/build", json=request_body(target="ath79/nosuch"))
    assert r.status_code == 400
    assert r.json() == {"status": 400, "detail": "Unsupported target: ath79/nosuch"}


def test_unknown_profile_is_400(client: TestClient) -> None:
    r = client.post("/api/v1/build", json=request_body(profile="nosuch_device"))
    assert r.status_code == 400
    assert r.json() == {"status": 400, "detail": "Unsupported profile: nosuch_device"}


def test_unknown_packages_are_422_named_in_header(client: TestClient) -> None:
    r = client.post("/api/v1/build", json=request_body(packages=["luci", "nosuch-b", "nosuch-a"]))
    assert r.status_code == 422
    assert r.headers["X-Unknown-Package"] == "nosuch-a, nosuch-b"
    body = r.json()
    assert body["status"] == 422
    assert "nosuch-a, nosuch-b" in body["detail"]


def test_removal_of_a_default_is_not_an_unknown_package(client: TestClient) -> None:
    r = client.post("/api/v1/build", json=request_body(packages=["-uboot-envtools", "luci"]))
    assert r.status_code == 202


@pytest.mark.parametrize(
    "changes",
    [
        {"profile": "$(reboot)"},
        {"target": "../../etc"},
        {"version": "23.05.4; rm -rf /"},
        {"packages": ["luci`id`"]},
        {"packages": "luci"},
        {"rootfs_size_mb": 0},
        {"filesystem": "squashfs\n"},
        {"repositories": {"x": "ftp://example.org/"}},
        {"distro": "lede"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_bad_fields_are_400_json(client: TestClient, changes: dict[str, object]) -> None:
    r = client.post("/api/v1/build", json=request_body(**changes))
    assert r.status_code == 400
    body = r.json()
    assert set(body) == {"status", "detail"}
    assert body["status"] == 400
    assert body["detail"].startswith("Invalid request: ")


def test_invalid_json_and_missing_fields_are_400(client: TestClient) -> None:
    r = client.post(
        "/api/v1/build", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 400
    assert r.json() == {"status": 400, "detail": "The request body is not valid JSON"}
    r = client.post("/api/v1/build", json={"version": VERSION})
    assert r.status_code == 400
    assert "target" in r.json()["detail"]


def test_a_new_request_is_queued_once(client: TestClient, tmp_path: Path) -> None:
    first = client.post("/api/v1/build", json=request_body())
    assert first.status_code == 202
    body = first.json()
    assert body["status"] == 202
    assert len(body["request_hash"]) == 64
    assert body["imagebuilder_status"] == "init"
    assert body["queue_position"] == 0
    assert first.headers["X-Imagebuilder-Status"] == "init"
    assert first.headers["X-Queue-Position"] == "0"
    again = client.post(
        "/api/v1/build", json=request_body(packages=["luci", "luci"], client="other/2")
    )
    assert again.status_code == 202
    assert again.json()["request_hash"] == body["request_hash"]
    assert Queue(tmp_path / "data" / "queue.sqlite3").counts()["queued"] == 1
    poll = client.get(f"/api/v1/build/{body['request_hash']}")
    assert poll.status_code == 202
    assert poll.json()["request_hash"] == body["request_hash"]
    head = client.head(f"/api/v1/build/{body['request_hash']}")
    assert head.status_code == 202
    assert head.headers["X-Imagebuilder-Status"] == "init"
    assert head.headers["X-Queue-Position"] == "0"
    assert head.content == b""


def test_board_name_with_comma_and_alias_give_the_profile_hash(client: TestClient) -> None:
    by_id = client.post("/api/v1/build", json=request_body()).json()["request_hash"]
    by_board = client.post("/api/v1/build", json=request_body(profile="tplink,archer-c7-v5"))
    assert by_board.json()["request_hash"] == by_id


def test_a_vm_board_name_on_x86_64_builds_generic_and_says_so(
    client: TestClient, tmp_path: Path
) -> None:
    """LuCI on a virtual PC sends its DMI board name; x86/64 has one profile, generic."""
    board = "qemu-standard-pc-q35-ich9-2009"
    vm = {"target": "x86/64", "profile": board, "packages": []}
    first = client.post("/api/v1/build", json=request_body(**vm))
    assert first.status_code == 202
    body = first.json()
    note = f"{board} is no profile of x86/64; its only profile, generic, is used instead"
    assert body["notes"] == [note]
    assert (body["status"], body["imagebuilder_status"], body["queue_position"]) == (202, "init", 0)
    assert first.headers["X-Imagebuilder-Status"] == "init"
    direct = client.post("/api/v1/build", json=request_body(**{**vm, "profile": "generic"}))
    assert direct.json()["request_hash"] == body["request_hash"]
    assert "notes" not in direct.json()
    digest = body["request_hash"]
    assert "notes" not in client.get(f"/api/v1/build/{digest}").json()

    # Built: the stored body is answered with the note added, nothing else changed.
    built = {"status": 200, "detail": "done", "request_hash": digest, "id": "generic"}
    folder = tmp_path / "public" / "store" / digest
    (folder / "build.json").write_text(json.dumps(built))
    done = client.post("/api/v1/build", json=request_body(**vm))
    assert done.status_code == 200
    assert done.json() == {**built, "notes": [note]}
    assert done.headers["X-Imagebuilder-Status"] == "done"
    assert client.get(f"/api/v1/build/{digest}").json() == built


def test_a_board_name_on_a_target_with_two_profiles_is_still_unknown(client: TestClient) -> None:
    board = "qemu-standard-pc-i440fx-piix-1996"
    r = client.post("/api/v1/build", json=request_body(target="x86/geode", profile=board))
    assert r.status_code == 400
    assert r.json() == {"status": 400, "detail": f"Unsupported profile: {board}"}


def test_a_release_request_keeps_its_written_hash(client: TestClient) -> None:
    """The hash of tests/unit/test_identity.py's RELEASE_PLAIN, through the endpoint."""
    r = client.post("/api/v1/build", json=request_body())
    assert r.json()["request_hash"] == (
        "ed146f457f222186037a1da6c13fa4b5e4c766bd8bea1b5d4ab540ac2209bdd4"
    )


def test_unknown_hash_is_404_json(client: TestClient) -> None:
    r = client.get("/api/v1/build/" + "0" * 64)
    assert r.status_code == 404
    assert r.json()["status"] == 404
    assert "X-Imagebuilder-Status" in r.headers
    assert "X-Queue-Position" in r.headers
    r = client.get("/api/v1/build/not-a-hash")
    assert r.status_code == 404
    assert r.json()["status"] == 404


def test_rate_limit_is_429_json(rendered: Settings, tmp_path: Path) -> None:
    app = create_app(settings_for(rendered, tmp_path, rate_limit_per_minute=2), dispatch=False)
    with TestClient(app) as c:
        for pkg in ("luci", "tcpdump"):
            assert c.post("/api/v1/build", json=request_body(packages=[pkg])).status_code == 202
        # a poll of a known request is not a new build
        assert c.post("/api/v1/build", json=request_body(packages=["luci"])).status_code == 202
        r = c.post("/api/v1/build", json=request_body(packages=["dnsmasq"]))
    assert r.status_code == 429
    assert r.json()["status"] == 429
    assert "Too many new builds" in r.json()["detail"]
    assert int(r.headers["Retry-After"]) > 0


def test_full_queue_is_529_json(rendered: Settings, tmp_path: Path) -> None:
    app = create_app(settings_for(rendered, tmp_path, max_pending_builds=1), dispatch=False)
    with TestClient(app) as c:
        assert c.post("/api/v1/build", json=request_body()).status_code == 202
        r = c.post("/api/v1/build", json=request_body(packages=["tcpdump"]))
    assert r.status_code == 529
    assert r.json()["status"] == 529
    assert "queued" in r.json()["detail"]


def test_body_size_limit_is_413_json(client: TestClient) -> None:
    huge = request_body(defaults="x" * 300_000)
    r = client.post("/api/v1/build", content=json.dumps(huge).encode())
    assert r.status_code == 413
    assert r.json()["status"] == 413


def test_defaults_over_the_server_limit_is_400(client: TestClient) -> None:
    r = client.post("/api/v1/build", json=request_body(defaults="x" * 20481))
    assert r.status_code == 400
    assert "20480" in r.json()["detail"]


def test_cors_preflight_and_headers(client: TestClient) -> None:
    r = client.options(
        "/api/v1/build",
        headers={
            "Origin": "http://192.0.2.1",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert r.headers["Access-Control-Allow-Headers"] == "content-type"
    for path in ("/api/v1/overview", "/json/v1/overview.json", "/.versions.json"):
        got = client.get(path, headers={"Content-Type": "application/json"})
        assert got.status_code == 200, path
        assert got.headers["Access-Control-Allow-Origin"] == "*", path
    assert "X-Imagebuilder-Status" in r.headers["Access-Control-Expose-Headers"]


def test_query_strings_and_double_slashes_are_tolerated(client: TestClient) -> None:
    r = client.get("/json/v1//releases/23.05.4/targets/ath79/generic/index.json?1732700000000")
    assert r.status_code == 200
    assert "architecture" in r.json()
    r = client.get("/api/v1/overview?1732700000000")
    assert r.json()["latest"] == [VERSION]


def test_overview_routes_and_revision(client: TestClient) -> None:
    for path in ("/api/overview", "/api/v1/overview"):
        body = client.get(path).json()
        assert body["latest"] == [VERSION]
        assert body["server"]["max_defaults_length"] == 20480
    r = client.get("/api/v1/revision/23.05.4/ath79/generic")
    assert r.json() == {"revision": "r24012-d8dd03c46f"}
    r = client.get("/api/v1/revision/23.05.4/ath79/nosuch")
    assert r.status_code == 400
    assert r.json()["status"] == 400


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    r = client.get("/api/v1/nosuch")
    assert r.status_code == 404
    assert r.json()["status"] == 404
    r = client.delete("/api/v1/build")
    assert r.status_code in (404, 405)
    assert r.json()["detail"]


def test_hidden_store_names_are_never_served(client: TestClient, tmp_path: Path) -> None:
    hidden = tmp_path / "public" / "store" / ".abc.staging"
    hidden.mkdir(parents=True, exist_ok=True)
    (hidden / "image.bin").write_bytes(b"half")
    assert client.get("/store/.abc.staging/image.bin").status_code == 404


def test_openapi_is_the_contract(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    schema = doc["components"]["schemas"]["BuildRequest"]["properties"]
    assert schema["profile"]["pattern"]
    assert schema["target"]["pattern"]
    assert schema["packages"]["items"]["pattern"]
    assert "/api/v1/build/{request_hash}" in doc["paths"]
    assert client.get("/docs").status_code == 200
    assert client.get("/ui/").status_code == 200


def test_stats_and_metrics(client: TestClient) -> None:
    client.post("/api/v1/build", json=request_body())
    stats = client.get("/api/v1/stats").json()
    assert stats["queue_length"] == 1
    assert stats["builds_queued_since_start"] == 1
    client.post("/api/v1/build", json=request_body())  # the same request: a poll
    answer = client.get("/metrics")
    assert answer.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }
    assert samples[("asu_ci_queue", (("state", "queued"),))] == 1
    assert samples[("asu_ci_queue", (("state", "running"),))] == 0
    assert samples[("asu_ci_responses_total", (("code", "202"),))] == 2
    assert samples[("asu_ci_builds_queued_total", ())] == 1


def test_a_malformed_request_carries_the_state_headers(client: TestClient) -> None:
    answer = client.post("/api/v1/build", json={"version": 23})
    assert answer.status_code == 400
    assert set(answer.json()) == {"status", "detail"}
    assert answer.headers["X-Imagebuilder-Status"] == "init"
    assert answer.headers["X-Queue-Position"] == "0"


def test_concurrent_identical_posts_make_one_row(rendered: Settings, tmp_path: Path) -> None:
    app = create_app(settings_for(rendered, tmp_path), dispatch=False)
    hashes: list[str] = []
    codes: list[int] = []
    with TestClient(app) as c:

        def post() -> None:
            r = c.post("/api/v1/build", json=request_body(packages=["tcpdump", "luci"]))
            codes.append(r.status_code)
            hashes.append(r.json()["request_hash"])

        threads = [threading.Thread(target=post) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = c.get("/metrics").text
    assert codes == [202] * 50
    # every one of the 50 concurrent answers is counted, the new build once
    assert 'asu_ci_responses_total{code="202"} 50.0' in metrics
    assert "asu_ci_builds_queued_total 1.0" in metrics
    assert len(set(hashes)) == 1
    assert Queue(tmp_path / "data" / "queue.sqlite3").counts()["queued"] == 1


@pytest.fixture(scope="session")
def rendered(upstream_mirror: MirrorServer, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The session mirror rendered once into a public tree (copy it before writing)."""
    home = tmp_path_factory.mktemp("rendered")
    settings = load_settings(
        None,
        {
            "upstream": upstream_mirror.url,
            "public": home / "public",
            "data": home / "data",
            # the mirror signs its sha256sums with its own key, not OpenWrt's
            "signatures.trusted_keys": [mirror_key(upstream_mirror)],
        },
        environ={},
    )
    render_tree(settings)
    return settings

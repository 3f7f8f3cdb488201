"""Hostile input, from the schema down to make.

- schemathesis fuzzes every operation of the app's own OpenAPI document: no
  answer is a 5xx, every answer is one the document declares, in its shape;
- hypothesis checks the request identity: normalising twice changes nothing,
  and two requests that differ in anything that changes the image never share
  a hash;
- an injection corpus (shell words, ``$(…)``, backticks, ``;``, ``|``,
  newlines, ``..``, absolute paths, NUL, 1 MB strings, unicode look-alikes) goes
  through a running ``asu-ci serve`` and its builds: nothing runs (every
  command in it would create a canary file), nothing is written outside the
  store and the data folder, and no request is answered with another
  request's images, not even one crafted to share a prefix of another's hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from asu_ci.api.app import create_app
from asu_ci.config import Server, Settings, load_settings
from asu_ci.errors import AsuCiError
from asu_ci.identity.hashing import is_request_hash, request_hash
from asu_ci.identity.identify import identify
from asu_ci.identity.validate import NormalizedRequest
from asu_ci.index.catalog import Catalog
from tests.conftest import BUILD_PROFILE, BUILD_TARGET, BUILD_VERSION, BuildWorld, make_build_world
from tests.support.frontends import Serve, free_port, write_config
from tests.support.frontends import request as http

#: A build of the test ImageBuilder takes about a second; this allows for a busy machine.
BUILD_DEADLINE = 90.0


@pytest.fixture(scope="module")
def world(build_world: BuildWorld, tmp_path_factory: pytest.TempPathFactory) -> BuildWorld:
    """This module's own index (and store) rendered from the session's mirror."""
    root = tmp_path_factory.mktemp("hostile")
    return make_build_world(root, build_world.fixtures, mirror=build_world.mirror)


def settings_of(world: BuildWorld) -> Settings:
    assert isinstance(world.settings, Settings)
    return world.settings


# --- schemathesis: the OpenAPI document is the contract ------------------------------------


@pytest.fixture(scope="module")
def app(world: BuildWorld, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    """The app on a copy of the index, without builders (queued requests stay queued)."""
    rendered = settings_of(world)
    overrides: dict[str, object] = {
        "upstream": rendered.upstream,
        "public": rendered.public_dir,
        "data": tmp_path_factory.mktemp("schemathesis-data"),
        "server.rate_limit_per_minute": 100_000,
    }
    return create_app(load_settings(None, overrides, environ={}), dispatch=False)


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def test_every_operation_answers_within_its_schema(app: FastAPI) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    assert len(operations) >= 8
    for operation in operations:
        cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
            GenerationMode.NEGATIVE
        )

        @given(case=cases)
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def check(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        check()


# --- hypothesis: the request identity ------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(world: BuildWorld) -> Catalog:
    return Catalog(settings_of(world).public_dir)


@st.composite
def raw_requests(draw: st.DrawFn, profiles: list[str], packages: list[str]) -> dict[str, Any]:
    """What a client might send for the world's target: messy but mostly valid."""
    words = draw(st.lists(st.sampled_from(packages), max_size=6))
    messy = [
        draw(st.sampled_from(["", " ", "\t"]))
        + draw(st.sampled_from(["", "+", "-"]))
        + word
        + draw(st.sampled_from(["", " "]))
        for word in words
    ]
    raw: dict[str, Any] = {
        "version": BUILD_VERSION,
        "target": BUILD_TARGET,
        "profile": draw(st.sampled_from(profiles)),
        "packages": messy + draw(st.lists(st.sampled_from(messy or [""]), max_size=2)),
        "diff_packages": draw(st.booleans()),
        "client": draw(st.sampled_from([None, "luci/1", "owut/2", "x y"])),
    }
    if draw(st.booleans()):
        raw["packages_versions"] = draw(
            st.dictionaries(st.sampled_from(packages), st.sampled_from(["1.0-1", "2"]), max_size=2)
        )
    if draw(st.booleans()):
        raw["filesystem"] = draw(st.sampled_from(["", "squashfs"]))
    if draw(st.booleans()):
        raw["defaults"] = draw(st.text(max_size=40).filter(lambda s: "\x00" not in s))
    if draw(st.booleans()):
        raw["rootfs_size_mb"] = draw(st.integers(1, 1024))
    return raw


def index_names(catalog: Catalog) -> tuple[list[str], list[str]]:
    """Profile ids and board names of the target, and some of its packages."""
    folder = catalog.public / "json" / "v1" / "releases" / BUILD_VERSION / "targets" / BUILD_TARGET
    boards = []
    for path in sorted(folder.glob("*.json")):
        if path.name != "index.json":
            boards.append(path.stem)
            boards.extend(json.loads(path.read_bytes()).get("supported_devices", []))
    names = sorted(catalog.package_names(BUILD_VERSION, BUILD_TARGET) or ())
    return sorted(set(boards))[:40], names[:: max(1, len(names) // 60)]


def test_normalising_is_idempotent(catalog: Catalog) -> None:
    profiles, packages = index_names(catalog)
    server = Server()

    @given(raw=raw_requests(profiles, packages))
    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    def check(raw: dict[str, Any]) -> None:
        try:
            first = identify(raw, catalog, server)
        except AsuCiError:
            assume(False)
            return
        assert first.hash == request_hash(first.request)
        again = identify(first.request.to_json(), catalog, server, expect=first.hash)
        assert again.request == first.request
        # Order, duplicates, "+", spaces and the client never change the hash.
        shuffled = dict(raw, packages=list(reversed(raw["packages"])), client="other/9")
        assert identify(shuffled, catalog, server).hash == first.hash

    check()


words = st.text(st.characters(codec="utf-8"), max_size=12)
#: A value for each field of NormalizedRequest that changes the image.
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "distro": words,
    "version": words,
    "version_code": words,
    "target": words,
    "profile": words,
    "packages": st.lists(words, max_size=4).map(tuple),
    "packages_versions": st.lists(st.tuples(words, words), max_size=3).map(tuple),
    "diff_packages": st.booleans(),
    "filesystem": st.none() | words,
    "rootfs_size_mb": st.none() | st.integers(1, 1 << 20),
    "defaults": st.none() | st.text(max_size=60),
    "repositories": st.lists(st.tuples(words, words), min_size=1, max_size=2).map(tuple),
    "repository_keys": st.lists(words, max_size=2).map(tuple),
    "repositories_mode": st.sampled_from(["append", "replace"]),
}


@st.composite
def normalized_requests(draw: st.DrawFn) -> NormalizedRequest:
    fields = {name: draw(values) for name, values in FIELD_VALUES.items()}
    fields["client"] = draw(st.none() | words)
    return NormalizedRequest(**fields)


@given(
    base=normalized_requests(),
    field=st.sampled_from(sorted(FIELD_VALUES)),
    data=st.data(),
)
@settings(max_examples=400, deadline=None)
def test_requests_that_differ_in_the_image_never_share_a_hash(
    base: NormalizedRequest, field: str, data: st.DataObject
) -> None:
    changed = dataclasses.replace(base, **{field: data.draw(FIELD_VALUES[field])})
    assume(changed.image_fields() != base.image_fields())
    assert request_hash(changed) != request_hash(base)
    # ...and what does not change the image does not change the hash.
    assert request_hash(dataclasses.replace(base, client="someone else")) == request_hash(base)
    assert is_request_hash(request_hash(changed))


# --- the injection corpus through a running server and its builds --------------------------


class Flow:
    """``asu-ci serve`` with the local builder, a canary and a marker for stray files."""

    def __init__(self, serve: Serve, world: BuildWorld, root: Path) -> None:
        self.serve = serve
        self.settings = settings_of(world)
        self.root = root
        self.canary = root / "canary"
        self.marker = f"asuhostile{secrets.token_hex(4)}"
        self.store = self.settings.public_dir / "store"

    def post(self, body: Any) -> tuple[int, dict[str, str], bytes]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return http(
            self.serve.url + "/api/v1/build", "POST", data, {"Content-Type": "application/json"}
        )

    def get(self, path: str) -> tuple[int, dict[str, str], bytes]:
        return http(self.serve.url + path)

    def wait(self, digest: str) -> dict[str, Any]:
        deadline = time.monotonic() + BUILD_DEADLINE
        while True:
            status, _, data = self.get(f"/api/v1/build/{digest}")
            if status != 202:
                assert status == 200, data
                body: dict[str, Any] = json.loads(data)
                return body
            assert time.monotonic() < deadline, f"{digest} did not finish"
            time.sleep(0.1)

    def payloads(self) -> list[str]:
        """Strings that would do harm if anything interpreted them."""
        run = f"touch {self.canary}"
        return [
            f"$({run})",
            f"`{run}`",
            f"; {run}",
            f"| {run}",
            f"&& {run}",
            f"\n{run}\n",
            f"x\r\nX-Injected: 1\r\n\r\n{run}",
            f"${{IFS}}{run}",
            f"'; {run}; '",
            f'"; {run}; "',
            f"../../../../../tmp/{self.marker}",
            f"/tmp/{self.marker}/x",
            "..",
            "../..",
            "/",
            "~root",
            f"luci\x00{run}",
            "\x00",
            "-j99",
            "--eval=$(shell touch x)",
            "PROFILE=evil",
            "tplink_archer\u2010c7\u2010v5",  # hyphens that are not ASCII
            "tplink_archer-\u0441" + "7-v5",  # a Cyrillic "es"
            "\uff4c\uff55\uff43\uff49",  # fullwidth "luci"
            "luci\u200b",  # zero-width space
            "x" * (1 << 20),  # 1 MiB
        ]


@pytest.fixture(scope="module")
def flow(world: BuildWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    root = tmp_path_factory.mktemp("hostile-flow")
    dumped = settings_of(world).model_dump(mode="json", exclude_none=True)
    dumped["server"]["rate_limit_per_minute"] = 100_000
    config = write_config(root / "asu-ci.yaml", dumped)
    serve = Serve(config, free_port(), root / "serve.log").start()
    try:
        yield Flow(serve, world, root)
    finally:
        serve.stop()


def base_request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "version": BUILD_VERSION,
        "target": BUILD_TARGET,
        "profile": BUILD_PROFILE,
        "packages": ["luci"],
        "diff_packages": True,
    }
    body.update(changes)
    return body


def placed(field: str, payload: str) -> dict[str, Any]:
    """``payload`` in one field (or key) of an otherwise good request."""
    if field == "packages":
        return base_request(packages=["luci", payload])
    if field == "packages_versions.key":
        return base_request(packages_versions={payload: "1.0"})
    if field == "packages_versions.value":
        return base_request(packages_versions={"luci": payload})
    if field == "repositories.name":
        return base_request(repositories={payload: "http://127.0.0.1/feed"})
    if field == "repositories.url":
        return base_request(repositories={"feed": payload})
    return base_request(**{field: payload})


INJECTED_FIELDS = [
    "distro",
    "version",
    "version_code",
    "target",
    "profile",
    "packages",
    "packages_versions.key",
    "packages_versions.value",
    "filesystem",
    "rootfs_size_mb",
    "repositories.name",
    "repositories.url",
    "client",
]


def test_the_injection_corpus_runs_nothing_and_writes_nothing_outside(flow: Flow) -> None:
    before = sorted(p.name for p in Path("/tmp").iterdir())
    accepted: dict[str, dict[str, Any]] = {}
    for field in INJECTED_FIELDS:
        for payload in flow.payloads():
            body = placed(field, payload)
            status, head, data = flow.post(body)
            assert status < 500, (field, payload[:60], data[:300])
            assert "x-injected" not in head
            answer = json.loads(data)
            assert answer["status"] == status and answer.get("detail")
            assert len(data) < 4096 or status in (200, 202), "an error echoed the input"
            if status in (200, 202):
                accepted[answer["request_hash"]] = body
            else:
                assert status in (400, 413, 422), (field, payload[:60], status)
    # Where hostile text is allowed it is data: a first-boot script, repository keys.
    script = "\n".join(p for p in flow.payloads()[:10])
    for body in (
        base_request(defaults=script),
        base_request(repository_keys=[script.replace("\r", "")[:4096]]),
    ):
        status, _, data = flow.post(body)
        assert status in (200, 202), data
        accepted[json.loads(data)["request_hash"]] = body
    for body in (base_request(defaults="x\x00y"), base_request(defaults="x" * (1 << 20))):
        status, _, data = flow.post(body)
        assert status in (400, 413), data
    # Hostile paths.
    for path in (
        "/api/v1/build/../../../../etc/passwd",
        "/api/v1/build/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/v1/build/" + "0" * 64 + "%00",
        "/api/v1/build/" + "a" * 20_000,
        "/store/..%2f..%2f..%2fetc/passwd",
        "/store/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/json/v1/../../../../../etc/passwd",
        f"/api/v1/revision/{BUILD_VERSION}/..%2f..%2fetc/passwd",
    ):
        status, _, data = flow.get(path)
        assert status < 500 and b"root:" not in data, path

    assert len(accepted) <= 8, "hostile words made new builds"
    for digest, body in accepted.items():
        built = flow.wait(digest)
        check_own_images(flow, digest, built)
        if "defaults" in body:
            assert "defaults" not in built["request"]
            digest_of_script = hashlib.sha256(body["defaults"].encode()).hexdigest()
            assert built["request"]["defaults_sha256"] == digest_of_script
            image = flow.store / digest / built["images"][0]["name"]
            assert f"touch {flow.canary}".encode() in image.read_bytes()

    assert not flow.canary.exists(), "a payload was run"
    after = sorted(p.name for p in Path("/tmp").iterdir())
    assert [n for n in after if n not in before and flow.marker in n] == []
    check_nothing_outside(flow)


def check_own_images(flow: Flow, digest: str, built: dict[str, Any]) -> None:
    """The answer for ``digest`` is its own build: its hash, its folder, its bytes."""
    assert built["request_hash"] == digest == built["bin_dir"]
    folder = flow.store / digest
    assert json.loads((folder / "build.json").read_bytes()) == built
    for image in built["images"]:
        data = (folder / image["name"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image["sha256"]


def check_nothing_outside(flow: Flow) -> None:
    """Every file is in the store (a folder per full hash), the data folder or the index."""
    stray = [
        Path(folder, name)
        for top in (flow.root, flow.settings.home)
        # os.walk skips a build's work folder that its job removes while we look.
        for folder, dirs, files in os.walk(top)
        for name in dirs + files
        if flow.marker in name
    ]
    assert stray == []
    for entry in flow.store.iterdir():
        assert is_request_hash(entry.name), entry
        for item in entry.iterdir():
            assert item.is_file() and not item.is_symlink(), item


def test_a_hash_prefix_twin_gets_its_own_build(flow: Flow, world: BuildWorld) -> None:
    """CVE-2024-54143: a request crafted to share the first hex digits of another's hash."""
    catalog = Catalog(settings_of(world).public_dir)
    first_body = base_request(packages=["luci", "tcpdump"])
    found = identify(first_body, catalog, Server())
    first, target = found.request, found.hash
    prefix = 4
    for n in range(4_000_000):
        twin = dataclasses.replace(first, defaults=f"# {n}\n")
        if request_hash(twin).startswith(target[:prefix]):
            break
    else:
        pytest.fail("no twin found")
    twin_hash = request_hash(twin)
    assert twin_hash != target and twin_hash[:prefix] == target[:prefix]

    status, _, data = flow.post(first_body)
    assert status in (200, 202) and json.loads(data)["request_hash"] == target
    first_built = flow.wait(target)
    # The twin is new: queued, never answered with the first request's images.
    status, _, data = flow.post(base_request(packages=["tcpdump", "luci"], defaults=twin.defaults))
    assert status == 202, data
    assert json.loads(data)["request_hash"] == twin_hash
    twin_built = flow.wait(twin_hash)
    check_own_images(flow, target, first_built)
    check_own_images(flow, twin_hash, twin_built)
    assert {i["sha256"] for i in first_built["images"]}.isdisjoint(
        i["sha256"] for i in twin_built["images"]
    )
    # A shortened hash names nothing.
    for length in (prefix, 12, 32, 63):
        status, _, _ = flow.get(f"/api/v1/build/{target[:length]}")
        assert status == 404
        status, _, _ = flow.get(f"/store/{target[:length]}/build.json")
        assert status == 404

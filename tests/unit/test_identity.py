"""Request identity: the model's limits, normalisation, the request hash and identify()."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from asu_ci.build import prebuild
from asu_ci.build.job import run_build
from asu_ci.cli import app
from asu_ci.config import Branch, Settings
from asu_ci.errors import RequestError
from asu_ci.identity.hashing import SCHEME, canonical, is_request_hash, request_hash
from asu_ci.identity.identify import identify, parse
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import NormalizedRequest, apply_package_changes, host_allowed
from asu_ci.index.catalog import Catalog
from asu_ci.index.render import render_tree
from asu_ci.publish.local import LocalStore
from tests.support.imagebuilder import UPSTREAM_FIXTURES
from tests.support.mirror import MirrorServer


def _normalized(data: dict[str, Any]) -> NormalizedRequest:
    """The normal form of a raw request, without the index."""
    return NormalizedRequest.from_request(BuildRequest.model_validate(data))


BASE = NormalizedRequest(
    distro="openwrt",
    version="23.05.4",
    version_code="r24012-d8dd03c46f",
    target="ath79/generic",
    profile="tplink_archer-c7-v5",
    packages=("luci", "tcpdump"),
)


def test_hash_is_full_sha256_of_the_canonical_encoding() -> None:
    digest = request_hash(BASE)
    assert is_request_hash(digest)
    assert digest == hashlib.sha256(canonical(BASE)).hexdigest()
    decoded = json.loads(canonical(BASE))
    assert decoded["scheme"] == SCHEME
    assert decoded["packages"] == ["luci", "tcpdump"]
    assert "client" not in decoded


def test_client_does_not_change_the_hash() -> None:
    assert request_hash(BASE) == request_hash(dataclasses.replace(BASE, client="luci/git-24"))


def test_package_order_and_duplicates_do_not_change_the_hash() -> None:
    one = BuildRequest(
        version="23.05.4", target="ath79/generic", profile="p", packages=["b", "a", "b", " +a "]
    )
    two = BuildRequest(version="23.05.4", target="ath79/generic", profile="p", packages=["a", "b"])
    assert one.packages == ["b", "a"]
    a = _normalized(one.model_dump())
    b = _normalized(two.model_dump())
    assert a.packages == b.packages == ("a", "b")
    assert request_hash(a) == request_hash(b)


CHANGES: dict[str, Any] = {
    "version": "23.05.3",
    "version_code": "r23809-234f1a2efa",
    "target": "ath79/nand",
    "profile": "tplink_archer-c7-v2",
    "packages": ("luci",),
    "packages_versions": (("luci", "1.0"),),
    "diff_packages": True,
    "filesystem": "ext4",
    "rootfs_size_mb": 256,
    "defaults": "uci set system.@system[0].hostname=x",
    "repositories": (("extra", "https://example.org/feed"),),
    "repository_keys": ("RWSomeKey",),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_each_image_affecting_field_changes_the_hash(name: str) -> None:
    changed = dataclasses.replace(BASE, **{name: CHANGES[name]})
    assert request_hash(changed) != request_hash(BASE)


def test_repositories_mode_matters_only_with_repositories() -> None:
    assert request_hash(dataclasses.replace(BASE, repositories_mode="replace")) == request_hash(
        BASE
    )
    with_repo = dataclasses.replace(BASE, repositories=(("x", "https://example.org/x"),))
    assert request_hash(with_repo) != request_hash(
        dataclasses.replace(with_repo, repositories_mode="replace")
    )


def test_field_boundaries_cannot_be_shifted() -> None:
    """A bare concatenation would make these two equal; the JSON encoding does not."""
    a = dataclasses.replace(BASE, packages=("ab", "c"))
    b = dataclasses.replace(BASE, packages=("a", "bc"))
    assert request_hash(a) != request_hash(b)


def test_json_round_trip_keeps_the_hash() -> None:
    rich = dataclasses.replace(
        BASE,
        defaults="echo hi\n",
        packages_versions=(("luci", "git-24.1"),),
        repositories=(("x", "https://example.org/x"),),
        client="ofs/4.1",
    )
    again = _normalized(json.loads(json.dumps(rich.to_json())))
    assert request_hash(again) == request_hash(rich)
    # The job's form carries no client: nothing after the endpoint needs it.
    assert again.client is None and "client" not in rich.to_json()


HOSTILE = [
    "$(touch /tmp/pwned)",
    "`id`",
    "a;rm -rf /",
    "a|b",
    "a&&b",
    "a\nb",
    "../../etc/passwd",
    "/etc/passwd",
    "a\x00b",
    "a b",
    "x" * 1_000_000,
    "lucі",  # Cyrillic і
    "ｌｕｃｉ",
    "a'b",
    'a"b',
    "a>b",
    "$HOME",
    "-",
    "",
]


@pytest.mark.parametrize("word", HOSTILE, ids=lambda w: repr(w[:20]))
@pytest.mark.parametrize("field", ["version", "target", "profile", "version_code", "filesystem"])
def test_hostile_strings_are_refused_in_every_path_field(field: str, word: str) -> None:
    body = {"version": "23.05.4", "target": "ath79/generic", "profile": "p", field: word}
    if field in ("filesystem", "version_code") and word == "":
        body[field] = "-"  # empty means "any" for these two
    with pytest.raises(ValidationError):
        BuildRequest.model_validate(body)


@pytest.mark.parametrize("word", [w for w in HOSTILE if w.strip()], ids=lambda w: repr(w[:20]))
def test_hostile_package_names_are_refused(word: str) -> None:
    with pytest.raises(ValidationError):
        BuildRequest(version="23.05.4", target="ath79/generic", profile="p", packages=[word])
    with pytest.raises(ValidationError):
        BuildRequest(
            version="23.05.4", target="ath79/generic", profile="p", packages_versions={word: "1"}
        )


def test_defaults_may_hold_a_script_but_no_nul() -> None:
    ok = BuildRequest(version="1", target="a/b", profile="p", defaults="echo '$(x)'; `y`\n")
    assert ok.defaults is not None and "$(x)" in ok.defaults
    with pytest.raises(ValidationError):
        BuildRequest(version="1", target="a/b", profile="p", defaults="a\x00b")
    assert BuildRequest(version="1", target="a/b", profile="p", defaults="").defaults is None


def test_removals_and_plus_are_normalised() -> None:
    req = BuildRequest(
        version="1", target="a/b", profile="p", packages=["-uboot-envtools", "+luci", "luci", ""]
    )
    assert req.packages == ["-uboot-envtools", "luci"]


def test_package_changes_rename_and_drop_by_revision() -> None:
    changes = [
        {"source": "old", "target": "new", "revision": 100},
        {"target": "gone", "revision": 50},
        {"source": "later", "target": "newer", "revision": 500},
    ]
    words, applied = apply_package_changes(["old", "-gone", "later", "keep"], changes, 200)
    assert words == ["new", "later", "keep"]
    assert [(a["source"], a["target"]) for a in applied] == [("old", "new"), (None, "gone")]


# --- fixed values: the encoding, written out ------------------------------------------

#: Known requests and their hashes, computed once and written here. A change of the
#: encoding (field names, order, separators, Unicode) without a new SCHEME fails this
#: test instead of silently orphaning every stored build.
RELEASE_PLAIN = NormalizedRequest(
    distro="openwrt",
    version="23.05.4",
    version_code="",
    target="ath79/generic",
    profile="tplink_archer-c7-v5",
    packages=("luci",),
    diff_packages=True,
)
RELEASE_RICH = NormalizedRequest(
    distro="openwrt",
    version="23.05.4",
    version_code="r24012-d8dd03c46f",
    target="ath79/generic",
    profile="tplink_archer-c7-v5",
    packages=("-uboot-envtools", "luci", "tcpdump"),
    packages_versions=(("luci", "git-24.264.56413-4d6f2d5"),),
    diff_packages=True,
    filesystem="squashfs",
    rootfs_size_mb=256,
    defaults="uci set system.@system[0].hostname='ap'\n",
    repositories=(("extra", "https://feeds.example.org/extra"),),
    repository_keys=("RWSomeKey",),
    repositories_mode="replace",
    client="ofs/4.1",
)
#: SNAPSHOT x86/64 generic with luci, pinned to the revision the test index offers.
SNAPSHOT_PINNED = NormalizedRequest(
    distro="openwrt",
    version="SNAPSHOT",
    version_code="r28000-0123456789",
    target="x86/64",
    profile="generic",
    packages=("luci",),
)
#: 23.05.4 x86/64 generic, nothing added, a first-boot script that is not ASCII.
RELEASE_X86 = NormalizedRequest(
    distro="openwrt",
    version="23.05.4",
    version_code="",
    target="x86/64",
    profile="generic",
    packages=(),
    defaults="é\n",
)
FIXED = [
    (RELEASE_PLAIN, "ed146f457f222186037a1da6c13fa4b5e4c766bd8bea1b5d4ab540ac2209bdd4"),
    (RELEASE_RICH, "29961c173728489e8b4d42cb762c1977364f2168d2016821d25d581a979102ab"),
    (SNAPSHOT_PINNED, "a419c34bcabea043458ce58781ff2241c16252d8f477ffa75101cfc3d2f83b4c"),
    (RELEASE_X86, "9a593d2885228985d22f8c841fce7986837d93c5b3f4d339950abb93d941bc47"),
]


@pytest.mark.parametrize(("request_", "expected"), FIXED, ids=lambda v: str(v)[:30])
def test_known_requests_keep_their_written_hashes(
    request_: NormalizedRequest, expected: str
) -> None:
    assert SCHEME == "asu-ci/request/1"
    assert request_hash(request_) == expected


def test_the_canonical_encoding_is_written_out() -> None:
    assert canonical(RELEASE_PLAIN) == (
        b'{"defaults":null,"diff_packages":true,"distro":"openwrt","filesystem":null,'
        b'"packages":["luci"],"packages_versions":{},"profile":"tplink_archer-c7-v5",'
        b'"repositories":{},"repositories_mode":null,"repository_keys":[],'
        b'"rootfs_size_mb":null,"scheme":"asu-ci/request/1","target":"ath79/generic",'
        b'"version":"23.05.4","version_code":""}'
    )


# --- identify(): a rendered index with a release and a snapshot ------------------------

SNAP_R1 = SNAPSHOT_PINNED.version_code
SNAP_R2 = "r28123-fedcba9876"
#: A few targets of 23.05.4 (quick to render): single generic ones and x86/geode (two).
RELEASE_TARGETS = ("armsr/armv8", "x86/64", "x86/geode")
#: Board names LuCI sends on virtual machines: a PC's DMI name, a device-tree one.
VM_BOARDS = {"x86/64": "qemu-standard-pc-q35-ich9-2009", "armsr/armv8": "linux,dummy-virt"}


@dataclass
class World:
    """The real 23.05.4 metadata plus a SNAPSHOT x86/64, served and rendered."""

    mirror: MirrorServer
    upstream: Path
    settings: Settings
    catalog: Catalog

    def move_snapshot(self, revision: str) -> None:
        """Publish a new snapshot revision upstream and render it, as ``serve`` does."""
        path = self.upstream / "snapshots/targets/x86/64/profiles.json"
        document = json.loads(path.read_text())
        document["version_code"] = revision
        path.write_text(json.dumps(document))
        render_tree(self.settings)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    root = Path(shutil.copytree(UPSTREAM_FIXTURES, tmp_path / "upstream"))
    release = root / "releases/23.05.4"
    targets = json.loads((release / ".targets.json").read_text())
    (release / ".targets.json").write_text(json.dumps({t: targets[t] for t in RELEASE_TARGETS}))
    snapshot = json.loads((release / "targets/x86/64/profiles.json").read_text())
    snapshot.update(version_code=SNAP_R1, version_number="SNAPSHOT")
    (root / "snapshots/targets/x86/64").mkdir(parents=True)
    (root / "snapshots/targets/x86/64/profiles.json").write_text(json.dumps(snapshot))
    (root / "snapshots/.targets.json").write_text(json.dumps({"x86/64": "x86_64"}))
    with MirrorServer([root]) as mirror:
        settings = Settings(
            upstream=mirror.url,
            public=tmp_path / "public",
            data=tmp_path / "data",
            branches=(Branch(name="SNAPSHOT", snapshot=True), Branch(name="23.05")),
        )
        render_tree(settings)
        yield World(mirror, root, settings, Catalog(settings.public_dir, recheck_seconds=0))


def snapshot_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "version": "SNAPSHOT",
        "target": "x86/64",
        "profile": "generic",
        "packages": ["luci"],
    }
    body.update(changes)
    return body


def test_a_release_request_keeps_its_hash_and_its_empty_version_code(world: World) -> None:
    raw = {"version": "23.05.4", "target": "x86/64", "profile": "generic", "defaults": "é\n"}
    found = identify(raw, world.catalog, world.settings.server)
    assert found.request == RELEASE_X86
    assert found.request.version_code == ""
    assert found.hash == dict(FIXED)[RELEASE_X86]
    assert found.notes == ()


def test_a_snapshot_request_is_pinned_to_the_revision_it_is_built_from(world: World) -> None:
    found = identify(snapshot_body(), world.catalog, world.settings.server)
    assert found.request.version_code == SNAP_R1
    assert found.request.to_json()["version_code"] == SNAP_R1  # recorded with the request
    assert found.hash == dict(FIXED)[SNAPSHOT_PINNED]
    named = identify(snapshot_body(version_code=SNAP_R1), world.catalog, world.settings.server)
    assert named.hash == found.hash


def test_a_moved_snapshot_is_a_new_identity(world: World) -> None:
    before = identify(snapshot_body(), world.catalog, world.settings.server)
    world.move_snapshot(SNAP_R2)
    after = identify(snapshot_body(), world.catalog, world.settings.server)
    assert after.request.version_code == SNAP_R2
    assert after.hash != before.hash
    # A request that names the old revision keeps it (and its hash); the build then
    # refuses the ImageBuilder of the new one, as it always did for a named revision.
    old = identify(snapshot_body(version_code=SNAP_R1), world.catalog, world.settings.server)
    assert (old.request.version_code, old.hash) == (SNAP_R1, before.hash)
    release = identify(
        {"version": "23.05.4", "target": "x86/64", "profile": "generic", "defaults": "é\n"},
        world.catalog,
        world.settings.server,
    )
    assert release.hash == dict(FIXED)[RELEASE_X86]


@pytest.mark.parametrize("target", sorted(VM_BOARDS))
def test_a_board_name_on_a_target_with_one_generic_profile_gets_generic(
    world: World, target: str
) -> None:
    board = VM_BOARDS[target]
    raw = {"version": "23.05.4", "target": target, "profile": board}
    found = identify(raw, world.catalog, world.settings.server)
    direct = identify({**raw, "profile": "generic"}, world.catalog, world.settings.server)
    assert found.request.profile == "generic"
    assert found.hash == direct.hash
    assert found.notes == (
        f"{board} is no profile of {target}; its only profile, generic, is used instead",
    )
    assert direct.notes == ()


def test_no_fallback_where_the_target_has_more_than_one_profile(world: World) -> None:
    raw = {"version": "23.05.4", "target": "x86/geode", "profile": VM_BOARDS["x86/64"]}
    with pytest.raises(RequestError) as caught:
        identify(raw, world.catalog, world.settings.server)
    assert caught.value.message == f"Unsupported profile: {VM_BOARDS['x86/64']}"
    with pytest.raises(RequestError, match=r"^Unsupported target: x86/nosuch$"):
        identify({**raw, "target": "x86/nosuch"}, world.catalog, world.settings.server)


def test_bad_fields_and_a_wrong_hash_have_one_wording(world: World) -> None:
    with pytest.raises(RequestError) as caught:
        identify({"version": "23.05.4", "target": "x86/64"}, world.catalog, world.settings.server)
    assert caught.value.message == "Invalid request: profile: Field required"
    with pytest.raises(RequestError, match=r"^The request hashes to [0-9a-f]{64}, not to the exp"):
        identify(snapshot_body(), world.catalog, world.settings.server, expect="0" * 64)


def test_the_cli_prebuild_and_job_use_the_same_identity(world: World, tmp_path: Path) -> None:
    expected = dict(FIXED)[SNAPSHOT_PINNED]
    paths = ["--public", str(world.settings.public_dir), "--data", str(tmp_path / "cli")]
    dry = CliRunner().invoke(
        app,
        ["build", "--request", "-", "--dry-run", "--upstream", world.mirror.url, *paths],
        input=json.dumps(snapshot_body()),
    )
    assert dry.exit_code == 0, dry.output
    assert f"build {expected}: SNAPSHOT x86/64 generic" in dry.output

    store = LocalStore(world.settings.public_dir / "store")
    planned = prebuild.plan(
        [snapshot_body()], catalog=world.catalog, settings=world.settings, store=store
    )
    assert [e.hash for g in planned.groups for e in g.entries] == [expected]

    # A job handed the request without its revision is not what was hashed: refused
    # before anything is downloaded, and recorded under the hash it was given.
    unpinned = dataclasses.replace(SNAPSHOT_PINNED, version_code="")
    world.mirror.reset()
    with pytest.raises(RequestError, match="not to the expected"):
        run_build(unpinned, settings=world.settings, store=store, catalog=world.catalog)
    status = store.status(request_hash(unpinned))
    assert status is not None and status["status"] == 500
    assert "not in its normal form" in status["detail"]
    assert world.mirror.log == []


# -- what cannot change the image cannot change the hash (issue 12 point 3) ----------


def release_body(**changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "version": "23.05.4",
        "target": "x86/64",
        "profile": "generic",
        "packages": ["luci"],
    }
    body.update(changes)
    return body


def hash_of(world: World, **changes: object) -> str:
    return identify(release_body(**changes), world.catalog, world.settings.server).hash


def test_repository_keys_without_repositories_do_not_count(world: World) -> None:
    assert hash_of(world, repository_keys=["untrusted comment: x\nRWQ"]) == hash_of(world)


def test_removing_what_the_image_lacks_does_not_count(world: World) -> None:
    assert hash_of(world, packages=["luci", "-wpad-basic-mbedtls"]) == hash_of(world)
    # Removing what it holds does: a default package, a device package.
    assert hash_of(world, packages=["luci", "-dnsmasq"]) != hash_of(world)
    assert hash_of(world, packages=["luci", "-kmod-igc"]) != hash_of(world)


def test_asking_for_what_the_image_holds_does_not_count(world: World) -> None:
    listed = ["luci", "dnsmasq", "kmod-e1000e", "busybox"]
    assert hash_of(world, packages=listed) == hash_of(world)
    # With diff_packages the list is the exact set, so every name counts.
    assert hash_of(world, packages=listed, diff_packages=True) != hash_of(world, diff_packages=True)


def test_names_a_package_change_renames_are_kept(world: World) -> None:
    """``firewall`` (renamed firewall4, r18611) may matter once the change applies."""
    changes = ({"source": "firewall", "target": "firewall4", "revision": 18611},)
    branch = Branch.model_validate({"name": "23.05", "package_changes": changes})
    settings = world.settings.model_copy(
        update={"branches": (Branch(name="SNAPSHOT", snapshot=True), branch)}
    )
    render_tree(settings)
    found = identify(release_body(packages=["luci", "-firewall"]), world.catalog, settings.server)
    assert found.request.packages == ("-firewall", "luci")


# -- the allow-list names hosts exactly (issue 12 point 10) ---------------------------


@pytest.mark.parametrize(
    ("entries", "host", "allowed"),
    [
        (("feeds.example.org",), "feeds.example.org", True),
        (("feeds.example.org",), "FEEDS.example.org.", True),
        (("feeds.example.org",), "evil.feeds.example.org", False),
        (("*.example.org",), "feeds.example.org", True),
        (("*.example.org",), "example.org", True),
        (("*.example.org",), "example.org.evil.net", False),
        (("127.0.0.1",), "127.0.0.1", True),
        (("127.0.0.1",), "x.127.0.0.1", False),
        (("*.127.0.0.1",), "x.127.0.0.1", False),
        (("https://feeds.example.org/path",), "feeds.example.org", True),
    ],
)
def test_allow_list_matches_hosts_exactly(
    entries: tuple[str, ...], host: str, allowed: bool
) -> None:
    assert host_allowed(host, entries) is allowed


def test_a_refusal_never_echoes_a_long_key() -> None:
    key = "k" * 200_000
    with pytest.raises(RequestError) as refused:
        parse(release_body(packages_versions={key: "1.0"}))
    assert len(refused.value.message) < 300
    assert "k" * 63 + "…" in refused.value.message

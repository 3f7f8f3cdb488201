"""Request identity: the model's limits, normalisation and the request hash."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from pydantic import ValidationError

from asu_ci.identity.hashing import SCHEME, canonical, is_request_hash, request_hash
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import NormalizedRequest, apply_package_changes

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
    a = NormalizedRequest.from_json(one.model_dump())
    b = NormalizedRequest.from_json(two.model_dump())
    assert a.packages == b.packages == ("a", "b")
    assert request_hash(a) == request_hash(b)


CHANGES = {
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
    again = NormalizedRequest.from_json(json.loads(json.dumps(rich.to_json())))
    assert request_hash(again) == request_hash(rich)
    assert again.client == "ofs/4.1"


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

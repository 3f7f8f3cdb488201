"""Upgrades across releases: the shipped release knowledge and how requests use it."""

from __future__ import annotations

from importlib import resources

import yaml

from asu_ci import knowledge
from asu_ci.config import Branch, PackageChange
from asu_ci.identity.validate import apply_package_changes
from asu_ci.upstream.metadata import Versions, resolve_branches

ASU_OR_OPENWRT = ("https://github.com/openwrt/asu/", "https://github.com/openwrt/openwrt/")


def _changes(name: str, **fields: object) -> list[dict[str, object]]:
    branch = Branch.model_validate({"name": name, **fields})
    done = knowledge.complete_branch(branch)
    return [c.model_dump() for c in done["package_changes"]]


def _carry(
    packages: list[str], branch: str, version: str, target: str = "ath79/generic",
    profile: str = "tplink_archer-c7-v5", revision: int | None = None,
    offered: frozenset[str] | None = None,
) -> tuple[list[str], list[dict[str, object]]]:  # fmt: skip
    return apply_package_changes(
        packages, _changes(branch), revision, version=version, target=target,
        profile=profile, offered=offered,
    )  # fmt: skip


def test_every_entry_names_a_public_source() -> None:
    doc = yaml.safe_load(resources.files("asu_ci").joinpath("data", "releases.yaml").read_text())
    entries = doc["branches"] + doc["package_changes"] + doc["rules"]
    assert len(entries) > 30
    for entry in entries:
        assert str(entry["ref"]).startswith(ASU_OR_OPENWRT), entry
    assert {b["name"]: b["branch_off_rev"] for b in doc["branches"]} == {
        "21.02": 15812, "22.03": 19160, "23.05": 23069, "24.10": 27990, "25.12": 32295,
    }  # fmt: skip


def test_a_2305_device_list_is_carried_to_2410() -> None:
    device = [
        "base-files", "auc", "luci-app-opkg", "libustream-wolfssl", "px5g-wolfssl",
        "wpad-basic-wolfssl", "luci-i18n-opkg-de", "luci-i18n-base-en", "opkg",
    ]  # fmt: skip
    words, applied = _carry(device, "24.10", "24.10.0", revision=28000)
    assert set(words) == {
        "base-files", "owut", "luci-app-package-manager", "libustream-mbedtls", "px5g-mbedtls",
        "wpad-basic-mbedtls", "luci-i18n-package-manager-de", "opkg",
        # added whatever the request says (mandatory since r20282 and r25984)
        "kmod-nft-nat6", "luci-app-diag-core",
    }  # fmt: skip
    renames = {(a["source"], a["target"]) for a in applied if "revision" in a}
    assert ("auc", "owut") in renames and ("luci-app-opkg", "luci-app-package-manager") in renames
    assert ("opkg", "apk-mbedtls") not in renames  # r28056 is after 24.10's branch-off
    rules = {(a["source"], a["target"]) for a in applied if "rule" in a}
    assert rules == {
        ("luci-i18n-opkg-de", "luci-i18n-package-manager-de"),
        ("luci-i18n-base-en", None),
    }


def test_a_2410_list_is_carried_to_2512() -> None:
    words, applied = _carry(["opkg", "luci-app-opkg", "luci"], "25.12", "25.12.0", revision=32400)
    assert "apk-mbedtls" in words and "luci-app-package-manager" in words
    assert "opkg" not in words and "luci-app-opkg" not in words
    assert {"source": "opkg", "target": "apk-mbedtls", "revision": 28056} in applied


def test_the_target_revision_decides_which_changes_apply() -> None:
    # a snapshot branch publishes every change; the request's revision picks them
    snapshot = _changes("SNAPSHOT", snapshot=True)
    assert len(snapshot) == len(knowledge.load().changes)
    words, _ = apply_package_changes(["auc", "opkg"], snapshot, 27000, version="SNAPSHOT")
    assert "owut" in words and "opkg" in words


def test_mandatory_entries_apply_whatever_the_request_says() -> None:
    words, applied = _carry(["-kmod-nft-nat6", "luci"], "23.05", "23.05.4")
    assert "kmod-nft-nat6" in words and "-kmod-nft-nat6" not in words
    assert {"source": "kmod-nft-nat6", "target": None, "revision": 20282,
            "mandatory": True} in applied  # fmt: skip
    # a release that does not offer the package for the target gets nothing added
    words, applied = _carry(["luci"], "23.05", "23.05.4", offered=frozenset({"luci"}))
    assert words == ["luci"] and applied == []
    # an operator's mandatory removal (only a target) takes the package out
    removal = [{"target": "odhcpd", "revision": 1, "mandatory": True}]
    offered = frozenset({"odhcpd", "luci"})
    words, applied = apply_package_changes(["odhcpd", "luci"], removal, None, offered=offered)
    assert words == ["luci", "-odhcpd"] and applied[0]["target"] == "odhcpd"
    # a non-mandatory addition is for clients to offer, not for the server to force
    words, _ = apply_package_changes(["luci"], [{"source": "extra", "revision": 1}], None)
    assert words == ["luci"]


def test_a_rename_to_a_name_the_release_does_not_offer_is_not_made() -> None:
    offered = frozenset({"auc", "luci"})
    words, applied = _carry(["auc"], "24.10", "24.10.0", offered=offered)
    assert words == ["auc"] and applied == []


def test_device_rules_apply_to_named_targets_and_profiles() -> None:
    words, applied = _carry(["luci"], "23.05", "23.05.4", profile="netgear_wndr3800")
    assert "kmod-switch-rtl8366s" in words
    assert any(a.get("target") == "kmod-switch-rtl8366s" and "rule" in a for a in applied)
    words, _ = _carry(["luci"], "23.05", "23.05.4", profile="tplink_archer-c7-v5")
    assert "kmod-switch-rtl8366s" not in words
    words, _ = _carry(["luci"], "25.12", "25.12.0", target="ath79/mikrotik", profile="x")
    assert "kmod-ag71xx-legacy" in words
    words, _ = _carry(["luci"], "24.10", "24.10.0", target="ath79/mikrotik", profile="x")
    assert "kmod-ag71xx-legacy" not in words
    words, _ = _carry(["kmod-nf-conntrack6", "luci"], "SNAPSHOT", "SNAPSHOT")
    assert "kmod-nf-conntrack6" not in words


def test_the_i18n_rule_holds_from_2410_on_snapshots_included() -> None:
    for branch, version in [("24.10", "24.10.1"), ("25.12", "25.12.0"), ("SNAPSHOT", "SNAPSHOT")]:
        words, _ = _carry(["luci-i18n-opkg-fr"], branch, version)
        assert "luci-i18n-package-manager-fr" in words, version
    words, _ = _carry(["luci-i18n-opkg-fr"], "23.05", "23.05.4")
    assert "luci-i18n-opkg-fr" in words


def test_branches_publish_branch_off_rev_and_changes_up_to_it() -> None:
    versions = Versions(
        versions_list=("25.12.0", "24.10.2", "23.05.4", "19.07.10"),
        stable_version="24.10.2", oldstable_version="23.05.4", upcoming_version="25.12.0",
    )  # fmt: skip
    own = PackageChange(source="luci-app-old", target="luci-app-new", revision=30000)
    configured = (
        Branch(name="24.10", package_changes=(own,)),
        Branch(name="23.05", branch_off_rev=23100),
        Branch(name="SNAPSHOT", snapshot=True),
        Branch(name="19.07"),
    )
    by_name = {b.name: b for b in resolve_branches(configured, versions)}
    assert by_name["24.10"].branch_off_rev == 27990
    revs = [c.revision for c in by_name["24.10"].package_changes]
    assert revs == [18611, 20282, 21994, 21994, 21994, 25984, 26792, 27897, 30000]
    assert by_name["24.10"].package_changes[-1] == own  # the operator's entry is added
    assert by_name["23.05"].branch_off_rev == 23100  # the operator's revision wins
    assert max(c.revision for c in by_name["23.05"].package_changes) == 21994
    assert by_name["SNAPSHOT"].branch_off_rev == 0
    assert len(by_name["SNAPSHOT"].package_changes) == 9
    assert by_name["19.07"].package_changes == ()  # older than every change
    derived = {b.name: b for b in resolve_branches(None, versions)}
    assert derived["25.12"].branch_off_rev == 32295
    assert [c.target for c in derived["25.12"].package_changes][-1] == "apk-mbedtls"

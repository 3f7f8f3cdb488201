"""What asu-ci knows about OpenWrt releases without asking the download server.

Shipped as package data and read on first use (never at import):

- ``data/releases.yaml``: each release branch's branch-off revision, the
  package changes with the revision each took effect (published per branch in
  ``branches.json`` and applied to requests), and the per-release rules that
  are not renames (translations renamed with the package manager, kernel
  modules and firmware a release needs on named targets and profiles). Every
  entry names its source.
- ``data/keys/usign/<key id>``: OpenWrt's public usign keys that sign the
  ``sha256sums`` of releases and snapshots; ``data/keys/sources.yaml`` says
  where each was published.

The configuration adds to this: a branch's ``branch_off_rev`` and
``package_changes``, and ``signatures.trusted_keys``.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from asu_ci.build import usign
from asu_ci.config import Branch, PackageChange, Settings

SNAPSHOT = "SNAPSHOT"
_SERIES = re.compile(r"^([0-9]+)\.([0-9]+)")


@dataclass(frozen=True)
class Rule:
    """A per-release change to a request's packages that is not a rename."""

    ref: str
    since: str | None = None
    branches: tuple[str, ...] = ()
    target: str | None = None
    profiles: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    rename_prefix: tuple[tuple[str, str], ...] = ()
    remove_matching: tuple[str, ...] = ()

    def matches(self, version: str, target: str, profile: str) -> bool:
        if self.target is not None and self.target != target:
            return False
        if self.profiles and profile not in self.profiles:
            return False
        if self.branches:
            return branch_of(version) in self.branches
        if self.since is not None:
            have, since = series(version), series(self.since)
            return have is not None and since is not None and have >= since
        return True


@dataclass(frozen=True)
class Knowledge:
    """The content of ``data/releases.yaml``."""

    branch_off: Mapping[str, int]
    changes: tuple[PackageChange, ...]
    rules: tuple[Rule, ...]
    #: (version, target, profile) -> the rules that match: the request path asks often
    _matched: dict[tuple[str, str, str], tuple[Rule, ...]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def changes_for(self, branch: Branch) -> tuple[PackageChange, ...]:
        """The shipped changes a branch publishes: up to its branch-off revision; all of
        them for a snapshot branch or a branch newer than every one known here."""
        rev = branch.branch_off_rev or self.branch_off.get(branch.name)
        if branch.snapshot or (rev is None and _newer_than_known(branch.name, self.branch_off)):
            return self.changes
        if not rev:
            return ()
        return tuple(c for c in self.changes if c.revision <= rev)

    def rules_for(self, version: str, target: str, profile: str) -> list[Rule]:
        key = (version, target, profile)
        found = self._matched.get(key)
        if found is None:
            if len(self._matched) > 4096:
                self._matched.clear()
            found = self._matched[key] = tuple(
                r for r in self.rules if r.matches(version, target, profile)
            )
        return list(found)


def series(version: str) -> tuple[int, int] | None:
    """``(24, 10)`` for 24.10.x and 24.10-SNAPSHOT; ``SNAPSHOT`` sorts after every release."""
    if version == SNAPSHOT:
        return (1 << 30, 0)
    match = _SERIES.match(version)
    return (int(match.group(1)), int(match.group(2))) if match else None


def branch_of(version: str) -> str:
    """The branch name of a version: ``24.10`` for 24.10.1, ``SNAPSHOT`` for snapshots."""
    if version == SNAPSHOT:
        return SNAPSHOT
    match = _SERIES.match(version)
    return f"{match.group(1)}.{match.group(2)}" if match else version


def _newer_than_known(name: str, known: Mapping[str, int]) -> bool:
    have = series(name)
    newest = max((s for s in map(series, known) if s is not None), default=None)
    return have is not None and newest is not None and have > newest


def _text(name: str) -> str:
    return resources.files("asu_ci").joinpath("data", name).read_text(encoding="utf-8")


@functools.cache
def load() -> Knowledge:
    """The shipped release knowledge (read once per process; it is immutable)."""
    doc = yaml.safe_load(_text("releases.yaml"))
    branch_off = {str(b["name"]): int(b["branch_off_rev"]) for b in doc["branches"]}
    changes = tuple(
        PackageChange.model_validate({k: v for k, v in c.items() if k != "ref"})
        for c in doc["package_changes"]
    )
    rules = tuple(_rule(r) for r in doc["rules"])
    return Knowledge(branch_off=branch_off, changes=changes, rules=rules)


def _rule(raw: Mapping[str, Any]) -> Rule:
    return Rule(
        ref=str(raw["ref"]),
        since=str(raw["since"]) if "since" in raw else None,
        branches=tuple(str(b) for b in raw.get("branches", ())),
        target=str(raw["target"]) if "target" in raw else None,
        profiles=tuple(str(p) for p in raw.get("profiles", ())),
        add=tuple(str(p) for p in raw.get("add", ())),
        remove=tuple(str(p) for p in raw.get("remove", ())),
        rename_prefix=tuple((str(k), str(v)) for k, v in raw.get("rename_prefix", {}).items()),
        remove_matching=tuple(str(p) for p in raw.get("remove_matching", ())),
    )


def complete_branch(branch: Branch) -> dict[str, Any]:
    """The ``branch_off_rev`` and ``package_changes`` a branch publishes: the shipped
    knowledge, then what the configuration sets (its revision wins, its changes add)."""
    known = load()
    rev = branch.branch_off_rev or known.branch_off.get(branch.name, 0)
    shipped = known.changes_for(branch)
    own = [c for c in branch.package_changes if c not in shipped]
    return {"branch_off_rev": rev, "package_changes": (*shipped, *own)}


# --- signing keys ----------------------------------------------------------------------


@functools.cache
def shipped_keys() -> Mapping[str, str]:
    """``{key id: key text}`` of OpenWrt's usign keys shipped in ``data/keys/usign``."""
    folder = resources.files("asu_ci").joinpath("data", "keys", "usign")
    texts = [item.read_text(encoding="utf-8") for item in folder.iterdir() if item.is_file()]
    return usign.keyring(sorted(texts))


def key_sources() -> list[dict[str, str]]:
    """``data/keys/sources.yaml``: each shipped key's id, what it signs, where published."""
    doc = yaml.safe_load(_text("keys/sources.yaml"))
    return [{k: str(v) for k, v in entry.items()} for entry in doc["keys"]]


def trusted_keys(settings: Settings, branch_key: str | None) -> dict[str, str]:
    """The keys a branch's ``sha256sums`` may be signed by: its configured ``signing_key``
    alone when it has one; otherwise the shipped keys and ``signatures.trusted_keys``."""
    if branch_key:
        return usign.keyring([branch_key])
    return {**shipped_keys(), **usign.keyring(settings.signatures.trusted_keys)}


def unsigned_warnings(settings: Settings) -> list[str]:
    """What to tell the operator at start about checks the configuration turns off."""
    if not settings.signatures.allow_unsigned:
        return []
    return [
        "signatures.allow_unsigned is on: an ImageBuilder listed in a sha256sums without "
        "sha256sums.sig is built from unchecked; only a mirror you control should need this"
    ]


# --- applying changes to a request -------------------------------------------------------


def apply_rules(
    words: list[str],
    rules: Sequence[Rule],
    offered: Iterable[str] | None,
) -> list[dict[str, Any]]:
    """Apply ``rules`` to ``words`` in place; the records of what changed, for build.json."""
    have = None if offered is None else set(offered)
    applied: list[dict[str, Any]] = []
    for rule in rules:
        for i, word in enumerate(words):
            for old, new in rule.rename_prefix:
                if word.startswith(old) and len(word) > len(old):
                    renamed = new + word[len(old) :]
                    if have is None or renamed in have:
                        words[i] = renamed
                        applied.append({"source": word, "target": renamed, "rule": rule.ref})
        for word in list(words):
            if any(fnmatch.fnmatchcase(word, p) for p in rule.remove_matching) or (
                word in rule.remove
            ):
                words.remove(word)
                applied.append({"source": word, "target": None, "rule": rule.ref})
        for name in rule.add:
            if name in words or (have is not None and name not in have):
                continue
            if f"-{name}" in words:
                words.remove(f"-{name}")
            words.append(name)
            applied.append({"source": None, "target": name, "rule": rule.ref})
    return applied

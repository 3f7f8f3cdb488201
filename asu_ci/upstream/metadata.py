"""The download server's layout: versions, branches, targets, profiles and package indexes.

Where each file lives and what makes it valid. Names read from upstream
(versions, targets, architectures) become paths in the static tree, so only
:data:`SAFE_NAME` ones are used; the others are logged and skipped.

Served without configuration (as upstream ASU does): ``SNAPSHOT`` and the
branches of ``.versions.json``'s ``upcoming_version``, ``stable_version`` and
``oldstable_version``, each with every version of it in ``versions_list``
(and the upcoming version itself) and its release-branch snapshot
``<branch>-SNAPSHOT`` (``releases/24.10-SNAPSHOT``, a member of branch 24.10
that moves like ``SNAPSHOT``). ``index.extra_branches`` adds older branches
(with their snapshots); a ``branches`` list in the config replaces the choice
entirely (a branch snapshot is then served only when listed in ``versions``).

A release lists its targets in ``.targets.json`` (target → package
architecture). Trees older than 21.02 have none; their targets come from
``.overview.json`` (every profile with its target) and each target's
``profiles.json`` (``arch_packages``).

From 23.05.6, 24.10 and in snapshots, kernel modules live in a feed of their
own, ``targets/<t>/<s>/kmods/<version>-<release>-<vermagic>/``, named by the
``linux_kernel`` entry of the target's ``profiles.json``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from asu_ci import knowledge
from asu_ci.config import Branch
from asu_ci.errors import ConfigError, UpstreamError
from asu_ci.upstream.source import Fetched, Upstream, load_json

log = logging.getLogger(__name__)

#: What a name read from upstream must look like to become part of a path.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
SNAPSHOT_VERSION = "SNAPSHOT"
#: ``24.10-SNAPSHOT``: the builds of a release branch between its point releases.
BRANCH_SNAPSHOT_SUFFIX = "-SNAPSHOT"
VERSIONS_FILE = ".versions.json"
#: Feeds whose indexes make up ``packages/<arch>-index.json``.
FEEDS = ("base", "luci", "packages", "routing", "telephony")
#: Index file names, tried in this order (opkg gzip, opkg plain, apk).
INDEX_NAMES = ("Packages.gz", "Packages", "index.json")

_KERNEL_FIELDS = ("version", "release", "vermagic")
_BRANCH_OF = re.compile(r"^(\d+\.\d+)(?:[.-]|$)")
_VERSION_KEY = re.compile(r"^(\d+(?:\.\d+)*)(?:-rc(\d+))?")


@dataclass(frozen=True)
class Versions:
    """The upstream ``.versions.json``."""

    versions_list: tuple[str, ...]
    stable_version: str = ""
    oldstable_version: str = ""
    upcoming_version: str = ""
    #: sha256 of the file as read: a changed one may list new releases.
    digest: str = ""


@dataclass(frozen=True)
class Release:
    """One version to serve: its branch and ``path`` with ``{version}`` filled in.

    Equal (and hashed) by version and path, which are unique among releases.
    """

    branch: Branch = field(compare=False)
    version: str
    path: str


def is_safe_name(value: object) -> bool:
    """Whether ``value`` is a string that may become one segment of a path."""
    return isinstance(value, str) and SAFE_NAME.fullmatch(value) is not None


def is_moving(version: str) -> bool:
    """Whether ``version`` is rebuilt in place upstream: ``SNAPSHOT`` or ``24.10-SNAPSHOT``."""
    return version == SNAPSHOT_VERSION or (
        version.endswith(BRANCH_SNAPSHOT_SUFFIX) and _branch_of(version) is not None
    )


def branch_snapshot(branch: str) -> str:
    """The version name of a release branch's snapshot: ``24.10`` → ``24.10-SNAPSHOT``."""
    return f"{branch}{BRANCH_SNAPSHOT_SUFFIX}"


def version_key(version: str) -> tuple[int, tuple[int, ...], int, str]:
    """Sort key, newest last: SNAPSHOT after every release, 24.10.0 after 24.10.0-rc7.

    A branch snapshot (``24.10-SNAPSHOT``) sorts before every release of its
    branch, as upstream ASU orders them: newest first it is listed last in its
    branch, so a client taking a branch's first version gets a release.
    """
    if version == SNAPSHOT_VERSION:
        return (1, (), 0, version)
    match = _VERSION_KEY.match(version)
    if match is None:
        return (0, (), 0, version)
    numbers = tuple(int(n) for n in match.group(1).split("."))
    rc = int(match.group(2)) if match.group(2) else 1 << 30
    return (0, numbers, rc, version)


def newest_first(versions: Iterable[str]) -> list[str]:
    return sorted(set(versions), key=version_key, reverse=True)


def read_versions(upstream: Upstream) -> Versions | None:
    """The upstream ``.versions.json``, or None when there is none."""
    fetched = upstream.get(VERSIONS_FILE)
    if fetched is None:
        return None
    doc = load_json(fetched.data, upstream.url(VERSIONS_FILE))
    versions = doc.get("versions_list") if isinstance(doc, dict) else None
    if not isinstance(versions, list) or not all(isinstance(v, str) for v in versions):
        raise UpstreamError(
            f"{upstream.url(VERSIONS_FILE)}: has no versions_list of strings; point "
            "--upstream at a download server (or mirror) in the OpenWrt layout"
        )
    return Versions(
        versions_list=tuple(versions),
        stable_version=str(doc.get("stable_version") or ""),
        oldstable_version=str(doc.get("oldstable_version") or ""),
        upcoming_version=str(doc.get("upcoming_version") or ""),
        digest=fetched.digest,
    )


def resolve_branches(
    configured: Sequence[Branch] | None,
    versions: Versions | None,
    extra: Collection[str] = (),
) -> list[Branch]:
    """The branches to serve, each with its versions (newest first), paths and git branch.

    Without configured branches: ``SNAPSHOT`` (from ``snapshots``), then the
    branches of the upcoming, stable and oldstable versions and those named
    in ``extra``, newest first, each with every version of it in
    ``versions_list`` and its snapshot ``<branch>-SNAPSHOT``. A configured
    branch without ``versions`` takes every listed version of its name (no
    branch snapshot: list ``24.10-SNAPSHOT`` in ``versions`` to serve it); a
    snapshot branch serves ``SNAPSHOT`` from ``snapshots``.
    """
    if configured is None:
        return _default_branches(versions, extra)
    names = [branch.name for branch in configured]
    if len(set(names)) != len(names):
        raise ConfigError(f"branches: names must be unique, got {', '.join(names)}")
    branches = []
    for branch in configured:
        if branch.versions is not None:
            chosen = list(branch.versions)
        elif branch.snapshot:
            chosen = [SNAPSHOT_VERSION]
        else:
            chosen = [v for v in _listed(versions) if _branch_of(v) == branch.name]
        for version in chosen:
            if not is_safe_name(version):
                raise ConfigError(
                    f"branches: {branch.name}: version {version!r} is not a plain name"
                )
        branches.append(_complete(branch, chosen))
    return branches


def _default_branches(versions: Versions | None, extra: Collection[str]) -> list[Branch]:
    """SNAPSHOT, then the upcoming, stable, oldstable and ``extra`` branches, newest first,
    each with its branch snapshot (skipped at render time when upstream has none)."""
    listed = _listed(versions)
    assert versions is not None
    named = [versions.upcoming_version, versions.stable_version, versions.oldstable_version]
    wanted = {b for b in (_branch_of(v) for v in named if v) if b is not None}
    if not wanted:
        newest = [b for b in (_branch_of(v) for v in newest_first(listed)) if b]
        wanted = set(newest[:1])
        log.warning(
            "%s names no upcoming, stable or oldstable version; serving the newest branch %s",
            VERSIONS_FILE,
            ", ".join(wanted) or "(none)",
        )
    wanted.update(extra)
    candidates = [*listed, versions.upcoming_version] if versions.upcoming_version else listed
    derived = [b for b in _derive(candidates) if b.name in wanted]
    for name in sorted(wanted - {b.name for b in derived}):
        log.warning("%s lists no version of branch %s; not serving it", VERSIONS_FILE, name)
    snapshot = Branch(name=SNAPSHOT_VERSION, snapshot=True, versions=[SNAPSHOT_VERSION])
    completed = [_complete(snapshot, [SNAPSHOT_VERSION])]
    for branch in derived:
        completed.append(
            _complete(branch, [*(branch.versions or []), branch_snapshot(branch.name)])
        )
    return completed


def releases(branches: Iterable[Branch]) -> list[Release]:
    """Every version of the enabled branches, with its path; paths must not collide."""
    found: dict[str, Release] = {}
    for branch in branches:
        if not branch.enabled:
            continue
        for version in branch.versions or []:
            path = branch.path.replace("{version}", version)
            if path in found:
                raise ConfigError(
                    f"branches: {branch.name} {version} and {found[path].branch.name} "
                    f"{found[path].version} both live in {path!r}; give each version its own path"
                )
            found[path] = Release(branch, version, path)
    return list(found.values())


def read_targets(upstream: Upstream, path: str) -> dict[str, str] | None:
    """``<path>/.targets.json`` as ``{"t/s": arch}`` (safe names only), or None when missing."""
    relpath = f"{path}/.targets.json"
    fetched = upstream.get(relpath)
    if fetched is None:
        return None
    doc = load_json(fetched.data, upstream.url(relpath))
    if not isinstance(doc, dict):
        raise UpstreamError(f"{upstream.url(relpath)}: not a {{target: arch}} mapping")
    targets = {}
    for target, arch in sorted(doc.items()):
        parts = target.split("/")
        if len(parts) == 2 and all(is_safe_name(p) for p in parts) and is_safe_name(arch):
            targets[target] = arch
        else:
            log.warning("%s: skipping target %r (arch %r): not a plain name", relpath, target, arch)
    return targets


def targets_from_overview(upstream: Upstream, path: str) -> dict[str, str] | None:
    """The targets of a tree without ``.targets.json`` (19.07 and older), or None.

    ``.overview.json`` names each profile's target; the architecture of a
    target is ``arch_packages`` in its ``profiles.json``. A target whose
    architecture cannot be read is logged and skipped.
    """
    relpath = f"{path}/.overview.json"
    fetched = upstream.get(relpath)
    if fetched is None:
        return None
    doc = load_json(fetched.data, upstream.url(relpath))
    profiles = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(profiles, list):
        raise UpstreamError(f"{upstream.url(relpath)}: has no list of profiles")
    names = {p.get("target") for p in profiles if isinstance(p, dict)}
    targets = {}
    for target in sorted(t for t in names if isinstance(t, str)):
        parts = target.split("/")
        if len(parts) != 2 or not all(is_safe_name(p) for p in parts):
            log.warning("%s: skipping target %r: not a plain name", relpath, target)
            continue
        where = profiles_relpath(path, target)
        found = upstream.get(where)
        arch = None
        if found is not None:
            arch = parse_profiles(found.data, upstream.url(where)).get("arch_packages")
        if is_safe_name(arch):
            targets[target] = str(arch)
        else:
            log.warning(
                "%s: skipping target %s: no arch_packages in its profiles.json", path, target
            )
    return targets


def kmods_folder(path: str, target: str, profiles: dict[str, Any]) -> str | None:
    """``<path>/targets/<t>/<s>/kmods/<version>-<release>-<vermagic>`` or None.

    None when ``profiles.json`` has no ``linux_kernel`` (23.05.5 and older);
    a ``linux_kernel`` whose parts are not plain names is an upstream error.
    """
    kernel = profiles.get("linux_kernel")
    if kernel is None:
        return None
    parts = [kernel.get(k) if isinstance(kernel, dict) else None for k in _KERNEL_FIELDS]
    name = "-".join(str(p) for p in parts)
    if not all(isinstance(p, str | int) for p in parts) or not is_safe_name(name):
        raise UpstreamError(
            f"{profiles_relpath(path, target)}: linux_kernel is not "
            "{version, release, vermagic} of plain names"
        )
    return f"{path}/targets/{target}/kmods/{name}"


def profiles_relpath(path: str, target: str) -> str:
    return f"{path}/targets/{target}/profiles.json"


def parse_profiles(data: bytes, where: str) -> dict[str, Any]:
    """A ``profiles.json``: a mapping whose ``profiles`` maps ids to mappings."""
    doc = load_json(data, where)
    profiles = doc.get("profiles") if isinstance(doc, dict) else None
    if (
        not isinstance(doc, dict)
        or not isinstance(profiles, dict)
        or not all(isinstance(p, dict) for p in profiles.values())
    ):
        raise UpstreamError(f"{where}: not a profiles.json ({{profiles: {{id: {{…}}}}}})")
    return doc


def target_index_folder(path: str, target: str) -> str:
    return f"{path}/targets/{target}/packages"


def feed_folder(path: str, arch: str, feed: str) -> str:
    return f"{path}/packages/{arch}/{feed}"


def find_index(
    upstream: Upstream,
    folder: str,
    prefer: Collection[str] = (),
    candidates: Collection[str] = INDEX_NAMES,
) -> tuple[str, Fetched] | None:
    """The first index file of ``folder`` that exists: ``(relpath, fetched)``.

    Names in ``prefer`` (the files found last time) are tried first, so a warm
    run asks once per folder; ``candidates`` narrows the names tried (a
    release publishes one format, so once it is known the others need no asking).
    """
    names = [f"{folder}/{name}" for name in INDEX_NAMES if name in candidates]
    names.sort(key=lambda relpath: relpath not in prefer)
    for relpath in names:
        fetched = upstream.get(relpath)
        if fetched is not None:
            return relpath, fetched
    return None


def _listed(versions: Versions | None) -> tuple[str, ...]:
    if versions is None:
        raise UpstreamError(
            f"{VERSIONS_FILE} is missing upstream, and the versions to serve come from it; "
            "point --upstream at a download server or list versions under branches in the config"
        )
    return versions.versions_list


def _derive(listed: Iterable[str]) -> list[Branch]:
    by_branch: dict[str, list[str]] = {}
    for version in listed:
        name = _branch_of(version)
        if name is None or not is_safe_name(version):
            log.warning("%s: skipping version %r: not a release number", VERSIONS_FILE, version)
            continue
        by_branch.setdefault(name, []).append(version)
    names = sorted(by_branch, key=version_key, reverse=True)
    return [Branch(name=name, versions=by_branch[name]) for name in names]


def _complete(branch: Branch, versions: list[str]) -> Branch:
    """Fill in versions (newest first), snapshot paths and the git branch."""
    update: dict[str, Any] = {"versions": newest_first(versions)}
    if branch.snapshot and "path" not in branch.model_fields_set:
        update["path"] = "snapshots"
    if branch.snapshot and "path_packages" not in branch.model_fields_set:
        update["path_packages"] = "snapshots/packages"
    if branch.git_branch is None:
        update["git_branch"] = "main" if branch.snapshot else f"openwrt-{branch.name}"
    update.update(knowledge.complete_branch(branch))
    return branch.model_copy(update=update)


def _branch_of(version: str) -> str | None:
    match = _BRANCH_OF.match(version)
    return match.group(1) if match else None

"""Render the static index from upstream: ``json/v1/…``, the download-server files, the site.

The output comes in groups, each made from its own inputs:

- global: ``json/v1/overview.json``, ``branches.json``, ``latest.json`` and ``.versions.json``;
- per version: ``<path>/.overview.json`` and ``<path>/.targets.json``;
- per version and target: ``json/v1/<path>/targets/<t>/<s>/index.json`` and
  ``names.json`` beside it, one device file per profile id and board name, and
  ``<path>/targets/<t>/<s>/profiles.json``;
- per version and architecture: ``json/v1/<path>/packages/<arch>-index.json`` and
  ``<arch>-names.json`` beside it.

Package names. ``index.json`` ("packages") and ``<arch>-index.json`` list real
package names with their versions, the ABI suffix removed, as upstream ASU
does; a target's ``index.json`` holds its ``packages/`` feed and, where
``profiles.json`` names a ``linux_kernel``, its kernel-module feed
``kmods/<version>-<release>-<vermagic>/``. Other names a request may use live
in the ``names.json`` sidecars: ``{"abi": {full name: real name}, "provides":
{provided name: [real names of its providers]}}`` (in 23.05, ``nftables`` is
provided by ``nftables-json`` and ``nftables-nojson``). Validation accepts all
three kinds (:meth:`asu_ci.index.catalog.Catalog.package_names`); clients that
only read the index never see a name without a version of its own.

A re-render may name the versions to read again (``only``): a published
point release does not change, so the background re-render of ``asu-ci serve``
asks for ``.versions.json`` and the snapshot trees only (``SNAPSHOT``,
``24.10-SNAPSHOT``), and keeps the groups of the other releases as they are.
When ``.versions.json`` changed, every release is read again (conditionally:
unchanged files cost a 304 each).

A group's fingerprint hashes its inputs (upstream digests and the settings it
uses). The state file in the data folder keeps each group's fingerprint and
files; a group whose fingerprint is unchanged and whose files all exist is
skipped without parsing anything. Files no group produces any more are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asu_ci import __version__
from asu_ci.config import Branch, Settings
from asu_ci.errors import UpstreamError
from asu_ci.fsutil import FileLock, dumps, read_json, write_bytes, write_json
from asu_ci.site import render_site
from asu_ci.upstream.metadata import (
    FEEDS,
    INDEX_NAMES,
    VERSIONS_FILE,
    Release,
    Versions,
    feed_folder,
    find_index,
    is_moving,
    is_safe_name,
    kmods_folder,
    newest_first,
    parse_profiles,
    profiles_relpath,
    read_targets,
    read_versions,
    releases,
    resolve_branches,
    target_index_folder,
    targets_from_overview,
    version_key,
)
from asu_ci.upstream.packages import PackageIndex, parse_index
from asu_ci.upstream.source import Fetched, Upstream, check_relpath

log = logging.getLogger(__name__)

#: Bump when the rendered files change for the same inputs.
FORMAT = 3
STATE_FILE = "render-state.json"
#: Fetching is I/O bound: a few threads keep the connection busy on two cores.
POOL_SIZE = 8

ProgressFn = Callable[[int, int, str], None]
#: The sidecar beside each package index naming ABI-suffixed and provided names.
NAMES = "names"


@dataclass(frozen=True)
class RenderSummary:
    versions: int
    targets: int
    profiles: int
    packages: int
    files_written: int
    files_unchanged: int
    seconds: float
    requests: int
    bytes_downloaded: int

    def line(self) -> str:
        """The one line ``asu-ci render`` ends with."""
        return (
            f"rendered {_plural(self.versions, 'version')}, {_plural(self.targets, 'target')}, "
            f"{_plural(self.profiles, 'profile')}, {_plural(self.packages, 'package')} "
            f"in {self.seconds:.1f} s ({self.files_written} files written, "
            f"{self.files_unchanged} unchanged; {_plural(self.requests, 'request')}, "
            f"{self.bytes_downloaded / 1e6:.1f} MB downloaded)"
        )


@dataclass(frozen=True)
class _Output:
    """What a group produces: files (relative to the public tree) and what they hold."""

    files: dict[str, bytes]
    profiles: int = 0
    packages: int = 0


@dataclass(frozen=True)
class _Done:
    key: str
    record: dict[str, Any]
    written: int
    unchanged: int


def render_tree(
    settings: Settings,
    *,
    upstream: Upstream | None = None,
    on_progress: ProgressFn | None = None,
    only: Collection[str] | None = None,
) -> RenderSummary:
    """Render the index of every served version into ``settings.public_dir``.

    ``on_progress(done, total, label)`` is called once per target and per
    architecture. Without ``upstream``, one is opened on ``settings.upstream``
    with its cache in ``<data>/cache/upstream``.

    ``only`` names the versions to read from upstream again (e.g.
    ``{"SNAPSHOT"}``, or the one release whose checksums moved); every other
    release keeps what the last render made of it, without a request. A
    release never rendered before, one whose files went missing, and every
    release when ``.versions.json`` changed, are read whatever ``only`` says.
    None (the default) reads every release (conditionally).
    """
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if upstream is None:
            cache = settings.data_dir / "cache" / "upstream"
            upstream = stack.enter_context(
                Upstream(settings.upstream, cache, bound=settings.upstream_timeout_seconds)
            )
        requests, downloaded = upstream.requests, upstream.bytes_downloaded
        # One render at a time per data folder: a second one waits, then finds little to do.
        stack.enter_context(FileLock(settings.data_dir / "render.lock"))
        renderer = _Renderer(settings, upstream, only)
        done = renderer.run(on_progress)
        site_written, site_unchanged = render_site(settings)
        target_records = [d.record for d in done if d.key.startswith("target:")]
        return RenderSummary(
            versions=sum(1 for d in done if d.key.startswith("version:")),
            targets=len(target_records),
            profiles=sum(r["profiles"] for r in target_records),
            packages=sum(d.record["packages"] for d in done),
            files_written=sum(d.written for d in done) + site_written,
            files_unchanged=sum(d.unchanged for d in done) + site_unchanged,
            seconds=time.monotonic() - started,
            requests=upstream.requests - requests,
            bytes_downloaded=upstream.bytes_downloaded - downloaded,
        )


class _Renderer:
    def __init__(
        self, settings: Settings, upstream: Upstream, only: Collection[str] | None = None
    ) -> None:
        self.settings = settings
        self.upstream = upstream
        self.only = None if only is None else frozenset(only)
        self.old_versions_digest = ""
        self.public = settings.public_dir
        self.state_path = settings.data_dir / STATE_FILE
        self.old: dict[str, dict[str, Any]] = {}
        #: Index file names each release path used last time (see _index_names).
        self._formats: dict[str, set[str]] = {}

    def run(self, on_progress: ProgressFn | None) -> list[_Done]:
        self.old = self._load_state()
        for key, record in self.old.items():
            path = key.split(":")[1:2]
            for source in record.get("sources", ()) if path else ():
                self._formats.setdefault(path[0], set()).add(source.rsplit("/", 1)[-1])
        versions = read_versions(self.upstream)
        branches = resolve_branches(
            self.settings.branches, versions, self.settings.index.extra_branches
        )
        done: list[_Done] = []
        kept: dict[Release, dict[str, str]] = {}
        wanted = []
        for release in releases(branches):
            carried = self._carry_over(release, versions)
            if carried is None:
                wanted.append(release)
            else:
                kept[release] = carried[0]
                done.extend(carried[1])
        with ThreadPoolExecutor(POOL_SIZE, thread_name_prefix="render") as pool:
            found = list(pool.map(self._targets_of, wanted))
            served: dict[Release, dict[str, str]] = {}
            for release, listed in zip(wanted, found, strict=True):
                if listed is not None:
                    served[release] = listed
            profiles: dict[Release, dict[str, Fetched | None]] = {r: {} for r in served}
            units: dict[Future[tuple[_Done, Fetched | None]], tuple[Release, str, str]] = {}
            for release, targets in served.items():
                for target, arch in targets.items():
                    future = pool.submit(self._target, release, target, arch)
                    units[future] = (release, target, f"{release.version} {target}")
                for arch in sorted(set(targets.values())):
                    future = pool.submit(self._arch, release, arch)
                    units[future] = (release, "", f"{release.version} {arch} packages")
            try:
                for count, future in enumerate(as_completed(units), 1):
                    result, fetched = future.result()
                    release, target, label = units[future]
                    if target:
                        profiles[release][target] = fetched
                    done.append(result)
                    if on_progress is not None:
                        on_progress(count, len(units), label)
            except BaseException:
                for future in units:
                    future.cancel()
                raise
        for release, targets in served.items():
            done.append(self._version(release, targets, profiles[release]))
        served.update(kept)
        done.append(self._global(branches, versions, served))
        self._finish(done, versions)
        return done

    def _targets_of(self, release: Release) -> dict[str, str] | None:
        """The release's targets: ``.targets.json``, else ``.overview.json``, else an error.

        Only the snapshots served by default (no ``branches`` configured) may be
        missing upstream: ``SNAPSHOT`` (a mirror of releases only) and the branch
        snapshots (``24.10-SNAPSHOT``; a mirror, or a branch whose builds stopped).
        That is logged and skipped.
        """
        listed = read_targets(self.upstream, release.path)
        if listed is None:
            listed = targets_from_overview(self.upstream, release.path)
            if listed is not None:
                log.info("%s: no .targets.json; targets read from .overview.json", release.path)
        if listed is not None:
            return listed
        if self.settings.branches is None and is_moving(release.version):
            log.warning(
                "%s: no .targets.json upstream; not serving %s",
                self.upstream.url(release.path),
                release.version,
            )
            return None
        raise UpstreamError(
            f"{release.version}: upstream has neither {release.path}/.targets.json nor "
            f"{release.path}/.overview.json, so its targets are unknown; point --upstream at "
            "a complete mirror or stop serving this version in the config"
        )

    def _carry_over(
        self, release: Release, versions: Versions | None
    ) -> tuple[dict[str, str], list[_Done]] | None:
        """The targets and groups of the last render of ``release``, when it need not be read.

        None when ``only`` does not spare it: no ``only``, the version is in it,
        ``.versions.json`` changed, or the last render's files are incomplete.
        """
        if self.only is None or release.version in self.only:
            return None
        if versions is None or versions.digest != self.old_versions_digest:
            return None
        path = release.path
        records = {key: record for key, record in self.old.items() if key.split(":")[1:2] == [path]}
        if f"version:{path}" not in records:
            return None
        if not all(self._all_present(record["files"]) for record in records.values()):
            return None
        try:
            targets = read_json(self.public / path / ".targets.json")
        except (OSError, ValueError):
            return None
        if not isinstance(targets, dict):
            return None
        groups = [_Done(key, rec, 0, len(rec["files"])) for key, rec in records.items()]
        return {str(t): str(a) for t, a in targets.items()}, groups

    # -- the groups ------------------------------------------------------------

    def _target(self, release: Release, target: str, arch: str) -> tuple[_Done, Fetched | None]:
        key = f"target:{release.path}:{target}"
        relpath = profiles_relpath(release.path, target)
        profiles = self.upstream.get(relpath)
        prefer = self._sources(key)
        names = self._index_names(release.path)
        index = find_index(self.upstream, target_index_folder(release.path, target), prefer, names)
        kmods = self._kmods_folder(key, release.path, target, profiles)
        kmods_index = find_index(self.upstream, kmods, prefer, names) if kmods else None
        if kmods and kmods_index is None:
            log.info("%s: profiles.json names this kernel-module feed; it has no index", kmods)
        inputs = {
            "path": release.path,
            "arch": arch,
            "profiles": profiles.digest if profiles else None,
            "index": [index[0], index[1].digest] if index else None,
            "kmods": [kmods_index[0], kmods_index[1].digest] if kmods_index else None,
        }
        json_dir = f"json/v1/{release.path}/targets/{target}"

        def produce() -> _Output:
            parsed = PackageIndex()
            for found in (index, kmods_index):
                if found is not None:
                    parsed = parsed.merged(self._parse_index(found))
            packages = parsed.packages
            files = {
                f"{json_dir}/index.json": dumps({"architecture": arch, "packages": packages}),
                f"{json_dir}/{NAMES}.json": dumps(parsed.sidecar()),
            }
            if profiles is None:
                log.warning("%s: missing upstream; no device files", relpath)
                return _Output(files, packages=len(packages))
            doc = parse_profiles(profiles.data, self.upstream.url(relpath))
            files[relpath] = profiles.data
            files.update(_device_files(doc, json_dir))
            return _Output(files, profiles=len(doc["profiles"]), packages=len(packages))

        sources = [found[0] for found in (index, kmods_index) if found is not None]
        meta = {"profiles": profiles.digest if profiles else None, "kmods": kmods}
        return self._group(key, inputs, produce, sources, meta), profiles

    def _kmods_folder(
        self, key: str, path: str, target: str, profiles: Fetched | None
    ) -> str | None:
        """The kernel-module feed named by ``profiles.json``; unparsed when it did not change."""
        if profiles is None:
            return None
        old = self.old.get(key, {}).get("meta")
        if isinstance(old, dict) and old.get("profiles") == profiles.digest:
            kmods = old.get("kmods")
            return kmods if isinstance(kmods, str) else None
        doc = parse_profiles(profiles.data, self.upstream.url(profiles_relpath(path, target)))
        try:
            return kmods_folder(path, target, doc)
        except UpstreamError as exc:
            # One broken profiles.json costs its target the kmods, not the whole render.
            log.warning("%s; its kernel modules are not indexed", exc)
            return None

    def _arch(self, release: Release, arch: str) -> tuple[_Done, None]:
        key = f"arch:{release.path}:{arch}"
        prefer = self._sources(key)
        indexes = {}
        candidates = self._index_names(release.path)
        for feed in FEEDS:
            folder = feed_folder(release.path, arch, feed)
            index = find_index(self.upstream, folder, prefer, candidates)
            if index is not None:
                indexes[feed] = index
        inputs = {feed: [relpath, f.digest] for feed, (relpath, f) in indexes.items()}

        def produce() -> _Output:
            if not indexes:
                return _Output({})
            merged = PackageIndex()
            for feed in FEEDS:
                if feed in indexes:
                    merged = merged.merged(self._parse_index(indexes[feed]))
            folder = f"json/v1/{release.path}/packages"
            files = {
                f"{folder}/{arch}-index.json": dumps(merged.packages),
                f"{folder}/{arch}-{NAMES}.json": dumps(merged.sidecar()),
            }
            return _Output(files, packages=len(merged.packages))

        sources = [relpath for relpath, _ in indexes.values()]
        return self._group(key, inputs, produce, sources), None

    def _version(
        self, release: Release, targets: dict[str, str], profiles: dict[str, Fetched | None]
    ) -> _Done:
        key = f"version:{release.path}"
        inputs = {
            "version": release.version,
            "targets": targets,
            "profiles": {t: f.digest if f else None for t, f in sorted(profiles.items())},
        }

        def produce() -> _Output:
            entries = []
            for target, fetched in sorted(profiles.items()):
                if fetched is None:
                    continue
                where = self.upstream.url(profiles_relpath(release.path, target))
                doc = parse_profiles(fetched.data, where)
                for pid, profile in sorted(doc["profiles"].items()):
                    entries.append(
                        {"id": pid, "target": target, "titles": profile.get("titles", [])}
                    )
            files = {
                f"{release.path}/.overview.json": dumps(
                    {"release": release.version, "profiles": entries}
                ),
                f"{release.path}/.targets.json": dumps(targets),
            }
            return _Output(files)

        return self._group(key, inputs, produce)

    def _global(
        self,
        branches: Sequence[Branch],
        versions: Versions | None,
        served: dict[Release, dict[str, str]],
    ) -> _Done:
        rendered: dict[str, list[Release]] = {}
        # Newest first whatever was read again this time (the order releases are listed in).
        for release in sorted(served, key=lambda r: version_key(r.version), reverse=True):
            rendered.setdefault(release.branch.name, []).append(release)
        entries = []
        for branch in branches:
            releases_ = rendered.get(branch.name, [])
            if not releases_ and branch.snapshot and self.settings.branches is None:
                continue  # the default SNAPSHOT, absent upstream (logged above)
            entries.append(
                {
                    "name": branch.name,
                    "enabled": branch.enabled,
                    "snapshot": branch.snapshot,
                    "versions": [r.version for r in releases_]
                    if branch.enabled
                    else list(branch.versions or []),
                    "path": branch.path,
                    "path_packages": branch.path_packages,
                    "git_branch": branch.git_branch,
                    "branch_off_rev": branch.branch_off_rev,
                    "targets": served[_newest_release(releases_)] if releases_ else {},
                    "package_changes": [c.model_dump(mode="json") for c in branch.package_changes],
                }
            )
        latest = _latest(versions, served, rendered)
        server = self.settings.server
        inputs = {
            "branches": entries,
            "latest": latest,
            "upstream_versions": asdict(versions) if versions else None,
            "upstream_url": self.settings.upstream,
            "server": server.model_dump(mode="json"),
            "backend": self.settings.backend,
        }

        def produce() -> _Output:
            overview = {
                "latest": latest,
                "branches": {
                    e["name"]: {
                        k: v for k, v in e.items() if k not in ("git_branch", "branch_off_rev")
                    }
                    for e in entries
                },
                "upstream_url": self.settings.upstream,
                "server": {
                    "version": __version__,
                    "contact": server.contact,
                    # The GitHub backend refuses defaults: it has no private path for them.
                    "allow_defaults": server.allow_defaults and self.settings.backend != "github",
                    "max_custom_rootfs_size_mb": server.max_custom_rootfs_size_mb,
                    "max_defaults_length": server.max_defaults_length,
                    "repository_allow_list": list(server.repository_allow_list),
                },
            }
            files = {
                "json/v1/overview.json": dumps(overview),
                "json/v1/branches.json": dumps(entries),
                "json/v1/latest.json": dumps({"latest": latest}),
                VERSIONS_FILE: dumps(_versions_file(versions, served)),
            }
            return _Output(files)

        return self._group("global:", inputs, produce)

    # -- the mechanism ---------------------------------------------------------

    def _group(
        self,
        key: str,
        inputs: Any,
        produce: Callable[[], _Output],
        sources: Iterable[str] = (),
        meta: dict[str, Any] | None = None,
    ) -> _Done:
        """Skip the group when its fingerprint and files are as last time; else write it."""
        fingerprint = hashlib.sha256(dumps([FORMAT, __version__, key, inputs])).hexdigest()
        old = self.old.get(key)
        if (
            old is not None
            and old["fingerprint"] == fingerprint
            and self._all_present(old["files"])
        ):
            return _Done(key, old, written=0, unchanged=len(old["files"]))
        out = produce()
        written = sum(
            write_bytes(self.public / rel, data) for rel, data in sorted(out.files.items())
        )
        record = {
            "fingerprint": fingerprint,
            "files": sorted(out.files),
            "profiles": out.profiles,
            "packages": out.packages,
            "sources": sorted(sources),
        }
        if meta is not None:
            record["meta"] = meta
        return _Done(key, record, written, len(out.files) - written)

    def _all_present(self, files: Iterable[str]) -> bool:
        """Every file still there (one listing per folder, not one stat per file)."""
        listed: dict[str, set[str]] = {}
        for rel in files:
            folder, _, name = rel.rpartition("/")
            names = listed.get(folder)
            if names is None:
                try:
                    with os.scandir(os.path.join(self.public, folder)) as entries:
                        names = {e.name for e in entries if e.is_file()}
                except OSError:
                    return False
                listed[folder] = names
            if name not in names:
                return False
        return True

    def _sources(self, key: str) -> Collection[str]:
        old = self.old.get(key)
        return set(old["sources"]) if old else set()

    def _index_names(self, path: str) -> Collection[str]:
        """The index file names a release used last time (all of them when none is known).

        A folder without an index then costs one request on a warm run, not one per
        format.
        """
        return self._formats.get(path) or INDEX_NAMES

    def _parse_index(self, index: tuple[str, Fetched]) -> PackageIndex:
        relpath, fetched = index
        return parse_index(relpath.rsplit("/", 1)[-1], fetched.data, self.upstream.url(relpath))

    def _finish(self, done: list[_Done], versions: Versions | None) -> None:
        """Remove the files no group produces any more, then save the state."""
        produced = {f for d in done for f in d.record["files"]}
        stale = {f for record in self.old.values() for f in record["files"]} - produced
        for relpath in sorted(stale, reverse=True):
            path = self.public / relpath
            path.unlink(missing_ok=True)
            _prune(path.parent, self.public)
        state = {
            "format": FORMAT,
            "public": str(self.public.absolute()),
            "versions_digest": versions.digest if versions else "",
            "groups": {d.key: d.record for d in done},
        }
        write_json(self.state_path, state)

    def _load_state(self) -> dict[str, dict[str, Any]]:
        """The groups of the last render into this public tree; nothing when unreadable."""
        try:
            state = read_json(self.state_path)
        except (OSError, ValueError):
            return {}
        if (
            not isinstance(state, dict)
            or state.get("format") != FORMAT
            or state.get("public") != str(self.public.absolute())
            or not isinstance(state.get("groups"), dict)
        ):
            return {}
        self.old_versions_digest = str(state.get("versions_digest") or "")
        return {key: rec for key, rec in state["groups"].items() if _valid_record(rec)}


def _valid_record(record: Any) -> bool:
    """A state record with a fingerprint, counts and only plain relative file names."""
    try:
        return (
            isinstance(record["fingerprint"], str)
            and isinstance(record["profiles"], int)
            and isinstance(record["packages"], int)
            and all(check_relpath(f) for f in [*record["files"], *record["sources"]])
        )
    except (TypeError, KeyError, ValueError):
        return False


def _device_files(doc: dict[str, Any], folder: str) -> dict[str, bytes]:
    """One file per profile id and per board name (commas as ``_``).

    A board name never replaces a profile id. Some board names are claimed by
    two profiles (37 in 23.05.4: a device and its ``-legacy`` variant, two
    boards of one reference design); the one that gets the name is, in order:

    1. the profile that lists it earliest in its own ``supported_devices`` (the
       first entry is the board name the device itself reports);
    2. the profile whose id names the board: ends in ``_<name>``
       (``buffalo_wzr-hp-g450h`` for ``wzr-hp-g450h``, not ``buffalo_bhr-4grv``),
       else names a version of it, ``_<name>-…`` (``tplink_tl-wdr4300-v1`` for
       ``tl-wdr4300``, not ``mercury_mw4530r-v1``);
    3. the first id in sorted order.

    Names that are not plain (and ``index`` and ``names``, the target's
    package files) get no file.
    """
    common = {k: v for k, v in doc.items() if k != "profiles"}
    profiles: dict[str, dict[str, Any]] = doc["profiles"]
    ids = sorted(pid for pid in profiles if _file_name_ok(pid))
    claims: dict[str, list[tuple[int, int, str]]] = {}
    for pid in ids:
        devices = profiles[pid].get("supported_devices")
        for position, device in enumerate(devices if isinstance(devices, list) else []):
            alias = str(device).replace(",", "_")
            if _file_name_ok(alias) and alias not in profiles:
                claims.setdefault(alias, []).append((position, _names(pid, alias), pid))
    owner = {pid: pid for pid in ids}
    owner.update({alias: min(ranked)[2] for alias, ranked in claims.items()})
    bodies = {pid: dumps({**common, **profiles[pid], "id": pid}) for pid in ids}
    return {f"{folder}/{name}.json": bodies[pid] for name, pid in owner.items()}


def _names(pid: str, board: str) -> int:
    """How closely a profile id names a board: 0 exactly, 1 a version of it, 2 not."""
    if pid.endswith(f"_{board}"):
        return 0
    return 1 if f"_{board}-" in pid else 2


def _file_name_ok(name: str) -> bool:
    return is_safe_name(name) and name not in ("index", NAMES)


def _latest(
    versions: Versions | None,
    served: dict[Release, dict[str, str]],
    rendered: dict[str, list[Release]],
) -> list[str]:
    """``latest.json``: the upcoming, stable and oldstable versions that are served.

    Without those (a configured mirror that names none of them), the newest
    release of each served branch. Snapshots (``SNAPSHOT``, ``24.10-SNAPSHOT``)
    are never listed.
    """
    releases_ = {r.version for r in served if not _moves(r)}
    named = (
        [versions.upcoming_version, versions.stable_version, versions.oldstable_version]
        if versions
        else []
    )
    latest = list(dict.fromkeys(v for v in named if v in releases_))
    if latest:
        return latest
    newest = (_newest_release(rs) for rs in rendered.values())
    return newest_first(r.version for r in newest if not _moves(r))


def _versions_file(versions: Versions | None, served: dict[Release, dict[str, str]]) -> Any:
    """The Firmware Selector's ``.versions.json``, naming only versions served here.

    As upstream's, it names releases only: the snapshots are in ``overview.json``.
    """
    listed = newest_first(r.version for r in served if not _moves(r))

    def pick(version: str) -> str:
        return version if version in listed else ""

    stable = pick(versions.stable_version) if versions else ""
    if not stable and listed:
        stable = next((v for v in listed if "-" not in v), listed[0])
    return {
        "versions_list": listed,
        "stable_version": stable,
        "oldstable_version": pick(versions.oldstable_version) if versions else "",
        "upcoming_version": pick(versions.upcoming_version) if versions else "",
    }


def _moves(release: Release) -> bool:
    """A snapshot: of a snapshot branch, ``SNAPSHOT`` or a branch snapshot."""
    return release.branch.snapshot or is_moving(release.version)


def _newest_release(releases_: Sequence[Release]) -> Release:
    """The first of ``releases_`` (newest first) that is no snapshot, else the first."""
    return next((r for r in releases_ if not _moves(r)), releases_[0])


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _prune(folder: Path, top: Path) -> None:
    """Remove ``folder`` and its parents up to ``top`` while they are empty."""
    while folder != top and top in folder.parents:
        try:
            folder.rmdir()
        except OSError:
            return
        folder = folder.parent

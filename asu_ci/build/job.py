"""One build: a validated request in, published images and ``build.json`` out.

:func:`run_build` is the whole job, the same on one machine and in a CI runner:

1. a published ``build.json`` is returned as is (a success is never rebuilt);
   a recent failure is re-raised until ``build.failure_retry_seconds`` pass;
2. the request is validated again against the index (the job trusts no caller);
3. an exclusive lock on ``<data>/locks/<hash>.lock`` is held for the rest, so a
   second process with the same request waits and then finds the result;
4. the ImageBuilder is located in ``sha256sums``, verified and unpacked once
   into the shared cache (:mod:`asu_ci.build.imagebuilder`), and copied into a
   private working tree ``<data>/work/<hash>/``; when the archive or its
   revision moved upstream meanwhile, upstream is read again once first;
5. ``make info``, ``make manifest`` and ``make image`` run as argv lists with a
   sanitized environment and the build timeout, never through a shell; opkg's
   and apk's manifests and complaints are read alike, and ``packages_versions``
   is checked against what installed each requested name;
6. the images, ``sha256sums``, ``profiles.json`` and the manifest are collected
   in a hidden staging folder beside the store folder and published with one
   rename each, ``build.json`` and then ``status.json`` last.

``status.json`` follows every step (``Progress.building``) and ends as the 200
body (``Built``) or the failure (``Failed``), all of :mod:`asu_ci.protocol`. A
build killed midway leaves only the hidden staging folder and the working tree;
the next run of the same request removes both before it starts.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from asu_ci import fsutil, knowledge, proc
from asu_ci.build import imagebuilder
from asu_ci.build.imagebuilder import Archive, ImageBuilderCache, ProgressFn, StepFn
from asu_ci.config import Settings
from asu_ci.errors import AsuCiError, BuildError, RequestError
from asu_ci.fsutil import FileLock
from asu_ci.identity.hashing import request_hash
from asu_ci.identity.identify import identify
from asu_ci.identity.validate import (
    NormalizedRequest,
    apply_package_changes,
    offered_names,
    revision_number,
)
from asu_ci.index.catalog import Catalog
from asu_ci.index.render import render_tree
from asu_ci.protocol import Built, Failed, Progress, read_status
from asu_ci.publish import retention
from asu_ci.publish.base import Store
from asu_ci.upstream.source import Upstream

log = logging.getLogger(__name__)


#: The tag every image name carries (``openwrt-23.05.4-asu-ath79-…``): short,
#: safe, and the same for every request, so it says nothing about the requester.
EXTRA_IMAGE_NAME = "asu"
DEFAULTS_FILE = "etc/uci-defaults/99-asu-defaults"

#: What one word of a make command-line value may hold. make expands ``$`` in
#: command-line variables and recipes hand values to a shell, so anything
#: beyond this (whitespace, ``$``, quotes, ``;``, newlines, …) is refused even
#: though the request model already rejected it.
_MAKE_VALUE = re.compile(r"^[A-Za-z0-9._/+-]*$")
_MAKE_PACKAGE = re.compile(r"^-?[A-Za-z0-9][A-Za-z0-9+._-]{0,127}$")
_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
_FOLDER_WORD = re.compile(r"^(BIN_DIR|FILES)=/.*$")
_TOO_BIG = re.compile(r"is too big|out of space", re.IGNORECASE)
_PACKAGE_WORD = re.compile(r"[A-Za-z0-9][\w+.-]*")
_OPKG_MANIFEST = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+._-]*) - ([A-Za-z0-9]\S*)$")
_APK_MANIFEST = re.compile(r"^([A-Za-z0-9][A-Za-z0-9+._-]*) ([0-9]\S*)$")
#: ``<name>-<version>`` as apk prints a package: versions start with a digit and
#: hold no ``-`` but the ``-r<release>`` at their end.
_APK_LABEL = re.compile(r"^(\S+)-([0-9][^-\s]*(?:-r[0-9]+)?)$")
_APK_REPORT = re.compile(r"ERROR: (?:unable to select packages|unsatisfiable constraints):")
_APK_OVERWRITE = re.compile(r"ERROR: (\S+): trying to overwrite .+ owned by (\S+?)\.?$")
#: What OpenWrt appends to a library's name for its ABI version: the version
#: itself, after a ``-`` when the name ends in a digit (include/package-pack.mk).
_ABI_SUFFIX = re.compile(r"[0-9][0-9A-Za-z.+~_]*")


class BuildStore(Store, Protocol):
    """A store the job can publish into: :class:`Store` plus a staging folder."""

    def staging(self, request_hash: str) -> Path:
        """A fresh private folder, on the store's filesystem, to collect files in."""
        ...


# --- make words ------------------------------------------------------------------------


def make_var(name: str, value: str) -> str:
    """``NAME=value`` as ONE argv word, or :class:`BuildError` if ``value`` could be code."""
    if not _MAKE_VALUE.fullmatch(value):
        raise BuildError(
            f"Refusing to pass {name} to make: its value {value[:80]!r} has characters "
            "(whitespace, $, quotes, …) that make or a shell would interpret"
        )
    return f"{name}={value}"


def make_packages(words: Sequence[str]) -> str:
    """``PACKAGES=a b -c``: the one place a value may hold spaces, between checked names."""
    bad = [w for w in words if not _MAKE_PACKAGE.fullmatch(w)]
    if bad:
        raise BuildError(
            f"Refusing to pass package names to make: {', '.join(repr(w[:80]) for w in bad)}"
        )
    return "PACKAGES=" + " ".join(words)


def make_path(name: str, path: Path) -> str:
    value = str(path.resolve())
    if not _MAKE_VALUE.fullmatch(value):
        raise BuildError(
            f"The folder {value!r} cannot be handed to make as {name}: its path has "
            "characters make or a shell would interpret; use a data folder with a plain path"
        )
    return f"{name}={value}"


def shown_argv(argv: Sequence[str]) -> list[str]:
    """The make command as published: this machine's folders become placeholders."""
    return [_FOLDER_WORD.sub(r"\1=<\1>", word) for word in argv]


def hide_paths(text: str, folders: Sequence[tuple[Path, str]]) -> str:
    """``text`` with each folder's absolute path (as given and resolved) replaced by its
    placeholder, the longest path first, so a published failure shows
    ``<IMAGEBUILDER>/build_dir/…`` where make printed this machine's folders."""
    pairs: dict[str, str] = {}
    for folder, placeholder in folders:
        for form in (str(folder.absolute()), str(folder.resolve())):
            if len(form) > 1:
                pairs.setdefault(form, placeholder)
    for path in sorted(pairs, key=len, reverse=True):
        text = text.replace(path, pairs[path])
    return text


# --- parsing what the ImageBuilder prints ----------------------------------------------


@dataclass(frozen=True)
class Info:
    """What ``make info`` says about the ImageBuilder."""

    revision: str
    default_packages: tuple[str, ...]
    profiles: Mapping[str, tuple[str, ...]]


def parse_info(text: str) -> Info:
    """Read ``make info``: revision, default packages and each profile's packages."""
    revision = re.search(r'^Current Revision: "([^"]*)"', text, re.MULTILINE)
    defaults = re.search(r"^Default Packages: ?(.*)$", text, re.MULTILINE)
    profiles: dict[str, tuple[str, ...]] = {}
    current: str | None = None
    in_profiles = False
    for line in text.splitlines():
        if line.startswith("Available Profiles:"):
            in_profiles = True
            continue
        if not in_profiles:
            continue
        header = re.match(r"^(\S+):$", line)
        if header:
            current = header.group(1)
            profiles[current] = ()
            continue
        packages = re.match(r"^\s+Packages: ?(.*)$", line)
        if current is not None and packages:
            profiles[current] = tuple(packages.group(1).split())
    if revision is None or defaults is None:
        raise BuildError(
            "make info did not print the ImageBuilder's revision and default packages",
            stdout=proc.tail(text),
        )
    return Info(revision.group(1), tuple(defaults.group(1).split()), profiles)


def parse_manifest(text: str) -> dict[str, str]:
    """``{name: version}`` from ``make manifest``.

    opkg's ``list-installed`` prints ``name - version`` (the ABI suffix removed
    by ``STRIP_ABI=1``); apk's ``list --manifest`` prints ``name version``
    with the installed name as is, ABI suffix included
    (``libustream-mbedtls20201210``; the ImageBuilder ignores ``STRIP_ABI``
    there). An apk version always starts with a digit, which keeps a stray
    two-word line of other output out of the manifest.
    """
    manifest = {}
    for line in text.splitlines():
        match = _OPKG_MANIFEST.match(line.strip()) or _APK_MANIFEST.match(line.strip())
        if match:
            manifest[match.group(1)] = match.group(2)
    return manifest


def apk_name(label: str) -> str:
    """The package name of apk's ``<name>-<version>`` (``dnsmasq-full-2.90-r2``),
    with any ``[dependency]`` after it dropped; a bare name stays as it is."""
    bare = label.split("[", 1)[0]
    match = _APK_LABEL.match(bare)
    return match.group(1) if match else bare


@dataclass
class _Selection:
    """What a package manager's complaints name, in the order they name it."""

    missing: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    virtual: dict[str, list[str]] = field(default_factory=dict)

    def detail(self) -> str | None:
        parts = []
        # opkg says "Cannot install package x" of a conflicting x too: a conflict is no gap.
        missing = [name for name in self.missing if name not in self.conflicts]
        if missing:
            parts.append(f"missing ({', '.join(dict.fromkeys(missing))})")
        if self.conflicts:
            parts.append(f"conflicts ({', '.join(dict.fromkeys(self.conflicts))})")
        for name, providers in self.virtual.items():
            choice = " | ".join(providers) if providers else "no package"
            parts.append(f"virtual ({name}, provided by {choice}: name one of them)")
        return "Impossible package selection: " + " ".join(parts) if parts else None


def _opkg_complaints(output: str, found: _Selection) -> None:
    """opkg's "Collected errors": unknown and uninstallable packages, conflicts,
    dependencies nothing satisfies, files two packages both install."""
    failed: list[str] = []
    subjects: set[str] = set()
    section: list[str] | None = None
    for line in output.splitlines():
        text = line.strip().lstrip("*").strip()
        if match := re.search(r"Cannot install package (\S+?)\.?$", text):
            failed.append(match.group(1))
            section = None
        elif match := re.search(r"Unknown package '([^']+)'", text):
            found.missing.append(match.group(1))
            section = None
        elif match := re.search(r"Cannot satisfy the following dependencies for (\S+?):?$", text):
            subjects.add(match.group(1))
            section = found.missing
        elif match := re.search(r"The following packages conflict with (\S+?):?$", text):
            subjects.add(match.group(1))
            found.conflicts.append(match.group(1))
            section = found.conflicts
        elif match := re.search(r"check_data_file_clashes: Package (\S+) wants to install", text):
            subjects.add(match.group(1))
            found.conflicts.append(match.group(1))
            section = None
        elif match := re.search(r"already provided by package\s+\*?\s*(\S+)$", text):
            found.conflicts.append(match.group(1))
            section = None
        elif section is not None and line.lstrip().startswith("*"):
            body = re.sub(r"^\w+:", "", text)
            body = re.sub(r"\([^)]*\)", " ", body)
            section.extend(w for w in body.split() if _PACKAGE_WORD.fullmatch(w))
        else:
            section = None
    found.missing += [name for name in failed if name not in subjects]


def _apk_complaints(output: str, found: _Selection) -> None:
    """apk's report: ``ERROR: unable to select packages:`` (apk 3; apk 2 said
    ``unsatisfiable constraints:``) with one block per name or package, and
    ``ERROR: <pkg>-<ver>: trying to overwrite <file> owned by <pkg>-<ver>.``

    A block is ``  <label>:`` and its ``    <field>: words`` lines (long ones
    wrapped onto further, deeper lines). ``<name> (no such package)`` (apk 2:
    ``(missing)``) is a missing name, ``<name> (virtual)`` a name only other
    packages provide (``provided by:``); a package block with ``conflicts:``
    or ``breaks:`` names packages that cannot go together.
    """
    blocks: list[tuple[str, dict[str, list[str]]]] = []
    in_report = False
    key = ""
    for line in output.splitlines():
        if match := _APK_OVERWRITE.search(line):
            found.conflicts += [apk_name(match.group(1)), apk_name(match.group(2))]
            in_report = False
            continue
        if _APK_REPORT.search(line):
            in_report = True
            continue
        if not in_report:
            continue
        if match := re.match(r"^  (\S.*):$", line):
            blocks.append((match.group(1), {}))
            key = ""
        elif blocks and (match := re.match(r"^    ([a-z_ ]+): (.*)$", line)):
            key = match.group(1)
            blocks[-1][1].setdefault(key, []).extend(match.group(2).split())
        elif blocks and key and line.startswith("     ") and line.strip():
            blocks[-1][1][key].extend(line.split())
        else:
            in_report = False
    for label, fields in blocks:
        if match := re.fullmatch(r"(\S+) \((?:no such package|missing)\)", label):
            found.missing.append(match.group(1))
        elif match := re.fullmatch(r"(\S+) \(virtual\)", label):
            found.virtual[match.group(1)] = [apk_name(w) for w in fields.get("provided by", [])]
        elif "conflicts" in fields or "breaks" in fields:
            found.conflicts.append(apk_name(label))
            for word in (*fields.get("conflicts", ()), *fields.get("breaks", ())):
                if not word.startswith("world["):
                    found.conflicts.append(apk_name(word))


def impossible_selection(output: str) -> str:
    """The "Impossible package selection" detail from opkg's or apk's complaints.

    ``Impossible package selection: missing (a, b) conflicts (c, d)``, each
    part only when it names something, plus ``virtual (<name>, provided by
    x | y: name one of them)`` for a name apk cannot pick a provider for.
    When neither package manager's messages can be read, the last error line
    is quoted instead.
    """
    found = _Selection()
    _opkg_complaints(output, found)
    _apk_complaints(output, found)
    detail = found.detail()
    if detail is not None:
        return detail
    errors = [
        ln.strip()
        for ln in output.splitlines()
        if "rror" in ln or ln.startswith(" *") or ln.startswith("ERROR")
    ]
    hint = f" ({errors[-1][:200]})" if errors else ""
    return f"Impossible package selection{hint}"


def installed_name(
    name: str,
    manifest: Mapping[str, str],
    aliases: Mapping[str, Sequence[str]],
    real_names: Collection[str],
) -> str | None:
    """The manifest entry that satisfies the requested ``name``, or None.

    In this order: ``name`` itself; what the index says it stands for
    (``aliases``: an ABI-suffixed full name → its real name, a provided name
    → its providers) when that is installed; ``name`` plus an ABI suffix
    (``libgcc`` → ``libgcc1``, ``libustream-mbedtls`` →
    ``libustream-mbedtls20201210``, as apk's manifest names libraries), also
    for a provider. An ABI-suffixed candidate that is a real package of its
    own in the index (``libpcre2`` is not ``libpcre``) never counts.
    """
    if name in manifest:
        return name
    candidates = [name, *aliases.get(name, ())]
    for candidate in candidates[1:]:
        if candidate in manifest:
            return candidate
    for candidate in candidates:
        if candidate.startswith("kmod-"):
            continue  # kernel modules never carry an ABI suffix
        joint = "-" if candidate[-1:].isdigit() else ""
        found = [
            installed
            for installed in manifest
            if installed.startswith(candidate + joint)
            and installed not in real_names
            and _ABI_SUFFIX.fullmatch(installed[len(candidate) + len(joint) :])
        ]
        if len(found) == 1:
            return found[0]
    return None


def package_words(
    requested: Sequence[str], info: Info, profile: str, diff_packages: bool
) -> list[str]:
    """The PACKAGES words: additions, then removals (``-name``).

    With ``diff_packages`` every default or device package that was not asked
    for is removed, so the image holds exactly the requested set (plus what it
    depends on).
    """
    additions = sorted({w for w in requested if not w.startswith("-")})
    removals = {w[1:] for w in requested if w.startswith("-")}
    if diff_packages:
        builtin = {p for p in (*info.default_packages, *info.profiles.get(profile, ())) if p}
        removals |= {p for p in builtin if not p.startswith("-")} - set(additions)
    return additions + [f"-{p}" for p in sorted(removals - set(additions))]


# --- the job ---------------------------------------------------------------------------


def _signing_key(settings: Settings, catalog: Catalog, version: str) -> str | None:
    """The usign key of the version's branch, when the configuration has one."""
    branch = catalog.branch_of(version)
    names = {str(branch.get("name"))} if branch else set()
    for configured in settings.branches or ():
        if configured.name in names or version in (configured.versions or ()):
            return configured.signing_key
    return None


def _revalidate(
    request: NormalizedRequest, catalog: Catalog, settings: Settings, expected: str
) -> NormalizedRequest:
    """``request`` identified again from its JSON form; it must keep its hash."""
    return identify(request.to_json(), catalog, settings.server, expect=expected).request


def _raise_recent_failure(store: Store, key: str, settings: Settings) -> None:
    status = read_status(store.status(key))
    if not isinstance(status, Failed) or status.retryable(settings.build.failure_retry_seconds):
        return
    failed_at = status.failed_at
    ago = f"{max(0, int(time.time() - failed_at)) // 60} min ago" if failed_at else "recently"
    raise BuildError(
        f"{status.detail or 'The build failed'} (the failure of an earlier run, "
        f"{ago}; repeated until build.failure_retry_seconds pass, --force tries again now)",
        stdout=status.stdout,
        stderr=status.stderr,
    )


def run_build(
    request: NormalizedRequest,
    *,
    settings: Settings,
    store: BuildStore,
    catalog: Catalog,
    upstream: Upstream | None = None,
    force: bool = False,
    on_step: StepFn | None = None,
    on_progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Build ``request`` (or find it built) and return its ``build.json`` body.

    ``force`` retries a failure before ``build.failure_retry_seconds`` have
    passed; a success is never rebuilt. ``on_step`` hears each
    ``imagebuilder_status`` step, ``on_progress(done, total)`` the download.
    Raises :class:`BuildError` (after recording it in ``status.json``) or
    :class:`RequestError` when the request does not validate against the index.
    """
    key = request_hash(request)
    built = store.build(key)
    if built is not None:
        return built
    if not force:
        _raise_recent_failure(store, key, settings)
    try:
        request = _revalidate(request, catalog, settings, key)
    except AsuCiError as exc:
        store.write_status(key, Failed.of(key, BuildError(exc.message)))
        raise
    lock = FileLock(settings.data_dir / "locks" / f"{key}.lock")
    if not lock.acquire(blocking=False):
        log.info("another process builds %s; waiting for it", key)
        lock.acquire()
    try:
        built = store.build(key)
        if built is not None:
            return built
        if not force:
            _raise_recent_failure(store, key, settings)
        with contextlib.ExitStack() as stack:
            if upstream is None:
                cache = settings.data_dir / "cache" / "upstream"
                upstream = stack.enter_context(
                    Upstream(settings.upstream, cache, bound=settings.upstream_timeout_seconds)
                )
            job = _Job(request, key, settings, store, catalog, upstream, on_step, on_progress)
            return job.run()
    finally:
        lock.release(remove=True)


@dataclass
class _Job:
    request: NormalizedRequest
    key: str
    settings: Settings
    store: BuildStore
    catalog: Catalog
    upstream: Upstream
    on_step: StepFn | None
    on_progress: ProgressFn | None
    timings: dict[str, float] = field(default_factory=dict)
    step_name: str = ""
    work: Path = field(default=Path(), init=False)

    def step(self, name: str) -> None:
        if name == self.step_name:
            return
        self.step_name = name
        self.store.write_status(self.key, Progress.building(self.key, name))
        if self.on_step is not None:
            self.on_step(name)

    def run(self) -> dict[str, Any]:
        """Build in a fresh working folder ``<data>/work/<hash>/<run>/``.

        Earlier runs of this hash (killed ones; we hold the hash lock) are
        removed first. A folder per run means a ``make`` orphaned by a killed
        run can only ever write into its own, abandoned folder, never into
        this run's BIN_DIR.
        """
        started = time.monotonic()
        runs = self.settings.data_dir / "work" / self.key
        shutil.rmtree(runs, ignore_errors=True)
        runs.mkdir(parents=True)
        self.work = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
        try:
            return self._build(started)
        except AsuCiError as exc:
            error = exc if isinstance(exc, BuildError) else BuildError(exc.message)
            self.store.write_status(self.key, Failed.of(self.key, self._published(error)))
            raise
        except Exception:
            error = BuildError("The build failed unexpectedly; the builder's log has the cause")
            self.store.write_status(self.key, Failed.of(self.key, error))
            raise
        finally:
            shutil.rmtree(runs, ignore_errors=True)

    def _published(self, error: BuildError) -> BuildError:
        """``error`` as every requester of the hash may read it: this machine's folders
        in its detail and output tails become placeholders (``<BIN_DIR>``,
        ``<FILES>`` as in ``build_cmd``; ``<IMAGEBUILDER>`` the working copy,
        ``<WORK>`` the rest of the run's folder, ``<DATA>`` and ``<PUBLIC>``)."""
        folders = (
            (self.work / "bin", "<BIN_DIR>"),
            (self.work / "files", "<FILES>"),
            (self.work / "imagebuilder", "<IMAGEBUILDER>"),
            (self.work, "<WORK>"),
            (self.settings.data_dir, "<DATA>"),
            (self.settings.public_dir, "<PUBLIC>"),
        )
        return BuildError(
            hide_paths(error.message, folders),
            stdout=hide_paths(error.stdout, folders),
            stderr=hide_paths(error.stderr, folders),
        )

    def _build(self, started: float) -> dict[str, Any]:
        request = self.request
        self.step("download_imagebuilder")
        path = self.catalog.path_of(request.version)
        if path is None:
            raise RequestError(f"Unsupported version: {request.version}")
        archive, ib, info = self._prepare(path)
        if request.profile not in info.profiles:
            raise BuildError(
                f"The ImageBuilder has no profile {request.profile}; the index and the "
                "ImageBuilder disagree (render the index again)"
            )
        changes = self.catalog.package_changes(request.version)
        wanted, applied = apply_package_changes(
            request.requested_packages(),
            changes,
            revision_number(info.revision),
            version=request.version,
            target=request.target,
            profile=request.profile,
            offered=offered_names(self.catalog, request.version, request.target, request.profile),
        )
        words = package_words(wanted, info, request.profile, request.diff_packages)
        manifest = self._manifest(ib, words)
        self._check_versions(manifest, applied)
        self.step("building_image")
        argv, bin_dir = self._image(ib, words)
        staging = self.store.staging(self.key)
        try:
            images, profile = self._collect(bin_dir, staging)
            if request.defaults is not None:
                # Marks a build that holds a first-boot script for early expiry.
                (staging / retention.FIRST_BOOT).touch()
            self.timings["total"] = time.monotonic() - started
            body = self._body(profile, images, manifest, argv, archive, applied).json_body()
            self.store.publish(self.key, staging, body)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return body

    def _locate(self, path: str) -> imagebuilder.Archive:
        """The ImageBuilder listed in the target's ``sha256sums``, whose signature is
        checked against the trusted keys first."""
        request = self.request
        return imagebuilder.locate(
            self.upstream,
            path,
            request.version,
            request.target,
            knowledge.trusted_keys(
                self.settings, _signing_key(self.settings, self.catalog, request.version)
            ),
            allow_unsigned=self.settings.signatures.allow_unsigned,
        )

    def _prepare(self, path: str) -> tuple[Archive, Path, Info]:
        """The request's ImageBuilder in a private working copy, and its ``make info``.

        Upstream moves under a build: a snapshot's ImageBuilder is replaced on
        every rebuild, and the download server publishes a target's files one
        after the other. So when the archive does not match the ``sha256sums``
        just read, or ``make info`` reports another revision than the request
        names, upstream is read once more (this version's index rendered again,
        ``sha256sums`` fetched anew) and the build tried once more with what
        that finds; a revision that stays wrong with the same archive fails
        at once. A second failure stands.
        """
        request = self.request
        reread = False
        while True:
            archive = self._locate(path)
            ib = self.work / "imagebuilder"
            shutil.rmtree(ib, ignore_errors=True)
            try:
                self._working_copy(archive, ib)
            except imagebuilder.ArchiveChangedError:
                if reread:
                    raise
                self._reread()
                reread = True
                continue
            if request.repositories:
                imagebuilder.configure_repositories(
                    ib, request.repositories, request.repository_keys, request.repositories_mode
                )
            self.step("calculate_packages_hash")
            info = parse_info(self._make(ib, ["info"], "info").stdout)
            wanted = request.version_code
            if not wanted or wanted == info.revision:
                return archive, ib, info
            if not reread:
                self._reread()
                reread = True
                again = self._locate(path)
                if again.sha256 != archive.sha256:
                    self.step("download_imagebuilder")
                    continue
            listed = Catalog(self.catalog.public).revision(request.version, request.target)
            now = f"; the index now lists {listed}" if listed else ""
            raise BuildError(
                f"Received incorrect version {info.revision} (requested {wanted}): the "
                "ImageBuilder on the download server has another revision than the request, "
                f"also after reading upstream again{now}; ask for the current one"
            )

    def _working_copy(self, archive: Archive, ib: Path) -> None:
        """Download and unpack ``archive`` into the shared cache (once) and copy it to ``ib``."""
        request = self.request
        cache = ImageBuilderCache(
            self.settings.data_dir / "imagebuilders", self.upstream, self.settings.build
        )
        with cache.use(
            request.version,
            request.target,
            archive,
            on_step=self.step,
            on_progress=self.on_progress,
        ) as prepared:
            self.timings.update(prepared.timings)
            self.step("unpack_imagebuilder")
            copy_started = time.monotonic()
            imagebuilder.working_copy(prepared.root, ib)
            self.timings["workspace"] = time.monotonic() - copy_started
        with contextlib.suppress(OSError):
            cache.evict(keep=prepared.root.parent)

    def _reread(self) -> None:
        """Read this version from upstream again: its index is rendered anew (when
        the job reads the index this machine renders), so the endpoint and the
        next request see what upstream holds now. A failure to read is logged;
        the build's own failure is what the requester then gets."""
        version = self.request.version
        log.info("%s: upstream moved under the build of %s; reading it again", self.key, version)
        if self.catalog.public.resolve() != self.settings.public_dir.resolve():
            return
        try:
            render_tree(self.settings, upstream=self.upstream, only={version})
        except AsuCiError as exc:
            log.warning("reading %s from upstream again failed: %s", version, exc.message)

    # --- make steps --------------------------------------------------------------------

    def _make(self, ib: Path, args: list[str], timing: str) -> proc.Result:
        started = time.monotonic()
        try:
            return proc.run(
                ["make", "--no-print-directory", *args],
                cwd=ib,
                timeout=self.settings.build.timeout_seconds,
            )
        finally:
            self.timings[timing] = time.monotonic() - started

    def _manifest(self, ib: Path, words: list[str]) -> dict[str, str]:
        args = [
            "manifest",
            make_var("PROFILE", self.request.profile),
            make_packages(words),
            "STRIP_ABI=1",
        ]
        result = self._make(ib, args, "manifest")
        if result.returncode != 0:
            output = result.stdout + "\n" + result.stderr
            raise BuildError(
                impossible_selection(output),
                stdout=proc.tail(result.stdout),
                stderr=proc.tail(result.stderr),
            )
        manifest = parse_manifest(result.stdout)
        if not manifest:
            raise BuildError(
                "make manifest listed no packages",
                stdout=proc.tail(result.stdout),
                stderr=proc.tail(result.stderr),
            )
        return manifest

    def _check_versions(self, manifest: Mapping[str, str], applied: list[dict[str, Any]]) -> None:
        """Each ``packages_versions`` entry must be installed in that version.

        A requested name matches what installs it (:func:`installed_name`):
        itself, its ABI-suffixed or real form, or the installed provider of a
        provided name. A name a package change renamed is not checked.
        """
        request = self.request
        renamed = {str(c["source"]) for c in applied}
        aliases = self.catalog.aliases(request.version, request.target)
        offered = self.catalog.package_names(request.version, request.target) or frozenset()
        real = offered - aliases.keys()
        wrong = []
        for name, version in request.packages_versions:
            if name in renamed:
                continue
            installed = installed_name(name, manifest, aliases, real)
            got = manifest.get(installed) if installed is not None else None
            if got != version:
                what = got or "not installed"
                if installed not in (None, name):
                    what += f" as {installed}"
                wrong.append(f"{name} (requested {version}, got {what})")
        if wrong:
            raise BuildError(
                "Impossible package selection: package versions differ from the request: "
                + ", ".join(wrong)
            )

    def _image(self, ib: Path, words: list[str]) -> tuple[list[str], Path]:
        bin_dir = self.work / "bin"
        bin_dir.mkdir(parents=True)
        args = [
            "image",
            make_var("PROFILE", self.request.profile),
            make_packages(words),
            make_path("BIN_DIR", bin_dir),
            make_var("EXTRA_IMAGE_NAME", EXTRA_IMAGE_NAME),
        ]
        if self.request.defaults is not None:
            files = self.work / "files"
            fsutil.write_bytes(files / DEFAULTS_FILE, self.request.defaults.encode())
            args.append(make_path("FILES", files))
        if self.request.rootfs_size_mb is not None:
            args.append(make_var("ROOTFS_PARTSIZE", str(self.request.rootfs_size_mb)))
        result = self._make(ib, args, "image")
        output = result.stdout + "\n" + result.stderr
        too_big = _TOO_BIG.search(output)
        if too_big:
            line = next(ln for ln in output.splitlines() if _TOO_BIG.search(ln))
            raise BuildError(
                "Image too big: the selected packages do not fit the device's flash "
                f"({line.strip()[-160:]}); choose fewer packages",
                stdout=proc.tail(result.stdout),
                stderr=proc.tail(result.stderr),
            )
        if result.returncode != 0:
            raise BuildError(
                f"make image failed with exit code {result.returncode}",
                stdout=proc.tail(result.stdout),
                stderr=proc.tail(result.stderr),
            )
        return ["make", *args], bin_dir

    # --- results -----------------------------------------------------------------------

    def _collect(self, bin_dir: Path, staging: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Move the images of the profile (and filesystem) plus the metadata into staging."""
        try:
            document = fsutil.read_json(bin_dir / "profiles.json")
            entry = dict(document["profiles"][self.request.profile])
        except (OSError, ValueError, KeyError, TypeError):
            raise BuildError(
                f"The ImageBuilder wrote no profiles.json entry for {self.request.profile}"
            ) from None
        wanted = self.request.filesystem
        images: list[dict[str, Any]] = []
        for image in entry.get("images") or []:
            name = str(image.get("name", ""))
            if not _FILE_NAME.fullmatch(name):
                raise BuildError(f"The ImageBuilder listed an image with a bad name: {name!r}")
            if wanted and image.get("filesystem") not in (None, wanted):
                continue
            source = bin_dir / name
            if not source.is_file() or source.is_symlink():
                continue
            shutil.move(source, staging / name)
            published = dict(image)
            published["sha256"] = imagebuilder.file_sha256(staging / name)
            published.setdefault("sha256_unsigned", published["sha256"])
            images.append(published)
        self._check_complete(images)
        for path in sorted(bin_dir.iterdir()):
            if path.suffix == ".manifest" and _FILE_NAME.fullmatch(path.name):
                shutil.move(path, staging / path.name)
        shutil.move(bin_dir / "profiles.json", staging / "profiles.json")
        sums = "".join(f"{i['sha256']} *{i['name']}\n" for i in images)
        fsutil.write_bytes(staging / "sha256sums", sums.encode())
        top = {k: v for k, v in document.items() if k != "profiles"}
        return images, {**top, **entry}

    def _check_complete(self, images: list[dict[str, Any]]) -> None:
        """Every sysupgrade or factory image the index lists for the profile must be there."""
        wanted = self.request.filesystem
        request = self.request
        listed = self.catalog.profile(request.version, request.target, request.profile)
        expected = {
            str(image.get("type"))
            for image in (listed or {}).get("images", [])
            if image.get("type") in ("sysupgrade", "factory")
            and (not wanted or image.get("filesystem") in (None, wanted))
        }
        missing = sorted(expected - {str(image.get("type")) for image in images})
        if missing or not images:
            which = f"{wanted} " if wanted else ""
            kinds = " or ".join(missing) if missing else "any"
            raise BuildError(
                f"Image too big or not built: the ImageBuilder produced no {which}{kinds} "
                f"image for {self.request.profile}; try fewer packages"
            )

    def _body(
        self,
        profile: dict[str, Any],
        images: list[dict[str, Any]],
        manifest: dict[str, str],
        argv: list[str],
        archive: Archive,
        applied: list[dict[str, Any]],
    ) -> Built:
        request = self.request
        index = dict(self.catalog.target_profiles(request.version, request.target) or {})
        index_profile = dict((index.pop("profiles", None) or {}).get(request.profile) or {})
        timings = {
            name: round(self.timings.get(name, 0.0), 3)
            for name in ("download", "unpack", "workspace", "info", "manifest", "image", "total")
        }
        return Built.of(
            {**index, **index_profile, **profile},
            images=images,
            profile_id=request.profile,
            request_hash=self.key,
            build_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            manifest=manifest,
            build_cmd=shown_argv(argv),
            request=request.public_json(),
            package_changes=applied,
            reproducibility={
                "imagebuilder": archive.record(),
                "make_argv": shown_argv(argv),
                "timings": timings,
            },
        )

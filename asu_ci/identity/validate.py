"""Validate a :class:`BuildRequest` against the index and the server's limits.

The result, :class:`NormalizedRequest`, is the one form of a request that is
hashed, stored, dispatched and built: its profile is the canonical id, its
package set is sorted and de-duplicated. Every failure is a
:class:`RequestError` (400) or :class:`UnknownPackagesError` (422) whose
message is what the client shows.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

from asu_ci import knowledge
from asu_ci.config import Server
from asu_ci.errors import RequestError, UnknownPackagesError
from asu_ci.identity.request import BuildRequest


class Index(Protocol):
    """What validation needs to know about the rendered index."""

    def has_version(self, version: str) -> bool: ...

    def targets(self, version: str) -> Mapping[str, str]: ...

    def profile(self, version: str, target: str, name: str) -> Mapping[str, Any] | None: ...

    def package_names(self, version: str, target: str) -> frozenset[str] | None: ...

    def package_changes(self, version: str) -> list[Mapping[str, Any]]: ...

    def branch_of(self, version: str) -> Mapping[str, Any] | None: ...

    def revision(self, version: str, target: str) -> str | None: ...

    def target_profiles(self, version: str, target: str) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True)
class NormalizedRequest:
    """A validated request: every field that changes the image, and nothing else."""

    distro: str
    version: str
    version_code: str
    target: str
    profile: str
    packages: tuple[str, ...]
    packages_versions: tuple[tuple[str, str], ...] = ()
    diff_packages: bool = False
    filesystem: str | None = None
    rootfs_size_mb: int | None = None
    defaults: str | None = None
    repositories: tuple[tuple[str, str], ...] = ()
    repository_keys: tuple[str, ...] = ()
    repositories_mode: str = "append"
    client: str | None = field(default=None, compare=False)

    def image_fields(self) -> dict[str, Any]:
        """The fields that make up the request hash (``client`` is not one)."""
        return {
            "distro": self.distro,
            "version": self.version,
            "version_code": self.version_code,
            "target": self.target,
            "profile": self.profile,
            "packages": list(self.packages),
            "packages_versions": dict(self.packages_versions),
            "diff_packages": self.diff_packages,
            "filesystem": self.filesystem,
            "rootfs_size_mb": self.rootfs_size_mb,
            "defaults": self.defaults,
            "repositories": dict(self.repositories),
            "repository_keys": list(self.repository_keys),
            "repositories_mode": self.repositories_mode if self.repositories else None,
        }

    def to_json(self) -> dict[str, Any]:
        """The request as the build job takes it (queue row, dispatched job).

        ``defaults`` is in it: the job writes it into the image. ``client`` is
        not: nothing downstream of the endpoint needs what a requester calls
        itself.
        """
        data = self.image_fields()
        data["repositories_mode"] = self.repositories_mode
        return data

    def public_json(self) -> dict[str, Any]:
        """The ``request`` object of a shared answer (``build.json``, the 200 body).

        Every requester of the hash reads it, so it holds only what makes the
        image: no ``client``, and ``defaults`` (first-boot scripts carry
        passwords) only as ``defaults_sha256``.
        """
        data = self.to_json()
        if self.defaults is not None:
            del data["defaults"]
            data["defaults_sha256"] = hashlib.sha256(self.defaults.encode()).hexdigest()
        return data

    @classmethod
    def from_request(cls, req: BuildRequest, profile: str | None = None) -> NormalizedRequest:
        """The canonical form of a parsed request, with ``profile`` resolved by the index."""
        return cls(
            distro=req.distro,
            version=req.version,
            version_code=req.version_code,
            target=req.target,
            profile=req.profile if profile is None else profile,
            packages=tuple(sorted(req.packages)),
            packages_versions=tuple(sorted(req.packages_versions.items())),
            diff_packages=req.diff_packages,
            filesystem=req.filesystem,
            rootfs_size_mb=req.rootfs_size_mb,
            defaults=req.defaults,
            repositories=tuple(sorted(req.repositories.items())),
            repository_keys=tuple(req.repository_keys),
            repositories_mode=req.repositories_mode,
            client=req.client,
        )

    def requested_packages(self) -> list[str]:
        """What to hand the ImageBuilder: ``packages`` plus the keys of ``packages_versions``."""
        words = dict.fromkeys(self.packages)
        for name, _ in self.packages_versions:
            words.setdefault(name, None)
        return list(words)


def revision_number(version_code: str) -> int | None:
    """``r24012-d8dd03c46f`` → 24012."""
    match = re.match(r"^r([0-9]+)-", version_code)
    return int(match.group(1)) if match else None


def apply_package_changes(
    packages: Iterable[str],
    changes: Iterable[Mapping[str, Any]],
    revision: int | None,
    *,
    version: str = "",
    target: str = "",
    profile: str = "",
    offered: Collection[str] | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Carry a package list across releases: the branch's ``changes`` that took effect
    at or before ``revision`` (all of them when it is unknown), then the shipped rules of
    ``version`` for ``target`` and ``profile`` (:mod:`asu_ci.knowledge`).

    A change with ``source`` and ``target`` renames ``source`` (also ``-source``); one
    with only ``source`` adds it and one with only ``target`` removes it, whatever the
    request says, when ``mandatory``. A removal always drops the name from the request.
    With ``offered`` (the names the release offers for the target, when known) nothing
    is renamed to or added as a name it does not offer, so a change never turns a
    request the release could build into one it cannot.

    Returns the new list and the records of what was applied, for build.json.
    """
    words = list(packages)
    applied: list[dict[str, Any]] = []
    for change in changes:
        rev = int(change.get("revision") or 0)
        if revision is not None and revision < rev:
            continue
        source, renamed = change.get("source"), change.get("target")
        mandatory = bool(change.get("mandatory"))
        record = {"source": source, "target": renamed, "revision": rev}
        if mandatory:
            record["mandatory"] = True
        if _apply_change(words, source, renamed, mandatory, offered):
            applied.append(record)
    if version:
        rules = knowledge.load().rules_for(version, target, profile)
        applied += knowledge.apply_rules(words, rules, offered)
    return [w for w in dict.fromkeys(words) if w], applied


def offered_names(index: Index, version: str, target: str, profile: str) -> frozenset[str] | None:
    """The names a request for ``profile`` may name: the index's packages of the target
    and the profile's default and device packages; None when the index has no list."""
    known = index.package_names(version, target)
    found = index.profile(version, target, profile)
    if known is None or found is None:
        return None
    builtin = [*found.get("default_packages", []), *found.get("device_packages", [])]
    return known | frozenset(str(name) for name in builtin)


def _apply_change(
    words: list[str],
    source: str | None,
    target: str | None,
    mandatory: bool,
    offered: Collection[str] | None,
) -> bool:
    """Apply one change to ``words`` in place; True when it changed something."""
    if source and target:
        if offered is not None and target not in offered:
            return False
        hits = [i for i, w in enumerate(words) if w.lstrip("-") == source]
        for i in hits:
            words[i] = f"-{target}" if words[i].startswith("-") else target
        return bool(hits)
    if source:  # added
        if not mandatory or source in words or (offered is not None and source not in offered):
            return False
        words[:] = [w for w in words if w != f"-{source}"]
        words.append(source)
        return True
    if target:  # removed
        before = len(words)
        words[:] = [w for w in words if w.lstrip("-") != target]
        if mandatory and offered is not None and target in offered:
            words.append(f"-{target}")
        return len(words) != before or (mandatory and f"-{target}" in words)
    return False


def normalize(request: BuildRequest, index: Index, server: Server) -> NormalizedRequest:
    """Check ``request`` against the index and the limits; return its canonical form.

    The index step of :func:`asu_ci.identity.identify.identify`, which every
    entry point calls (it resolves profile and revision first).
    """
    if not index.has_version(request.version):
        raise RequestError(f"Unsupported version: {request.version}")
    targets = index.targets(request.version)
    if request.target not in targets:
        raise RequestError(f"Unsupported target: {request.target}")
    profile = index.profile(request.version, request.target, request.profile)
    if profile is None:
        raise RequestError(f"Unsupported profile: {request.profile}")
    profile_id = str(profile["id"])
    _check_limits(request, server)
    normalized = _without_no_ops(
        NormalizedRequest.from_request(request, profile_id), index, profile
    )
    _check_filesystem(normalized, profile)
    _check_packages(normalized, index, profile)
    return normalized


def installed_by_default(profile: Mapping[str, Any]) -> set[str]:
    """What the profile's image holds without any request: the target's default
    packages with the device's own additions and removals (``-name``)."""
    device = [str(p) for p in profile.get("device_packages", [])]
    removed = {p[1:] for p in device if p.startswith("-")}
    base = {str(p) for p in profile.get("default_packages", [])} - removed
    return base | {p for p in device if not p.startswith("-")}


def _without_no_ops(
    request: NormalizedRequest, index: Index, profile: Mapping[str, Any]
) -> NormalizedRequest:
    """Drop what cannot change the image, so it cannot change the hash either:

    - keys for extra repositories when there are none;
    - ``-name`` for a package the image does not hold anyway;
    - without ``diff_packages``, a package the image holds anyway.

    A name some package change of the branch renames is kept as it is: the
    rename (applied at build time) may give it an effect.
    """
    installed = installed_by_default(profile)
    renamed = {str(c.get("source")) for c in index.package_changes(request.version)}

    def no_op(word: str) -> bool:
        name = word.removeprefix("-")
        if name in renamed:
            return False
        if word.startswith("-"):
            return name not in installed
        return not request.diff_packages and name in installed

    packages = tuple(w for w in request.packages if not no_op(w))
    keys = request.repository_keys if request.repositories else ()
    if packages == request.packages and keys == request.repository_keys:
        return request
    return replace(request, packages=packages, repository_keys=keys)


def _check_limits(request: BuildRequest, server: Server) -> None:
    if request.defaults is not None:
        if not server.allow_defaults:
            raise RequestError("Handling of defaults (a first-boot script) is disabled here")
        size = len(request.defaults.encode())
        if size > server.max_defaults_length:
            raise RequestError(
                f"defaults is {size} bytes, more than this server's limit of "
                f"{server.max_defaults_length}"
            )
    if request.rootfs_size_mb is not None and (
        request.rootfs_size_mb > server.max_custom_rootfs_size_mb
    ):
        raise RequestError(
            f"rootfs_size_mb {request.rootfs_size_mb} is larger than this server's limit of "
            f"{server.max_custom_rootfs_size_mb}"
        )
    for name, url in request.repositories.items():
        host = urlsplit(url).hostname or ""
        if not host_allowed(host, server.repository_allow_list):
            raise RequestError(
                f"Repository {name} ({host}) is not on this server's allow-list; "
                "ask its operator to add the host"
            )


def host_allowed(host: str, allow_list: Iterable[str]) -> bool:
    """Whether ``host`` is on the allow-list: an entry names one host exactly; only an
    entry ``*.example.org`` admits the hosts under it (never under an IP address)."""
    host = host.lower().rstrip(".")
    for entry in allow_list:
        wildcard = entry.startswith("*.")
        named = entry[2:] if wildcard else entry
        allowed = ((urlsplit(named).hostname if "://" in named else named) or "").lower()
        allowed = allowed.rstrip(".")
        if not allowed:
            continue
        if host == allowed:
            return True
        if wildcard and not _is_ip(allowed) and host.endswith("." + allowed):
            return True
    return False


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _check_filesystem(request: NormalizedRequest, profile: Mapping[str, Any]) -> None:
    if request.filesystem is None:
        return
    filesystems = {img.get("filesystem") for img in profile.get("images", [])}
    filesystems.discard(None)
    if filesystems and request.filesystem not in filesystems:
        offered = ", ".join(sorted(str(f) for f in filesystems))
        raise RequestError(
            f"Unsupported filesystem: {request.filesystem} (this profile offers {offered})"
        )


def _check_packages(request: NormalizedRequest, index: Index, profile: Mapping[str, Any]) -> None:
    known = index.package_names(request.version, request.target)
    if known is None or request.repositories:
        # Packages may come from the request's own feeds, which the index does not list;
        # the ImageBuilder decides (an impossible selection fails the build with its detail).
        return
    changes = index.package_changes(request.version)
    builtin = set(profile.get("default_packages", [])) | set(profile.get("device_packages", []))
    wanted, _ = apply_package_changes(
        request.requested_packages(),
        changes,
        revision_number(request.version_code),
        version=request.version,
        target=request.target,
        profile=request.profile,
        offered=known | builtin,
    )
    unknown = [w for w in wanted if not w.startswith("-") and w not in known and w not in builtin]
    if unknown:
        raise UnknownPackagesError(unknown)

"""Prebuild lists: build popular profiles ahead of any request.

A list is YAML: a sequence of requests, each a mapping with at least
``version``, ``target`` and ``profile`` (``packages``, ``defaults`` and every
other field of a build request are allowed)::

    - {version: 23.05.4, target: ath79/generic, profile: tplink_archer-c7-v5, packages: [luci]}
    - {version: 23.05.4, target: ath79/generic, profile: glinet_gl-ar300m16}

:func:`plan` validates every entry exactly as the endpoint would, groups the
requests by (version, target) — so a runner downloads and unpacks each
ImageBuilder once and builds every profile of the group with it — and marks
the ones already published. :func:`run` builds what the plan says; a second
run of the same list builds nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from asu_ci.build.job import BuildStore, run_build
from asu_ci.config import Settings
from asu_ci.errors import AsuCiError, UsageError
from asu_ci.identity.identify import Identity, identify
from asu_ci.identity.request import BuildRequest
from asu_ci.identity.validate import NormalizedRequest
from asu_ci.index.catalog import Catalog
from asu_ci.publish import retention
from asu_ci.publish.local import LocalStore
from asu_ci.upstream.source import Upstream


@dataclass(frozen=True)
class Planned:
    """One request of the list: its position (1-based), normal form and hash."""

    number: int
    request: NormalizedRequest
    hash: str
    published: bool

    def label(self) -> str:
        return f"{self.request.profile} ({self.hash[:12]})"


@dataclass(frozen=True)
class Group:
    """The requests that share one ImageBuilder."""

    version: str
    target: str
    entries: tuple[Planned, ...]

    @property
    def key(self) -> tuple[str, str]:
        return (self.version, self.target)

    @property
    def todo(self) -> tuple[Planned, ...]:
        return tuple(e for e in self.entries if not e.published)


@dataclass(frozen=True)
class Plan:
    """What a prebuild run will do, group by group."""

    groups: tuple[Group, ...]

    @property
    def requests(self) -> int:
        return sum(len(g.entries) for g in self.groups)

    @property
    def todo(self) -> int:
        return sum(len(g.todo) for g in self.groups)

    def lines(self) -> list[str]:
        """A header line, then one line per ImageBuilder group."""
        lines = [
            f"plan: {self.requests} request(s) in {len(self.groups)} ImageBuilder group(s): "
            f"{self.todo} to build, {self.requests - self.todo} already published"
        ]
        for group in self.groups:
            names = ", ".join(e.request.profile for e in group.todo) or "-"
            lines.append(
                f"  {group.version} {group.target}: {len(group.todo)} to build, "
                f"{len(group.entries) - len(group.todo)} published; builds: {names}"
            )
        return lines


@dataclass
class Summary:
    built: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0
    failures: list[tuple[Planned, str]] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"prebuild: built {self.built}, skipped {self.skipped}, failed {self.failed}, "
            f"{self.seconds:.1f} s"
        )


def read_list(path: Path) -> list[Any]:
    """The entries of a prebuild list file; :class:`UsageError` if it is not one."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the prebuild list ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UsageError(f"{path}: not valid YAML{where}") from None
    if not isinstance(data, list):
        raise UsageError(
            f"{path}: a prebuild list is a YAML sequence of requests "
            "(- {version: ..., target: ..., profile: ...})"
        )
    return data


def _validate(item: Any, catalog: Catalog, settings: Settings) -> Identity:
    """One entry as the endpoint would take it; ValueError naming the problem.

    A list is the operator's own file, so a field the endpoint would ignore
    (a typo) is refused here.
    """
    if not isinstance(item, dict):
        raise ValueError("not a mapping of request fields")
    unknown = sorted(str(k) for k in item if k not in BuildRequest.model_fields)
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(unknown)}")
    try:
        return identify(item, catalog, settings.server)
    except AsuCiError as exc:
        raise ValueError(exc.message) from None


def plan(
    items: Sequence[Any],
    *,
    catalog: Catalog,
    settings: Settings,
    store: BuildStore,
    source: str = "prebuild list",
) -> Plan:
    """Validate ``items``, drop duplicates, group by (version, target), mark published."""
    groups: dict[tuple[str, str], list[Planned]] = {}
    seen: set[str] = set()
    for number, item in enumerate(items, start=1):
        try:
            found = _validate(item, catalog, settings)
        except ValueError as exc:
            raise UsageError(f"{source}: entry {number} of {len(items)}: {exc}") from None
        request, key = found.request, found.hash
        if key in seen:
            continue
        seen.add(key)
        planned = Planned(number, request, key, store.build(key) is not None)
        groups.setdefault((request.version, request.target), []).append(planned)
    return Plan(tuple(Group(v, t, tuple(entries)) for (v, t), entries in groups.items()))


def _keep(store: BuildStore, key: str) -> None:
    if isinstance(store, LocalStore):
        retention.mark_kept(store, key)


def run(
    prepared: Plan,
    *,
    settings: Settings,
    store: BuildStore,
    catalog: Catalog,
    upstream: Upstream | None = None,
    on_result: Callable[[Planned, str | None], None] | None = None,
    force: bool = False,
) -> Summary:
    """Build every request of the plan not yet published, one ImageBuilder group at a time.

    A failed request does not stop the others; ``on_result(entry, error)``
    hears each one (``error`` None for a success). ``force`` retries a recent
    failure at once. In a :class:`LocalStore`, every published entry (built
    now or before) is marked kept for good (:func:`retention.mark_kept`).
    """
    started = time.monotonic()
    summary = Summary()
    owned = upstream is None
    source = upstream or Upstream(
        settings.upstream,
        settings.data_dir / "cache" / "upstream",
        bound=settings.upstream_timeout_seconds,
    )
    try:
        for group in prepared.groups:
            summary.skipped += len(group.entries) - len(group.todo)
            for entry in group.entries:
                if entry.published:
                    _keep(store, entry.hash)
            for entry in group.todo:
                error: str | None = None
                try:
                    run_build(
                        entry.request,
                        settings=settings,
                        store=store,
                        catalog=catalog,
                        upstream=source,
                        force=force,
                    )
                except AsuCiError as exc:
                    error = exc.message
                    summary.failed += 1
                    summary.failures.append((entry, error))
                else:
                    summary.built += 1
                    _keep(store, entry.hash)
                if on_result is not None:
                    on_result(entry, error)
    finally:
        if owned:
            source.close()
    summary.seconds = time.monotonic() - started
    return summary

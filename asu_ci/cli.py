"""The ``asu-ci`` command line: one Typer app, the same option names everywhere.

Every option also has an ``ASU_CI_<NAME>`` env var and a key in the YAML
config; flags win over env, env over the file, the file over defaults.
Only :class:`~asu_ci.errors.AsuCiError` is caught here: it becomes one line on
stderr and its exit code.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from asu_ci import __version__
from asu_ci.config import Settings, load_settings
from asu_ci.errors import AsuCiError


class _Group(TyperGroup):
    """Turns an :class:`AsuCiError` from any command into one line and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except AsuCiError as exc:
            typer.echo(f"asu-ci: {exc.message}", err=True)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="asu-ci",
    help="Attended SysUpgrade for OpenWrt as a CI-driven static build farm.\n\n"
    "Renders a static index of the upstream download server, builds custom "
    "firmware with the official ImageBuilder and serves the ASU API that LuCI, "
    "auc, owut and the Firmware Selector talk to.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="YAML configuration file [default: ./asu-ci.yaml].",
        envvar="ASU_CI_CONFIG",
        show_envvar=True,
    ),
]
UpstreamOpt = Annotated[
    str | None,
    typer.Option(
        "--upstream",
        help="Download server URL or a local folder in its layout.",
        show_default="https://downloads.openwrt.org",
    ),
]
PublicOpt = Annotated[
    Path | None,
    typer.Option(
        "--public", help="The static tree to write and serve.", show_default="asu-ci-data/public"
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Caches, ImageBuilders and the queue database.",
        show_default="asu-ci-data/data",
    ),
]


class State:
    """What the top-level options leave for the commands."""

    def __init__(self) -> None:
        self.config: Path | None = None
        self.verbose = False

    def settings(self, **overrides: Any) -> Settings:
        from asu_ci import knowledge

        settings = load_settings(self.config, overrides)
        for warning in knowledge.unsigned_warnings(settings):
            typer.echo(f"asu-ci: warning: {warning}", err=True)
        return settings


def _version(value: bool) -> None:
    if value:
        typer.echo(f"asu-ci {__version__}")
        raise typer.Exit(0)


@app.callback()
def _top(
    ctx: typer.Context,
    config: ConfigOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every step.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_version
        ),
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        # urllib3 logs each GET retry; the one-line error at the end says enough.
        logging.getLogger("urllib3").setLevel(logging.ERROR)
    state = State()
    state.config = config
    state.verbose = verbose
    ctx.obj = state


def main() -> None:
    """Entry point of the console script."""
    app()


@app.command()
def render(
    ctx: typer.Context,
    upstream: UpstreamOpt = None,
    public: PublicOpt = None,
    data: DataOpt = None,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="VERSION",
            help="Read only this release from upstream again (repeatable); the others keep "
            "what the last render made (releases never rendered are read anyway).",
        ),
    ] = None,
) -> None:
    """Render the static index from the upstream download server.

    Writes json/v1/ (what LuCI, auc and owut read) and the download-server
    files the Firmware Selector reads. Only what changed upstream is fetched
    and written again.
    """
    from asu_ci.index.render import render_tree

    settings = ctx.obj.settings(upstream=upstream, public=public, data=data)
    with _progress_bar("rendering", ctx.obj.verbose) as on_progress:
        summary = render_tree(settings, on_progress=on_progress, only=set(only) if only else None)
    typer.echo(summary.line())


def _progress_lines(title: str) -> Callable[[int, int, str], None]:
    """Progress as log lines (``-v`` without a terminal): one per tenth of the work."""
    shown = [-1]

    def update(done: int, total: int, label: str) -> None:
        tenth = done * 10 // total if total else 0
        if tenth != shown[0] or done == total:
            shown[0] = tenth
            typer.echo(f"{title}: {done}/{total} {label}", err=True)

    return update


@contextlib.contextmanager
def _progress_bar(
    title: str, verbose: bool = False
) -> Iterator[Callable[[int, int, str], None] | None]:
    """A progress bar on stderr when it is a terminal; progress lines there with
    ``verbose``; ``None`` (no progress shown) otherwise."""
    if not sys.stderr.isatty():
        yield _progress_lines(title) if verbose else None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn(title),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, description=label)

        yield update


@app.command()
def serve(
    ctx: typer.Context,
    upstream: UpstreamOpt = None,
    public: PublicOpt = None,
    data: DataOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Builds run at once by the local backend.")
    ] = None,
) -> None:
    """Start the endpoint, the build workers and the static tree on one address.

    On first start with no index it renders one from the upstream server;
    while it runs, the index is re-rendered in the background every
    index.refresh_seconds (what moves upstream only: .versions.json and the
    snapshot tree). Clients use http://HOST:PORT/ as their ASU server URL.
    """
    from asu_ci.api import server
    from asu_ci.api.app import create_app
    from asu_ci.index.catalog import Catalog
    from asu_ci.index.refresh import Refresher

    settings = ctx.obj.settings(
        upstream=upstream, public=public, data=data, host=host, port=port, workers=workers
    )
    sock = server.listen(settings)  # a busy port fails now, not after a long render
    first_in = 0.0
    if not Catalog(settings.public_dir).rendered():
        typer.echo(f"no index in {settings.public_dir} yet: rendering it first", err=True)
        ctx.invoke(render, ctx=ctx, upstream=upstream, public=public, data=data)
        first_in = settings.index.refresh_seconds
    # Each build's outcome is logged whatever the level (hash, profile, seconds, reason).
    logging.getLogger("asu_ci.builds").setLevel(logging.INFO)
    typer.echo(
        f"asu-ci {__version__} serving {settings.public_dir} on http://{settings.host}:"
        f"{settings.port}/ ({settings.backend} backend, {settings.worker_count} worker(s); "
        + (
            f"index re-rendered every {settings.index.refresh_seconds:g} s)"
            if settings.index.refresh_seconds > 0
            else "index not re-rendered)"
        ),
        err=True,
    )
    app_ = create_app(settings, refresher=Refresher(settings, first_in=first_in))
    server.run(app_, settings, sock)


def _read_request(source: str) -> dict[str, Any]:
    """The JSON request of ``--request FILE|-``; UsageError when it cannot be read."""
    import json

    from asu_ci.errors import UsageError

    where = "stdin" if source == "-" else source
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as exc:
        raise UsageError(f"{where}: cannot read the request ({exc.strerror})") from None
    except ValueError as exc:
        raise UsageError(f"{where}: the request is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{where}: the request must be a JSON object")
    return data


def _download_bar(
    stack: contextlib.ExitStack, verbose: bool = False
) -> Callable[[int, int | None], None] | None:
    """A download progress bar on stderr when it is a terminal; with ``verbose``
    a line per tenth of the download there; ``None`` otherwise."""
    if not sys.stderr.isatty():
        if not verbose:
            return None
        lines = _progress_lines("ImageBuilder download (bytes)")

        def update_lines(done: int, total: int | None) -> None:
            if total:
                lines(done, total, "")

        return update_lines
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    bar = stack.enter_context(
        Progress(
            TextColumn("ImageBuilder"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
    )
    task = bar.add_task("", total=None)

    def update(done: int, total: int | None) -> None:
        bar.update(task, completed=done, total=total)

    return update


def _step_lines() -> Callable[[str], None]:
    """Each build step as a line on stderr (``-v``)."""

    def step(name: str) -> None:
        typer.echo(f"step: {name}", err=True)

    return step


@app.command()
def build(
    ctx: typer.Context,
    request: Annotated[
        str, typer.Option("--request", help="The build request: a JSON file, or - for stdin.")
    ],
    upstream: UpstreamOpt = None,
    public: PublicOpt = None,
    data: DataOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and say what would be built; build nothing.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Try a recently failed request again now.")
    ] = False,
    expect_hash: Annotated[
        str | None,
        typer.Option(
            "--expect-hash",
            help="Refuse to build unless the request hashes to this (a dispatched job's "
            "hash input).",
        ),
    ] = None,
) -> None:
    """Build one request with the ImageBuilder and publish it to the store.

    This is what a CI job and a local worker run. Prints the request hash and
    the plan first and one summary line at the end. Exit code 4: the build
    failed (the detail is on stderr); 2: the request is not valid.
    """
    import time

    from asu_ci.build.job import run_build
    from asu_ci.errors import UsageError
    from asu_ci.identity.identify import Identity, identify, parse
    from asu_ci.index.catalog import Catalog
    from asu_ci.publish.local import LocalStore

    settings = ctx.obj.settings(upstream=upstream, public=public, data=data)
    raw = _read_request(request)
    catalog = Catalog(settings.public_dir)
    if not catalog.rendered():
        raise UsageError(f"no index in {settings.public_dir}: run asu-ci render first")
    store = LocalStore(settings.public_dir / "store")
    given = parse(raw)
    try:
        found = identify(given, catalog, settings.server)
    except AsuCiError:
        if dry_run:
            raise
        # The build job validates again, records the failure under this hash and raises.
        found = Identity.unchecked(given)
    found.check(expect_hash)
    normalized, key = found.request, found.hash
    for note in found.notes:
        typer.echo(f"note: {note}", err=True)
    folder = store.folder(key)
    extras = "".join(
        f", {word}"
        for word, on in (
            ("diff_packages", normalized.diff_packages),
            ("defaults", normalized.defaults is not None),
            (f"filesystem {normalized.filesystem}", normalized.filesystem is not None),
            ("custom repositories", bool(normalized.repositories)),
        )
        if on
    )
    state = "already built" if store.build(key) is not None else "to build"
    typer.echo(
        f"build {key}: {normalized.version} {normalized.target} {normalized.profile}, "
        f"{len(normalized.requested_packages())} package(s){extras}; {state} in {folder}"
    )
    if dry_run:
        return
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        body = run_build(
            normalized,
            settings=settings,
            store=store,
            catalog=catalog,
            force=force,
            on_step=_step_lines() if ctx.obj.verbose else None,
            on_progress=_download_bar(stack, ctx.obj.verbose),
        )
    typer.echo(
        f"built {key}: {len(body.get('images', []))} image(s), "
        f"{time.monotonic() - started:.1f} s, {folder}"
    )


@app.command()
def prebuild(
    ctx: typer.Context,
    list_file: Annotated[
        Path, typer.Argument(metavar="LIST.yaml", help="YAML list of requests to build.")
    ],
    upstream: UpstreamOpt = None,
    public: PublicOpt = None,
    data: DataOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate the list and print the plan only.")
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Try recently failed entries again now.")
    ] = False,
) -> None:
    """Build a YAML list of popular profiles before anyone asks for them.

    Entries are build requests ({version, target, profile, packages?,
    defaults?, ...}). They are grouped by (version, target), so each
    ImageBuilder is unpacked once; published ones are skipped, so a second run
    builds nothing. What the list names is kept in the store for good (an
    entry with defaults excepted: it expires after store.defaults_minutes).
    Exit code 4 when any build failed.
    """
    from asu_ci.build import prebuild as prebuilding
    from asu_ci.errors import BuildError, UsageError
    from asu_ci.index.catalog import Catalog
    from asu_ci.publish.local import LocalStore

    settings = ctx.obj.settings(upstream=upstream, public=public, data=data)
    catalog = Catalog(settings.public_dir)
    if not catalog.rendered():
        raise UsageError(f"no index in {settings.public_dir}: run asu-ci render first")
    store = LocalStore(settings.public_dir / "store")
    items = prebuilding.read_list(list_file)
    plan = prebuilding.plan(
        items, catalog=catalog, settings=settings, store=store, source=str(list_file)
    )
    for line in plan.lines():
        typer.echo(line)
    if dry_run:
        return

    def report(entry: prebuilding.Planned, error: str | None) -> None:
        if error is not None:
            typer.echo(f"failed entry {entry.number} {entry.label()}: {error}", err=True)

    summary = prebuilding.run(
        plan, settings=settings, store=store, catalog=catalog, on_result=report, force=force
    )
    typer.echo(summary.line())
    if summary.failed:
        raise typer.Exit(BuildError.exit_code)


@app.command()
def matrix(
    list_file: Annotated[
        Path, typer.Argument(metavar="LIST.yaml", help="YAML list of requests (as for prebuild).")
    ],
    version: Annotated[
        str | None,
        typer.Option(help="With --target: print that job's entries as a prebuild list (YAML)."),
    ] = None,
    target: Annotated[str | None, typer.Option(help="See --version.")] = None,
) -> None:
    """Print the GitHub Actions matrix of a prebuild list: one job per (version, target).

    The JSON {"include": [{"version", "target", "profiles"}]} is sorted and
    fits `strategy.matrix: ${{ fromJSON(...) }}`; a matrix holds at most 256
    jobs, so a longer list is refused. With --version and --target it prints
    the entries of that one job instead, for `asu-ci prebuild`.
    """
    import json

    import yaml

    from asu_ci.build.matrix import matrix as actions_matrix
    from asu_ci.build.matrix import select
    from asu_ci.build.prebuild import read_list
    from asu_ci.errors import UsageError

    entries = read_list(list_file)
    if (version is None) != (target is None):
        raise UsageError("--version and --target go together")
    if version is None or target is None:
        typer.echo(json.dumps(actions_matrix(entries, str(list_file)), separators=(",", ":")))
        return
    chosen = select(entries, version, target)
    if not chosen:
        raise UsageError(f"{list_file}: no entry for {version} {target}")
    typer.echo(yaml.safe_dump(chosen, sort_keys=False, allow_unicode=True), nl=False)


@app.command()
def prune(
    ctx: typer.Context,
    public: PublicOpt = None,
    data: DataOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what has expired; remove nothing.")
    ] = False,
) -> None:
    """Remove expired builds from the local store (serve does this on its own).

    Prebuilt profiles stay. An on-demand build expires store.keep_days after it
    was last asked for, a failed request store.keep_failed_days after it failed;
    requests in flight are never touched. A removed build is built again when
    someone asks for it.
    """
    from asu_ci.publish.retention import prune as prune_store

    settings = ctx.obj.settings(public=public, data=data)
    summary = prune_store(settings, dry_run=dry_run)
    if dry_run:
        for name in summary.removed:
            typer.echo(name)
        typer.echo(
            f"{len(summary.removed)} expired ({summary.bytes_freed / 1e6:.1f} MB), "
            f"{summary.kept} kept; nothing removed (--dry-run)",
            err=True,
        )
    else:
        typer.echo(summary.line())


release_app = typer.Typer(
    help="GitHub Releases as the store (tag build-<hash>): publish builds, mirror them back.\n\n"
    "Uses github.repository, github.api_url and the token in $GITHUB_TOKEN "
    "(github.token_env).",
    no_args_is_help=True,
)
app.add_typer(release_app, name="release")

HashesArg = Annotated[
    list[str] | None, typer.Argument(metavar="[HASH]...", help="Request hashes (64 hex).")
]


def _hashes(values: list[str] | None) -> list[str]:
    from asu_ci.errors import UsageError
    from asu_ci.identity.hashing import is_request_hash

    bad = [v for v in values or [] if not is_request_hash(v)]
    if bad:
        raise UsageError(f"not a request hash (64 lowercase hex digits): {bad[0][:80]!r}")
    return list(values or [])


@release_app.command("publish")
def release_publish(ctx: typer.Context, hashes: HashesArg = None, public: PublicOpt = None) -> None:
    """Upload builds of the local store to GitHub Releases.

    For each HASH (default: every folder of <public>/store/ that a build on
    this machine left): a finished build goes up file by file, build.json
    last, so a release with build.json is complete. A failed one makes no
    release (it would take the tag build-<hash> from a later retry); the
    endpoint reads its status.json from the run's artifact. Re-runs upload
    nothing twice and never touch a complete release.
    """
    from asu_ci.publish.local import LocalStore
    from asu_ci.publish.releases import ReleasesStore, built_here, publish_folder

    settings = ctx.obj.settings(public=public)
    local = LocalStore(settings.public_dir / "store")
    todo = _hashes(hashes) or built_here(local)
    releases = ReleasesStore(settings.github, attempts=5)
    try:
        for request_hash in todo:
            typer.echo(f"{request_hash}: {publish_folder(releases, local, request_hash)}", err=True)
    finally:
        releases.close()
    typer.echo(f"release publish: {len(todo)} build(s) in {settings.github.repository}")


@release_app.command("verify")
def release_verify(
    ctx: typer.Context,
    request_hash: Annotated[str, typer.Argument(metavar="HASH", help="Request hash (64 hex).")],
    attestation: Annotated[
        str | None,
        typer.Option(help="URL of the artifact attestation of the images, written to build.json."),
    ] = None,
    public: PublicOpt = None,
) -> None:
    """Check every image of <public>/store/HASH against the sha256 build.json names.

    The publishing job runs it on the build job's output before creating the
    release; a missing or altered image exits 3.
    """
    from asu_ci.errors import UsageError
    from asu_ci.publish.local import LocalStore
    from asu_ci.publish.releases import verify_folder

    (checked,) = _hashes([request_hash])
    if attestation is not None and not re.fullmatch(r"https://[!-~]{1,2000}", attestation):
        raise UsageError("--attestation must be an https URL")
    settings = ctx.obj.settings(public=public)
    count = verify_folder(LocalStore(settings.public_dir / "store"), checked, attestation)
    typer.echo(f"release verify: {count} image(s) of {checked} match build.json")


@release_app.command("prune-drafts")
def release_prune_drafts(
    ctx: typer.Context,
    older_than: Annotated[
        int,
        typer.Option(
            "--older-than",
            metavar="MINUTES",
            min=1,
            help="Only drafts created longer ago than this (a publish job times out after 30).",
        ),
    ] = 120,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say which drafts would go; delete nothing.")
    ] = False,
) -> None:
    """Delete draft releases build-<hash> that interrupted publish jobs left.

    Reads the releases newest first (at most 10 pages of 100: GitHub lists
    the first 1,000 only) and deletes each draft of a build tag older than
    --older-than. Published releases and other drafts are never touched.
    Run it often enough that a draft is swept before 1,000 newer releases
    hide it (pages.yml: hourly). Needs a token that can push (contents: write).
    """
    from datetime import datetime, timedelta

    from asu_ci.publish.releases import LISTED_PAGES, PAGE_SIZE, ReleasesStore, prune_drafts

    settings = ctx.obj.settings()

    def say(tag: str, ident: int, created: datetime) -> None:
        when = created.strftime("%Y-%m-%dT%H:%M:%SZ")
        typer.echo(
            f"{tag} (draft {ident}, created {when}): {'would delete' if dry_run else 'deleted'}"
        )

    releases = ReleasesStore(settings.github, attempts=5)
    try:
        sweep = prune_drafts(
            releases, older_than=timedelta(minutes=older_than), dry_run=dry_run, on_draft=say
        )
    finally:
        releases.close()
    if sweep.cut_off:
        reach = sweep.reach.strftime("%Y-%m-%dT%H:%M:%SZ") if sweep.reach else "?"
        typer.echo(
            f"stopped after {LISTED_PAGES} pages of {PAGE_SIZE}: GitHub lists no older "
            f"releases, so drafts created before {reach} are not seen; run prune-drafts "
            "more often than that span (pages.yml runs it hourly)",
            err=True,
        )
    done = "to delete (--dry-run: none deleted)" if dry_run else "deleted"
    typer.echo(
        f"release prune-drafts: {len(sweep.old)} draft(s) {done}, {sweep.young} younger than "
        f"{older_than} min kept, {sweep.listed} release(s) listed in {settings.github.repository}"
    )


@release_app.command("pull")
def release_pull(
    ctx: typer.Context,
    hashes: HashesArg = None,
    list_file: Annotated[
        Path | None,
        typer.Option(
            "--list",
            metavar="LIST.yaml",
            help="The requests of a prebuild list (needs the index).",
        ),
    ] = None,
    everything: Annotated[
        bool, typer.Option("--all", help="Every complete release of the repository (by its tag).")
    ] = False,
    upstream: UpstreamOpt = None,
    public: PublicOpt = None,
    data: DataOpt = None,
) -> None:
    """Mirror finished builds from GitHub Releases into <public>/store/.

    Copies build.json (and the 200 status.json) of each complete release, so
    the static tree answers for it and build/prebuild skip it. Prints one line
    for $GITHUB_OUTPUT: complete=true when every HASH (and list entry) is
    published, else complete=false. --all finds the builds by their tags
    (build-*), not by the release listing, which GitHub cuts off at 1,000.
    """
    from asu_ci.errors import UsageError
    from asu_ci.publish.local import LocalStore
    from asu_ci.publish.releases import ReleasesStore, pull, pull_all

    settings = ctx.obj.settings(upstream=upstream, public=public, data=data)
    local = LocalStore(settings.public_dir / "store")
    wanted = _hashes(hashes)
    if list_file is not None:
        from asu_ci.build.prebuild import plan, read_list
        from asu_ci.index.catalog import Catalog

        catalog = Catalog(settings.public_dir)
        if not catalog.rendered():
            raise UsageError(f"no index in {settings.public_dir}: run asu-ci render first")
        planned = plan(
            read_list(list_file),
            catalog=catalog,
            settings=settings,
            store=local,
            source=str(list_file),
        )
        wanted += [e.hash for g in planned.groups for e in g.entries]
    if not wanted and not everything:
        raise UsageError("name hashes, --list LIST.yaml or --all")
    releases = ReleasesStore(settings.github, attempts=5)
    missing = 0
    try:
        if everything:
            mirrored, complete = pull_all(releases, local)
            typer.echo(f"{complete} complete release(s), {mirrored} mirrored now", err=True)
        for request_hash in dict.fromkeys(wanted):
            found = pull(releases, local, request_hash)
            missing += not found
            typer.echo(f"{request_hash}: {'published' if found else 'not published'}", err=True)
    finally:
        releases.close()
    typer.echo(f"complete={'false' if missing else 'true'}")

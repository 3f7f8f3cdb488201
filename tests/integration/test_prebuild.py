"""Prebuild lists: plan, group by ImageBuilder, skip what is published, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from asu_ci.build import imagebuilder, prebuild
from asu_ci.cli import app
from asu_ci.errors import UsageError
from asu_ci.publish import retention
from asu_ci.publish.local import LocalStore
from tests.conftest import BUILD_TARGET, BUILD_VERSION, BuildWorld

LIST: list[dict[str, Any]] = [
    {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": "tplink_archer-c7-v5",
     "packages": ["luci"]},
    {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": "glinet,gl-ar300m16"},
    {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": "tplink_archer-c7-v5",
     "packages": ["luci"], "defaults": "echo prebuilt\n"},
    # The same request as the first, spelled differently: planned once.
    {"version": BUILD_VERSION, "target": BUILD_TARGET, "profile": "tplink,archer-c7-v5",
     "packages": ["luci", "luci"]},
]  # fmt: skip


def _settings(world: BuildWorld, tmp_path: Path) -> Any:
    public = tmp_path / "public"
    shutil.copytree(world.settings.public_dir, public)
    return world.settings.model_copy(update={"public": public, "data": tmp_path / "data"})


def test_plan_groups_validates_and_skips_published(
    build_world: BuildWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = _settings(build_world, tmp_path)
    store = LocalStore(settings.public_dir / "store")
    catalog = build_world.catalog
    plan = prebuild.plan(LIST, catalog=catalog, settings=settings, store=store)
    assert [g.key for g in plan.groups] == [(BUILD_VERSION, BUILD_TARGET)]
    assert plan.requests == 3 and plan.todo == 3
    assert [e.number for e in plan.groups[0].entries] == [1, 2, 3]
    assert plan.groups[0].entries[1].request.profile == "glinet_gl-ar300m16"

    unpacks: list[str] = []
    real = imagebuilder.unpack

    def counting(*args: Any, **kwargs: Any) -> int:
        unpacks.append(kwargs["name"])
        return real(*args, **kwargs)

    monkeypatch.setattr(imagebuilder, "unpack", counting)
    results: list[tuple[int, str | None]] = []
    summary = prebuild.run(
        plan, settings=settings, store=store, catalog=catalog,
        on_result=lambda entry, error: results.append((entry.number, error)),
    )  # fmt: skip
    assert (summary.built, summary.skipped, summary.failed) == (3, 0, 0)
    assert results == [(1, None), (2, None), (3, None)]
    assert len(unpacks) == 1
    for entry in plan.groups[0].entries:
        assert store.build(entry.hash) is not None

    again = prebuild.plan(LIST, catalog=catalog, settings=settings, store=store)
    assert again.todo == 0
    second = prebuild.run(again, settings=settings, store=store, catalog=catalog)
    assert (second.built, second.skipped, second.failed) == (0, 3, 0)
    assert second.line().startswith("prebuild: built 0, skipped 3, failed 0, ")


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([LIST[0], {"version": BUILD_VERSION, "target": BUILD_TARGET}],
         "entry 2 of 2: Invalid request: profile"),
        ([{"version": "99.99.0", "target": BUILD_TARGET, "profile": "x"}],
         "entry 1 of 1: Unsupported version: 99.99.0"),
        ([LIST[0], LIST[1], {**LIST[1], "packages": ["no-such-package"]}],
         "entry 3 of 3: Unsupported package"),
        ([{**LIST[0], "pakages": ["luci"]}], "entry 1 of 1: unknown field(s) pakages"),
        (["just a string"], "entry 1 of 1: not a mapping"),
        ([{**LIST[0], "packages": ["$(reboot)"]}], "entry 1 of 1: Invalid request: packages.0"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_named(
    build_world: BuildWorld, tmp_path: Path, items: list[Any], message: str
) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(UsageError) as caught:
        prebuild.plan(items, catalog=build_world.catalog, settings=build_world.settings,
                      store=store, source="popular.yaml")  # fmt: skip
    assert caught.value.message.startswith("popular.yaml: ")
    assert message in caught.value.message


def test_read_list_refuses_what_is_not_a_list(tmp_path: Path) -> None:
    path = tmp_path / "list.yaml"
    path.write_text("version: 23.05.4\n")
    with pytest.raises(UsageError, match="YAML sequence"):
        prebuild.read_list(path)
    path.write_text("- [unclosed\n")
    with pytest.raises(UsageError, match="not valid YAML at line"):
        prebuild.read_list(path)
    with pytest.raises(UsageError, match="cannot read"):
        prebuild.read_list(tmp_path / "missing.yaml")


def test_cli_prebuild_prints_the_plan_then_one_summary(
    build_world: BuildWorld, tmp_path: Path
) -> None:
    settings = _settings(build_world, tmp_path)
    config = tmp_path / "asu-ci.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    listing = tmp_path / "popular.yaml"
    failing = {**LIST[1], "version_code": "r1-0123456"}
    listing.write_text(yaml.safe_dump([LIST[0], LIST[1], failing]))
    runner = CliRunner()
    base = ["--config", str(config), "prebuild", str(listing)]

    dry = runner.invoke(app, [*base, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert dry.output.splitlines() == [
        "plan: 3 request(s) in 1 ImageBuilder group(s): 3 to build, 0 already published",
        f"  {BUILD_VERSION} {BUILD_TARGET}: 3 to build, 0 published; builds: "
        "tplink_archer-c7-v5, glinet_gl-ar300m16, glinet_gl-ar300m16",
    ]
    assert not (settings.public_dir / "store").exists()

    first = runner.invoke(app, base)
    assert first.exit_code == 4
    lines = first.output.splitlines()
    assert lines[0].startswith("plan: 3 request(s)")
    assert any(
        line.startswith("failed entry 3 glinet_gl-ar300m16")
        and "Received incorrect version" in line
        for line in lines
    )
    assert lines[-1].startswith("prebuild: built 2, skipped 0, failed 1, ")

    second = runner.invoke(app, base)
    assert second.output.splitlines()[0].endswith("1 to build, 2 already published")
    assert second.output.splitlines()[-1].startswith("prebuild: built 0, skipped 2, failed 1, ")


def test_cli_prebuild_keeps_what_it_builds_and_force_retries_failures(
    build_world: BuildWorld, tmp_path: Path
) -> None:
    settings = _settings(build_world, tmp_path)
    config = tmp_path / "asu-ci.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    listing = tmp_path / "popular.yaml"
    failing = {**LIST[1], "version_code": "r1-0123456"}
    listing.write_text(yaml.safe_dump([LIST[0], failing]))
    runner = CliRunner()
    base = ["--config", str(config), "prebuild", str(listing)]
    store = LocalStore(settings.public_dir / "store")
    plan = prebuild.plan(
        prebuild.read_list(listing), catalog=build_world.catalog, settings=settings, store=store
    )
    built, failed = (entry.hash for group in plan.groups for entry in group.entries)

    first = runner.invoke(app, base)
    assert first.exit_code == 4
    assert (store.folder(built) / retention.KEEP).is_file()
    assert not (store.folder(failed) / retention.KEEP).exists()
    # A re-run within the retry time repeats the old failure and says so ...
    again = runner.invoke(app, base)
    assert "failure of an earlier run" in again.output
    # ... --force runs it again at once (it fails afresh: the revision is still wrong).
    forced = runner.invoke(app, [*base, "--force"])
    assert forced.exit_code == 4
    assert "Received incorrect version" in forced.output
    assert "failure of an earlier run" not in forced.output
    # A build already published before is marked kept by the next prebuild too.
    (store.folder(built) / retention.KEEP).unlink()
    runner.invoke(app, base)
    assert (store.folder(built) / retention.KEEP).is_file()


def test_cli_build_verbose_shows_each_step(build_world: BuildWorld, tmp_path: Path) -> None:
    settings = _settings(build_world, tmp_path)
    config = tmp_path / "asu-ci.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    request = tmp_path / "request.json"
    request.write_text(json.dumps(LIST[1]))
    result = CliRunner().invoke(app, ["-v", "--config", str(config), "build", "--request",
                                      str(request)])  # fmt: skip
    assert result.exit_code == 0, result.output
    steps = [line for line in result.output.splitlines() if line.startswith("step: ")]
    assert steps == [
        "step: download_imagebuilder",
        "step: unpack_imagebuilder",
        "step: calculate_packages_hash",
        "step: building_image",
    ]
    quiet = CliRunner().invoke(app, ["--config", str(config), "build", "--request", str(request)])
    assert "step: " not in quiet.output


def test_cli_render_verbose_shows_progress(build_world: BuildWorld, tmp_path: Path) -> None:
    settings = _settings(build_world, tmp_path)
    config = tmp_path / "asu-ci.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_none=True)))
    verbose = CliRunner().invoke(app, ["-v", "--config", str(config), "render"])
    assert verbose.exit_code == 0, verbose.output
    lines = [line for line in verbose.output.splitlines() if line.startswith("rendering: ")]
    assert lines and lines[-1].split()[1].split("/")[0] == lines[-1].split()[1].split("/")[1]
    quiet = CliRunner().invoke(app, ["--config", str(config), "render"])
    assert quiet.exit_code == 0 and "rendering: " not in quiet.output

"""The README is part of the contract: its configuration block and command synopsis
must match the settings model and the CLI, both ways."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel

from asu_ci.cli import app
from asu_ci.config import Branch, Settings, _model_in, load_settings

README = Path(__file__).resolve().parents[2] / "README.md"


def _blocks(lang: str) -> list[str]:
    """The fenced code blocks of the README whose fence names ``lang`` ("" for none)."""
    blocks: list[str] = []
    fence: str | None = None
    lines: list[str] = []
    for line in README.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.startswith("```"):
            lines.append(line)
        elif fence is None:
            fence, lines = line[3:].strip(), []
        else:
            if fence == lang:
                blocks.append("".join(lines))
            fence = None
    return blocks


def _config_block() -> str:
    blocks = [b for b in _blocks("yaml") if b.startswith("upstream:")]
    assert len(blocks) == 1, "the README has one full configuration block"
    return blocks[0]


def _branch_example() -> list[Any]:
    """The commented ``# branches:`` example, uncommented."""
    lines = _config_block().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# branches:"))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("#   "):
            break
        body.append(line[2:])
    parsed = yaml.safe_load("\n".join(body))
    assert isinstance(parsed, list)
    return parsed


def _keys(model: type[BaseModel], data: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted names of every field of ``model`` (descending into sections)."""
    names = set()
    for name, field in model.model_fields.items():
        nested = _model_in(field.annotation)
        if nested is not None and isinstance(data.get(name), dict):
            names |= _keys(nested, data[name], f"{prefix}{name}.")
        else:
            names.add(prefix + name)
    return names


def _written(data: dict[str, Any], prefix: str = "") -> set[str]:
    names = set()
    for key, value in data.items():
        if isinstance(value, dict):
            names |= _written(value, f"{prefix}{key}.")
        else:
            names.add(prefix + key)
    return names


def test_config_block_is_a_valid_configuration(tmp_path: Path) -> None:
    path = tmp_path / "asu-ci.yaml"
    path.write_text(_config_block(), encoding="utf-8")
    settings = load_settings(path, environ={})
    assert settings == Settings.model_validate(yaml.safe_load(_config_block()))


def test_config_block_names_every_setting() -> None:
    data = yaml.safe_load(_config_block())
    assert _written(data) == _keys(Settings, data)


def test_branch_example_names_every_branch_key() -> None:
    (entry,) = _branch_example()
    Branch.model_validate(entry)
    assert set(entry) == set(Branch.model_fields)


def _commands() -> dict[str, Any]:
    """Every leaf command by its full name (``release pull``), as click commands."""
    found: dict[str, Any] = {}

    def walk(group: Any, prefix: str) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, f"{prefix}{name} ")
            else:
                found[prefix + name] = command

    walk(typer.main.get_command(app), "")
    return found


def _synopsis() -> dict[str, set[str]]:
    """Each command the README's synopses show, with the options shown for it."""
    shown: dict[str, set[str]] = {}
    commands = _commands()
    for block in _blocks(""):
        for line in block.splitlines():
            words = line.replace("asu-ci ", "", 1).split() if "asu-ci " in line else line.split()
            for length in (2, 1):
                name = " ".join(words[:length])
                if name in commands and (line.startswith("  ") or line.startswith("asu-ci")):
                    shown.setdefault(name, set()).update(re.findall(r"--[a-z][a-z-]*", line))
                    break
    return shown


def test_synopsis_shows_every_command() -> None:
    assert set(_synopsis()) == set(_commands())


@pytest.mark.parametrize("name", sorted(_commands()))
def test_synopsis_options_exist(name: str) -> None:
    options = {opt for param in _commands()[name].params for opt in param.opts}
    assert _synopsis()[name] <= options

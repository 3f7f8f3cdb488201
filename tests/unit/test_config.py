"""Configuration: defaults, YAML, env, flags, and one clear line for every mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from asu_ci.cli import app
from asu_ci.config import load_settings
from asu_ci.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "asu-ci.yaml"
    path.write_text(text)
    return path


def test_no_file_gives_embedded_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, environ={})
    assert settings.upstream == "https://downloads.openwrt.org"
    assert settings.public_dir == Path("asu-ci-data/public")
    assert settings.data_dir == Path("asu-ci-data/data")
    assert settings.server.max_defaults_length == 20480
    assert settings.server.max_custom_rootfs_size_mb == 1024
    assert settings.backend == "local"


def test_flags_win_over_env_and_env_over_the_file(tmp_path: Path) -> None:
    config = write(tmp_path, "upstream: /from/file\nport: 1111\nserver:\n  contact: file\n")
    settings = load_settings(config, environ={})
    assert (settings.upstream, settings.port, settings.server.contact) == (
        "/from/file",
        1111,
        "file",
    )
    env = {"ASU_CI_UPSTREAM": "/from/env", "ASU_CI_SERVER__CONTACT": "env"}
    settings = load_settings(config, environ=env)
    assert (settings.upstream, settings.server.contact) == ("/from/env", "env")
    settings = load_settings(config, {"upstream": "/from/flag"}, environ=env)
    assert settings.upstream == "/from/flag"
    assert settings.port == 1111


def test_env_values_are_typed_by_their_key() -> None:
    env = {
        "ASU_CI_GITHUB__REF": "24.10",
        "ASU_CI_SERVER__ALLOW_DEFAULTS": "false",
        "ASU_CI_PORT": "9000",
        "ASU_CI_SERVER__REPOSITORY_ALLOW_LIST": "[feeds.example.org, other.example.org]",
    }
    settings = load_settings(None, environ=env)
    assert settings.github.ref == "24.10"
    assert settings.server.allow_defaults is False
    assert settings.port == 9000
    assert settings.server.repository_allow_list == ("feeds.example.org", "other.example.org")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("upstrem: x\n", "unknown key 'upstrem' (did you mean 'upstream'?)"),
        (
            "server:\n  max_default_length: 5\n",
            "unknown key 'server.max_default_length' (did you mean 'max_defaults_length'?)",
        ),
        (
            "branches:\n  - name: '23.05'\n    pth: x\n",
            "unknown key 'branches.0.pth' (did you mean 'path'?)",
        ),
        ("port: many\n", "bad value for 'port'"),
        ("backend: cloud\n", "bad value for 'backend'"),
        ("upstream: ftp://example.org\n", "bad value for 'upstream'"),
        ("- a\n- b\n", "the top level must be a mapping"),
        ("server: [\n", "not valid YAML at line"),
    ],
)
def test_a_bad_file_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    config = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert message in caught.value.message
    assert caught.value.message.startswith(str(config))
    assert "\n" not in caught.value.message


def test_an_unknown_env_key_gets_a_hint() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, environ={"ASU_CI_UPSTREEM": "x"})
    assert "did you mean 'upstream'" in caught.value.message


def test_cli_reports_a_bad_config_in_one_line_with_exit_2(tmp_path: Path) -> None:
    config = write(tmp_path, "server:\n  alow_defaults: true\n")
    result = CliRunner().invoke(app, ["--config", str(config), "render"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("asu-ci: ")
    assert "did you mean 'allow_defaults'" in lines[0]
    assert "Traceback" not in result.output


def test_cli_missing_config_file_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--config", str(tmp_path / "nope.yaml"), "render"])
    assert result.exit_code == 2
    assert "cannot read the configuration file" in result.stderr


def test_help_explains_every_command() -> None:
    runner = CliRunner()
    top = runner.invoke(app, ["--help"])
    assert top.exit_code == 0
    for command in ("render", "serve", "build", "prebuild", "matrix"):
        assert command in top.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, command
        assert "--" in sub.output


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("asu-ci ")

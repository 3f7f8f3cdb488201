"""``asu-ci serve`` as an operator starts it: errors before anything is promised."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from asu_ci.cli import app
from tests.support.tools import require

REPO = Path(__file__).resolve().parents[2]


def test_a_busy_port_fails_before_serving_or_rendering(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = CliRunner().invoke(
            app,
            ["serve", "--port", str(port), "--upstream", str(tmp_path / "none")],
            env={"ASU_CI_HOME": str(tmp_path / "home")},
        )
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith(
        f"asu-ci: cannot listen on 127.0.0.1:{port} (Address already in use)"
    )
    assert "serving" not in result.output and "rendering" not in result.output
    assert not (tmp_path / "home" / "public" / "json").exists()


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """deploy/systemd/asu-ci.service passes ``systemd-analyze verify`` with its
    ExecStart pointed at this installation, and starts the real ``serve`` command."""
    require("/usr/bin/systemd-analyze", "apt-get install systemd")
    example = REPO / "deploy" / "systemd" / "asu-ci.service"
    text = example.read_text()
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    argv = line.removeprefix("ExecStart=").split()
    assert argv[0] == "/srv/asu-ci/.venv/bin/asu-ci" and argv[1:] == ["serve"]
    here = shutil.which("asu-ci", path=str(Path(sys.executable).parent))
    assert here is not None
    unit = tmp_path / "asu-ci.service"
    unit.write_text(text.replace(argv[0], here))
    result = subprocess.run(
        ["/usr/bin/systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    problems = [
        x
        for x in (result.stdout + result.stderr).splitlines()
        # Containers without a running systemd cannot check users or the system's own units.
        if "asu-ci.service" in x
    ]
    assert problems == [] and result.returncode == 0, result.stdout + result.stderr

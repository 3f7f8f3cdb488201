"""The one way asu-ci runs another program.

An argv list (never a shell), an explicit timeout, a sanitized environment and
a logged command line. The child gets its own process group so a timeout or a
cancelled build takes the whole tree (make and everything it spawned) down.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from asu_ci.errors import BuildError

log = logging.getLogger(__name__)

#: Variables a child may inherit from our own environment. Everything else
#: (tokens, proxies, MAKEFLAGS, …) stays out of the ImageBuilder.
INHERITED = ("PATH", "HOME", "TMPDIR", "TZ")


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def sanitized_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: a few inherited basics, a C locale and ``extra``."""
    env = {k: os.environ[k] for k in INHERITED if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["LC_ALL"] = "C.UTF-8"
    env["LANG"] = "C.UTF-8"
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = False,
) -> Result:
    """Run ``argv`` and capture its output.

    ``env`` adds to the sanitized environment. With ``check`` a non-zero exit
    raises :class:`BuildError` carrying the output tails. A timeout always
    raises :class:`BuildError` after killing the whole process group.
    """
    words = [str(a) for a in argv]
    if not words:
        raise ValueError("empty argv")
    log.info("run: %s", shlex.join(words))
    proc = subprocess.Popen(
        words,
        cwd=cwd,
        env=sanitized_env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        raise BuildError(
            f"{words[0]} {words[1] if len(words) > 1 else ''} ran longer than {timeout:.0f} s "
            "and was stopped; raise the build timeout in the configuration if this is expected.",
            stdout=tail(out),
            stderr=tail(err),
        ) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    result = Result(tuple(words), proc.returncode, out, err)
    if check and result.returncode != 0:
        raise BuildError(
            f"{shlex.join(words[:2])} failed with exit code {result.returncode}",
            stdout=tail(out),
            stderr=tail(err),
        )
    return result


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def tail(text: str, limit: int = 8192) -> str:
    """The last ``limit`` characters of ``text``, cut at a line start."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    newline = cut.find("\n")
    return cut[newline + 1 :] if 0 <= newline < 200 else cut

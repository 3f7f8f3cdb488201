"""Real processes in front of a store: ``asu-ci serve`` and Debian's nginx.

Used by tests that need real server processes and by the benchmarks in ``bench/``:

* :class:`Serve` runs ``python -m asu_ci --config FILE serve`` as a process of
  its own (its own session, so a test can kill it alone, as a crash would),
  waits until it answers and can be killed with SIGKILL and started again;
* :class:`Nginx` runs nginx in the foreground with ``deploy/nginx/asu-ci.conf``
  templated for a temporary public tree, app address and port, optionally
  with a second, plain server (``root`` only) as the reference for benchmarks;
* :class:`Caddy` does the same with ``deploy/caddy/Caddyfile``.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
NGINX_EXAMPLE = REPO / "deploy" / "nginx" / "asu-ci.conf"
CADDY_EXAMPLE = REPO / "deploy" / "caddy" / "Caddyfile"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CADDY = shutil.which("caddy") or "/usr/bin/caddy"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float, alive: Any = None) -> None:
    """Until something accepts connections on 127.0.0.1:``port`` (``alive()`` must stay true)."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        if alive is not None and not alive():
            raise RuntimeError(f"the server for port {port} exited before it listened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")
        time.sleep(0.02)


def processes_mentioning(text: str) -> list[int]:
    """Pids of processes whose command line mentions ``text`` (a test's own folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


MAKE_WRAPPER = """#!/bin/sh
# make that logs each run (tests/support/frontends.py); holds `make image` while HOLD exists.
target=other
for arg in "$@"; do
  case "$arg" in info|manifest|image|clean) target=$arg ;; esac
done
echo "start $target $$" >> {log}
if [ "$target" = image ]; then
  n=0
  while [ -e {hold} ] && [ $n -lt 1200 ]; do sleep 0.05; n=$((n + 1)); done
fi
{make} "$@"
rc=$?
echo "end $target $$ $rc" >> {log}
exit $rc
"""


class CountingMake:
    """A ``make`` to put first on a server's PATH: it logs every run of the real one.

    The build processes ``asu-ci serve`` starts inherit PATH, so the log holds
    each ``make info|manifest|image`` a build ran (``start``/``end`` lines with
    the pid and exit code). While ``hold`` exists, ``make image`` waits (60 s
    at most) before it starts.
    """

    def __init__(self, folder: Path) -> None:
        self.bin = folder / "bin"
        self.log = folder / "make.log"
        self.hold = folder / "hold-make-image"
        real = shutil.which("make")
        if real is None:
            raise RuntimeError("make is not installed")
        self.bin.mkdir(parents=True, exist_ok=True)
        wrapper = self.bin / "make"
        wrapper.write_text(MAKE_WRAPPER.format(log=self.log, hold=self.hold, make=real))
        wrapper.chmod(0o755)

    def lines(self, target: str) -> list[str]:
        """The log lines of ``target`` (info, manifest, image), oldest first."""
        if not self.log.exists():
            return []
        return [ln for ln in self.log.read_text().splitlines() if ln.split()[1] == target]

    def started(self, target: str) -> int:
        return sum(1 for ln in self.lines(target) if ln.startswith("start "))


def write_config(path: Path, settings: dict[str, Any]) -> Path:
    """An ``asu-ci.yaml`` with ``settings`` (paths as strings)."""
    path.write_text(yaml.safe_dump(settings, sort_keys=True))
    return path


class Serve:
    """``asu-ci serve`` as a real process on 127.0.0.1.

    ``config`` names a YAML file; ``port`` is forced with ``--port``. ``path``
    folders go in front of ``PATH`` (e.g. a ``make`` that counts its runs),
    and the build processes the server starts inherit them.
    """

    def __init__(self, config: Path, port: int, log: Path, path: tuple[Path, ...] = ()) -> None:
        self.config = config
        self.port = port
        self.log = log
        self.path = path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Serve:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([*(str(p) for p in self.path), env.get("PATH", "")])
        argv = [sys.executable, "-m", "asu_ci", "--config", str(self.config), "serve"]
        argv += ["--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
                start_new_session=True,
            )
        proc = self.proc
        try:
            wait_for_port(self.port, timeout, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            self.kill()
            raise RuntimeError(f"{exc}; its log:\n{self.log.read_text()[-4000:]}") from None
        return self

    def kill(self) -> None:
        """SIGKILL the server process alone (its build children live on, as after a crash)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM), SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()


def _template(example: Path, replacements: dict[str, str]) -> str:
    """``example`` with each key replaced; every key must be in it exactly once,
    so a changed example fails loudly here."""
    text = example.read_text()
    for old, new in replacements.items():
        if text.count(old) != 1:
            raise ValueError(f"{example}: expected exactly one {old.strip()!r}")
        text = text.replace(old, new)
    return text


class _Frontend:
    """A front server process in the foreground: started, waited for, stopped."""

    name = ""
    folder: Path
    port: int
    ports: tuple[int, ...]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def start(self) -> _Frontend:
        log = (self.folder / "process.log").open("ab")
        with log:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env()
            )
        proc = self.proc
        for port in self.ports:
            try:
                wait_for_port(port, 15, alive=lambda: proc.poll() is None)
            except (RuntimeError, TimeoutError) as exc:
                self.stop()
                logs = "".join(
                    p.read_text(errors="replace")[-2000:] for p in sorted(self.folder.glob("*.log"))
                )
                raise RuntimeError(f"{self.name} did not start: {exc}\n{logs}") from None
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> _Frontend:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Nginx(_Frontend):
    """Debian's nginx with ``deploy/nginx/asu-ci.conf`` (and a plain reference server).

    ``plain_port``: a second server that only serves ``public`` as files, the
    limit a benchmark compares the example against.
    """

    name = "nginx"

    def __init__(
        self,
        folder: Path,
        public: Path,
        app_port: int,
        port: int,
        plain_port: int | None = None,
        workers: str = "auto",
    ) -> None:
        self.folder = folder
        self.port = port
        self.plain_port = plain_port
        self.ports = (port,) if plain_port is None else (port, plain_port)
        folder.mkdir(parents=True, exist_ok=True)
        site = _template(
            NGINX_EXAMPLE,
            {
                "server 127.0.0.1:8000;": f"server 127.0.0.1:{app_port};",
                "    listen 80;\n": f"    listen 127.0.0.1:{port};\n",
                "    listen [::]:80;\n": "",
                "root /srv/asu-ci/public;": f"root {public};",
            },
        )
        (folder / "asu-ci.conf").write_text(site)
        plain = ""
        if plain_port is not None:
            plain = (
                f"    server {{\n        listen 127.0.0.1:{plain_port};\n"
                f"        root {public};\n    }}\n"
            )
        temp = "".join(
            f"    {kind}_temp_path {folder / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, workers would otherwise run as nobody and not read a private tmp folder.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (folder / "nginx.conf").write_text(
            f"{user}daemon off;\nworker_processes {workers};\npid {folder / 'nginx.pid'};\n"
            f"error_log {folder / 'error.log'} warn;\n"
            "events {\n    worker_connections 4096;\n}\n"
            "http {\n    include /etc/nginx/mime.types;\n"
            "    default_type application/octet-stream;\n"
            "    access_log off;\n    sendfile on;\n    tcp_nopush on;\n"
            f"{temp}    include {folder / 'asu-ci.conf'};\n{plain}}}\n"
        )

    def argv(self) -> list[str]:
        conf = str(self.folder / "nginx.conf")
        error_log = str(self.folder / "error.log")
        return [NGINX, "-p", str(self.folder), "-e", error_log, "-c", conf]

    def stop(self) -> None:
        """SIGQUIT: nginx's graceful stop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
        super().stop()


class Caddy(_Frontend):
    """Caddy with ``deploy/caddy/Caddyfile`` on plain HTTP, its admin API off."""

    name = "caddy"

    def __init__(self, folder: Path, public: Path, app_port: int, port: int) -> None:
        self.folder = folder
        self.port = port
        self.ports = (port,)
        folder.mkdir(parents=True, exist_ok=True)
        text = _template(
            CADDY_EXAMPLE,
            {
                "{\n\t# Slow clients": "{\n\tadmin off\n\t# Slow clients",
                "\nasu.example.org {": f"\nhttp://127.0.0.1:{port} {{",
                "root * /srv/asu-ci/public": f"root * {public}",
            },
        )
        (folder / "Caddyfile").write_text(text.replace("127.0.0.1:8000", f"127.0.0.1:{app_port}"))

    def argv(self) -> list[str]:
        caddyfile = str(self.folder / "Caddyfile")
        return [CADDY, "run", "--adapter", "caddyfile", "--config", caddyfile]

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["XDG_DATA_HOME"] = env["XDG_CONFIG_HOME"] = str(self.folder)
        return env


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 30.0,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request to 127.0.0.1 with http.client: (status, headers, body).

    Headers come back with lower-case names; repeated ones are joined with ", ".
    """
    scheme, _, rest = url.partition("://")
    assert scheme == "http"
    hostport, _, path = rest.partition("/")
    conn = http.client.HTTPConnection(hostport, timeout=timeout)
    try:
        conn.request(method, "/" + path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        got: dict[str, str] = {}
        for name, value in response.getheaders():
            key = name.lower()
            got[key] = f"{got[key]}, {value}" if key in got else value
        return response.status, got, data
    finally:
        conn.close()

"""The endpoint's request path under load: 64 connections, wrk, 127.0.0.1 only.

    .venv/bin/python -m bench.request_path [--seconds 10]

Builds one request with the test ImageBuilder, starts ``asu-ci serve`` and
nginx with ``deploy/nginx/asu-ci.conf`` in front of it, then measures:

- POST of the already-built request (the app answers build.json);
- POST with an unknown profile (400);
- GET and HEAD of the finished hash, straight to the app and through nginx
  (which answers them from store/<hash>/build.json); HEAD with hey, as
  Debian's wrk 4.1 cannot read HEAD answers;
- POST of the built request through nginx (proxied to the app);
- the limit: a plain nginx server sending the same build.json as a file.

Goals (issue 7): POST of a built request and 400s at least 1,800 req/s with
p99 at most 50 ms; GET through the nginx example within 2x of plain nginx.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from bench.common import (
    ASU_BAD_REQUEST,
    ASU_GET_FINISHED,
    ASU_P99_MS,
    ASU_POST_FINISHED,
    Load,
    World,
    build,
    hey_head,
    machine,
    make_world,
    peak_rss_mib,
    request_body,
    wrk,
)
from tests.support.frontends import Nginx, Serve, free_port, request

POST_GOAL = 1800.0
P99_GOAL_MS = 50.0
NGINX_GOAL = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each run")
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="asu-ci-bench-") as tmp:
        root = Path(tmp)
        world = make_world(root / "world")
        try:
            run(world, root, args.seconds, args.connections)
        finally:
            world.stop()


def run(world: World, root: Path, seconds: float, connections: int) -> None:
    digest = build(world, request_body())
    finished = root / "finished.json"
    finished.write_text(json.dumps(request_body()))
    unknown = root / "unknown.json"
    unknown.write_text(json.dumps(request_body(profile="nosuch_device")))
    serve = Serve(world.config, free_port(), root / "serve.log").start()
    nginx = Nginx(
        root / "nginx",
        world.settings.public_dir,
        app_port=serve.port,
        port=free_port(),
        plain_port=free_port(),
    )
    try:
        nginx.start()
        plain = f"http://127.0.0.1:{nginx.plain_port}/store/{digest}/build.json"
        poll = f"/api/v1/build/{digest}"
        scenarios: list[tuple[str, str, str, Path | None, int]] = [
            ("POST built request -> app", serve.url + "/api/v1/build", "POST", finished, 200),
            (
                "POST unknown profile -> app (400)",
                serve.url + "/api/v1/build",
                "POST",
                unknown,
                400,
            ),
            ("GET finished hash -> app", serve.url + poll, "GET", None, 200),
            ("HEAD finished hash -> app (hey)", serve.url + poll, "HEAD", None, 200),
            ("GET finished hash -> nginx example", nginx.url + poll, "GET", None, 200),
            ("HEAD finished hash -> nginx (hey)", nginx.url + poll, "HEAD", None, 200),
            (
                "POST built request -> nginx -> app",
                nginx.url + "/api/v1/build",
                "POST",
                finished,
                200,
            ),
            ("GET build.json -> plain nginx", plain, "GET", None, 200),
        ]
        for name, url, method, body, status in scenarios:
            check(name, url, method, body, status)
        # Warm the app (imports, caches, the thread pool) before anything is measured.
        wrk("warm-up", serve.url + "/api/v1/build", seconds=2, method="POST", body=finished)
        results: dict[str, Load] = {}
        for name, url, method, body, status in scenarios:
            if method == "HEAD":
                load = hey_head(name, url, seconds=seconds, connections=connections)
            else:
                load = wrk(
                    name, url, seconds=seconds, method=method, body=body, connections=connections
                )
            expected_bad = load.requests if status >= 400 else 0
            if load.bad_status != expected_bad or load.socket_errors:
                raise RuntimeError(f"{name}: unexpected answers: {load}")
            results[name] = load
            print(load.line(), flush=True)
        rss = peak_rss_mib(serve.pid)
    finally:
        nginx.stop()
        serve.stop()
    report(results, rss)


def check(name: str, url: str, method: str, body: Path | None, status: int) -> None:
    """One request before the load: the scenario answers what it should."""
    data = body.read_bytes() if body else None
    headers = {"Content-Type": "application/json"} if body else {}
    got, head, _ = request(url, method, data, headers)
    if got != status:
        raise RuntimeError(f"{name}: expected {status}, got {got}")
    if status == 200 and "plain" not in name and head.get("x-imagebuilder-status") != "done":
        raise RuntimeError(f"{name}: no X-Imagebuilder-Status: done ({head})")


def ratio(load: Load, asu: float) -> str:
    return f"{load.rps / asu:.1f}x"


def report(results: dict[str, Load], rss_mib: float) -> None:
    post = results["POST built request -> app"]
    bad = results["POST unknown profile -> app (400)"]
    get = results["GET finished hash -> app"]
    via = results["GET finished hash -> nginx example"]
    limit = results["GET build.json -> plain nginx"]
    print(f"asu-ci serve peak RSS: {rss_mib:.0f} MiB")
    print(
        f"vs upstream ASU (POST built {ASU_POST_FINISHED:.0f}, GET {ASU_GET_FINISHED:.0f}, "
        f"400 {ASU_BAD_REQUEST:.0f} req/s, p99 ~{ASU_P99_MS:.0f} ms): POST built "
        f"{ratio(post, ASU_POST_FINISHED)}, GET {ratio(get, ASU_GET_FINISHED)}, "
        f"400 {ratio(bad, ASU_BAD_REQUEST)}; nginx example GET {ratio(via, ASU_GET_FINISHED)}"
    )
    slowdown = limit.rps / via.rps if via.rps else float("inf")
    print(f"plain nginx / nginx example (GET finished): {slowdown:.2f}x")
    met = (
        post.rps >= POST_GOAL
        and bad.rps >= POST_GOAL
        and max(post.p99_ms, bad.p99_ms) <= P99_GOAL_MS
        and slowdown <= NGINX_GOAL
    )
    print(
        f"request_path: POST built {post.rps:,.0f} req/s p99 {post.p99_ms:.1f} ms, "
        f"400 {bad.rps:,.0f} req/s p99 {bad.p99_ms:.1f} ms, GET via nginx {via.rps:,.0f} req/s "
        f"({slowdown:.2f}x below plain nginx {limit.rps:,.0f}), RSS {rss_mib:.0f} MiB: "
        f"goals {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

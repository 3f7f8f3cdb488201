"""1,000 concurrent identical POSTs of a new request: how many builds start.

    .venv/bin/python -m bench.dedup [--posts 1000]

``asu-ci serve`` (two build workers, so a duplicate would have somewhere to
run) with a ``make`` on its PATH that logs every run. The client opens all
connections first, then sends every POST at the same moment, one per
connection; it waits for the build to be published and a moment longer, and
counts the builds that started (``make info``, the first step of each) and
``make image`` runs. Goal (issue 7): exactly one build.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

from asu_ci.dispatch.queue import Queue
from bench.common import machine, make_world, request_body
from tests.support.frontends import CountingMake, Serve, free_port, request, write_config

#: Seconds the whole burst (connect, send, read every answer) may take.
BURST_TIMEOUT = 120.0


async def burst(port: int, body: bytes, posts: int) -> list[tuple[int, str, float]]:
    """``posts`` connections, then one POST on each at once: (status, hash, seconds)."""
    head = (
        f"POST /api/v1/build HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    go = asyncio.Event()

    async def one() -> tuple[int, str, float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await go.wait()
            started = time.perf_counter()
            writer.write(head + body)
            await writer.drain()
            raw = await reader.read()
            seconds = time.perf_counter() - started
        finally:
            writer.close()
        status_line, _, rest = raw.partition(b"\r\n")
        answer = json.loads(rest.partition(b"\r\n\r\n")[2])
        return int(status_line.split()[1]), str(answer.get("request_hash")), seconds

    tasks = [asyncio.create_task(one()) for _ in range(posts)]
    await asyncio.sleep(0.5)  # let the connections open
    go.set()
    return await asyncio.wait_for(asyncio.gather(*tasks), BURST_TIMEOUT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posts", type=int, default=1000)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="asu-ci-bench-dedup-") as tmp:
        root = Path(tmp)
        world = make_world(root / "world")
        try:
            settings = world.settings.model_dump(mode="json", exclude_none=True)
            settings["local"] = {"workers": 2}
            config = write_config(root / "dedup.yaml", settings)
            make = CountingMake(root)
            serve = Serve(config, free_port(), root / "serve.log", path=(make.bin,)).start()
            try:
                body = json.dumps(request_body(packages=["luci", "tcpdump"])).encode()
                started = time.monotonic()
                answers = asyncio.run(burst(serve.port, body, args.posts))
                elapsed = time.monotonic() - started
                digests = {digest for _, digest, _ in answers}
                digest = next(iter(digests))
                deadline = time.monotonic() + 120
                while request(f"{serve.url}/api/v1/build/{digest}")[0] == 202:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the build did not finish in 120 s")
                    time.sleep(0.1)
                time.sleep(2)  # a duplicate build would have started by now
                queue = Queue(world.settings.data_dir / "queue.sqlite3").counts()
                builds, images = make.started("info"), make.started("image")
            finally:
                serve.stop()
        finally:
            world.stop()
    statuses = Counter(status for status, _, _ in answers)
    latencies = sorted(seconds for _, _, seconds in answers)
    p50 = latencies[len(latencies) // 2] * 1000
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    print(f"{args.posts} POSTs answered in {elapsed:.2f} s: p50 {p50:.0f} ms, p99 {p99:.0f} ms")
    print(
        f"status codes: {dict(sorted(statuses.items()))}; distinct request hashes: {len(digests)}"
    )
    print(f"builds started (make info): {builds}; make image runs: {images}; queue rows: {queue}")
    met = builds == 1 and images == 1 and len(digests) == 1 and set(statuses) <= {200, 202}
    print(
        f"dedup: {args.posts} concurrent identical POSTs -> {len(digests)} hash, {builds} build "
        f"started, {images} make image; all answered in {elapsed:.1f} s (p99 {p99:.0f} ms): "
        f"goal {'met' if met else 'NOT met'}"
    )


if __name__ == "__main__":
    main()

"""The small Protocol both dispatcher backends implement."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from asu_ci.dispatch.queue import MAX_ATTEMPTS, Queue
from asu_ci.errors import BuildError
from asu_ci.protocol import Failed
from asu_ci.publish.base import Store

log = logging.getLogger(__name__)
#: One line per finished build; ``serve`` shows it at its default level.
outcomes = logging.getLogger("asu_ci.builds")


class Dispatcher(Protocol):
    """Takes requests from the durable queue and gets them built somewhere.

    The endpoint only ever adds rows to the queue and calls :meth:`wake`; the
    dispatcher owns everything after that, and writes progress into the store.
    """

    def start(self) -> None:
        """Recover what a previous process left and begin taking work."""
        ...

    def wake(self) -> None:
        """New work was queued."""
        ...

    def stop(self) -> None:
        """Stop taking work; builds already running finish on their own."""
        ...


def recover(queue: Queue, store: Store, give_up: str | None) -> None:
    """What every backend does first: take back the requests a dead process left.

    Requests that were running go back to the queue. With ``give_up`` (the
    reason shown to the client), those picked up MAX_ATTEMPTS times end as
    failed instead; without it none is given up.
    """
    requeued, failed = queue.recover(MAX_ATTEMPTS if give_up is not None else None)
    for request_hash in failed:
        store.write_status(request_hash, Failed.of(request_hash, BuildError(str(give_up))))
    if requeued:
        log.warning("picked up %d request(s) left by a previous run", len(requeued))


def log_outcome(
    request_hash: str, request: Mapping[str, Any], seconds: float, failure: str | None
) -> None:
    """Log how one build ended: hash, what was built, how long, and why it failed."""
    what = " ".join(str(request.get(k, "?")) for k in ("version", "target", "profile"))
    if failure is None:
        outcomes.info("built %s (%s) in %.1f s", request_hash, what, seconds)
    else:
        outcomes.warning(
            "failed %s (%s) after %.1f s: %s", request_hash, what, seconds, failure[:300]
        )

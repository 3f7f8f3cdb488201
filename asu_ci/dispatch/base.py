"""The small Protocol both dispatcher backends implement."""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    """Takes requests from the durable queue and gets them built somewhere.

    The endpoint only ever adds rows to the queue and calls :meth:`wake`; the
    dispatcher owns everything after that, and writes progress into the store.
    """

    name: str

    def start(self) -> None:
        """Recover what a previous process left and begin taking work."""
        ...

    def wake(self) -> None:
        """New work was queued."""
        ...

    def stop(self) -> None:
        """Stop taking work; builds already running finish on their own."""
        ...

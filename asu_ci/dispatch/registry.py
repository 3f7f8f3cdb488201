"""The dispatcher backends by the name ``backend`` takes in the configuration.

Each factory imports its backend when called: the GitHub one pulls in PyGithub,
which a local-only server never needs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from asu_ci.config import Settings
from asu_ci.dispatch.base import Dispatcher
from asu_ci.dispatch.queue import Queue
from asu_ci.errors import ConfigError
from asu_ci.publish.local import LocalStore

Factory = Callable[[Settings, Queue, LocalStore], Dispatcher]


def _local(settings: Settings, queue: Queue, store: LocalStore) -> Dispatcher:
    from asu_ci.dispatch.local import LocalPool

    return LocalPool(settings, queue, store)


def _github(settings: Settings, queue: Queue, store: LocalStore) -> Dispatcher:
    from asu_ci.dispatch.github import GitHubDispatcher

    return GitHubDispatcher(settings, queue, store)


BACKENDS: Mapping[str, Factory] = MappingProxyType({"local": _local, "github": _github})


def make_dispatcher(settings: Settings, queue: Queue, store: LocalStore) -> Dispatcher:
    """The backend the configuration names."""
    factory = BACKENDS.get(settings.backend)
    if factory is None:
        raise ConfigError(
            f"unknown backend {settings.backend!r}; choose one of {', '.join(BACKENDS)}"
        )
    return factory(settings, queue, store)

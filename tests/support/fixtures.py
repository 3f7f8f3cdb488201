"""pytest fixtures for the local upstream mirror and the test ImageBuilder.

Load with ``pytest_plugins = ["tests.support.fixtures"]`` (in the root
``conftest.py`` or a test module). Fixtures:

``upstream_mirror`` (session)
    a :class:`~tests.support.mirror.MirrorServer` on 127.0.0.1 serving
    ``ath79/generic`` of 23.05.4 (9000 ``mips_24kc`` packages, signed feeds,
    an ``.tar.xz`` ImageBuilder, ``sha256sums`` + ``.sig``) over the real
    upstream fixtures. ``.url``, ``.root``, ``.info``, ``.requests``,
    ``.downloads``, ``.log``, ``.fail_next()``, ``.delay_next()``,
    ``.corrupt_next()``, ``.reset()``.
``upstream_mirror_clean`` (function)
    the same server with counters and faults reset before and after the test.
``mirror_factory`` (function)
    ``mirror_factory(**build_mirror_kwargs) -> MirrorServer``: build and serve
    another mirror (other targets, ``.tar.zst``, unsigned, ...); stopped at
    teardown.
``unpacked_imagebuilder`` (session)
    the session mirror's ImageBuilder unpacked once (a folder to run ``make`` in;
    do not change it).
``usign_keypair`` (session)
    ``(SecretKey, public_key_text)`` of a fresh usign key.
``modern_mirror`` (session)
    a :class:`~tests.support.mirror.MirrorServer` serving ``ath79/generic`` of
    23.05.4 (opkg, ``.tar.xz``), 24.10.0 (opkg, ``linux_kernel``, kmods feed,
    ``.tar.zst``), 25.12.0 and SNAPSHOT (apk: ``packages.adb`` stand-ins +
    ``index.json`` v2, kmods feed, ``.tar.zst`` with ``repositories`` and
    ``keys/*.pem``), the release-branch snapshots 24.10-SNAPSHOT (24.10 shape)
    and 25.12-SNAPSHOT (apk) under ``releases/<branch>-SNAPSHOT/``
    (``tests.support.mirror.BRANCH_SNAPSHOTS``; they add about 0.2 s to the
    build and 0.5 s to a cold render), each with a working signed
    ImageBuilder, and a ``.versions.json`` with ``stable_version`` 25.12.0,
    ``oldstable_version`` 24.10.0, ``upcoming_version`` "" and
    ``versions_list`` [25.12.0, 24.10.0, 23.05.4] (no branch snapshot, as
    upstream's). ``tests.support.mirror.MODERN_TARGETS`` lists the (version,
    target) pairs; the kmods feed of one is ``modern_mirror.info.target(v, t).kmods_rel`` (its
    folder name ``.kmods_version``), the release shape ``.shape``. 1500
    packages per release keep it cheap (about a second to build).
``modern_mirror_clean`` (function)
    :func:`modern_mirror` with counters and faults reset around the test.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.imagebuilder import unpack_imagebuilder
from tests.support.mirror import (
    MODERN_TARGETS,
    MODERN_VERSIONS,
    MirrorInfo,
    MirrorServer,
    build_mirror,
    serve,
)
from tests.support.usign import SecretKey, generate_keypair


@pytest.fixture(scope="session")
def upstream_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MirrorServer]:
    """The session's local download server with ath79/generic built."""
    yield from _served(build_mirror(tmp_path_factory.mktemp("upstream")))


@pytest.fixture
def upstream_mirror_clean(upstream_mirror: MirrorServer) -> Iterator[MirrorServer]:
    """:func:`upstream_mirror` with counters and faults reset around the test."""
    yield from _reset_around(upstream_mirror)


@pytest.fixture
def mirror_factory(tmp_path: Path) -> Iterator[Callable[..., MirrorServer]]:
    """Build and serve extra mirrors: ``mirror_factory(targets=..., compression="zst")``."""
    servers: list[MirrorServer] = []

    def make(**kwargs: Any) -> MirrorServer:
        info = build_mirror(tmp_path / f"mirror{len(servers)}", **kwargs)
        server = serve(info)
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="session")
def unpacked_imagebuilder(
    upstream_mirror: MirrorServer, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The session mirror's ImageBuilder archive, unpacked once."""
    assert upstream_mirror.info is not None
    archive = upstream_mirror.info.archive_path
    assert archive is not None
    return unpack_imagebuilder(archive, tmp_path_factory.mktemp("imagebuilder"))


@pytest.fixture(scope="session")
def usign_keypair() -> tuple[SecretKey, str]:
    """A usign key pair (secret key object, public key file text)."""
    return generate_keypair()


@pytest.fixture(scope="session")
def modern_mirror(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MirrorServer]:
    """23.05.4, 24.10.0, 25.12.0, SNAPSHOT, 24.10-SNAPSHOT and 25.12-SNAPSHOT of
    ath79/generic, each in its real shape."""
    info = build_mirror(
        tmp_path_factory.mktemp("modern"),
        targets=MODERN_TARGETS,
        package_count=1500,
        versions=MODERN_VERSIONS,
    )
    yield from _served(info)


@pytest.fixture
def modern_mirror_clean(modern_mirror: MirrorServer) -> Iterator[MirrorServer]:
    """:func:`modern_mirror` with counters and faults reset around the test."""
    yield from _reset_around(modern_mirror)


def _served(info: MirrorInfo) -> Iterator[MirrorServer]:
    """Serve a built mirror for as long as the fixture lives."""
    server = serve(info)
    try:
        yield server
    finally:
        server.stop()


def _reset_around(server: MirrorServer) -> Iterator[MirrorServer]:
    """``server`` with its counters and faults reset before and after the test."""
    server.reset()
    try:
        yield server
    finally:
        server.reset()

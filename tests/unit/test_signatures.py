"""Signatures by default: OpenWrt's shipped usign keys, operator keys, allow_unsigned."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from asu_ci import knowledge
from asu_ci.build import usign
from asu_ci.build.imagebuilder import locate
from asu_ci.cli import app
from asu_ci.config import Settings, load_settings
from asu_ci.errors import ConfigError, ImageBuilderError
from asu_ci.upstream.source import Upstream
from tests.conftest import BUILD_TARGET, BUILD_VERSION, BuildWorld
from tests.support.mirror import build_mirror, serve
from tests.support.usign import generate_keypair, sign

RELEASE = f"releases/{BUILD_VERSION}"


@pytest.fixture
def signed(build_world: BuildWorld, tmp_path: Path) -> Iterator[Any]:
    """A private mirror signed by its own (not OpenWrt's) key; it counts downloads."""
    server = serve(build_mirror(tmp_path / "mirror", fixtures=build_world.fixtures,
                                package_count=50))  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


def _settings(mirror: Any, **extra: Any) -> Settings:
    return Settings.model_validate({"upstream": mirror.url, **extra})


def _locate(mirror: Any, tmp_path: Path, settings: Settings, branch_key: str | None = None) -> Any:
    upstream = Upstream(mirror.url, tmp_path / "cache")
    try:
        return locate(
            upstream,
            RELEASE,
            BUILD_VERSION,
            BUILD_TARGET,
            knowledge.trusted_keys(settings, branch_key),
            allow_unsigned=settings.signatures.allow_unsigned,
        )
    finally:
        upstream.close()


def test_shipped_keys_are_usign_public_keys_named_by_their_key_id() -> None:
    folder = resources.files("asu_ci").joinpath("data", "keys", "usign")
    files = {item.name: item.read_text() for item in folder.iterdir()}
    assert set(files) >= {"d310c6f2833e97f7", "b5043e70f9a75cde", "4d017e6f1ed5d616"}
    for name, text in files.items():
        key = usign.parse_public_key(text)
        assert key.fingerprint == name
        assert text.startswith("untrusted comment: Public usign key for ")
    assert set(knowledge.shipped_keys()) == set(files)
    sources = knowledge.key_sources()
    assert {s["id"] for s in sources} == set(files)
    for source in sources:
        assert source["published"].endswith(f"/openwrt/keyring/blob/master/usign/{source['id']}")
        assert source["signs"] and source["confirmed"]


def test_a_mirror_signed_by_an_unknown_key_is_refused_by_default(
    signed: Any, tmp_path: Path
) -> None:
    with pytest.raises(
        ImageBuilderError, match=r"signed by key [0-9a-f]{16}, which is not a trust"
    ):
        _locate(signed, tmp_path, _settings(signed))
    assert signed.downloads_of(signed.info.first.archive_rel) == 0


def test_the_operators_trusted_key_and_branch_key_are_accepted(signed: Any, tmp_path: Path) -> None:
    key = signed.info.public_key
    trusted = _settings(signed, signatures={"trusted_keys": [key]})
    found = _locate(signed, tmp_path, trusted)
    assert found.sha256 == signed.info.archive_sha256
    assert _locate(signed, tmp_path, _settings(signed), branch_key=key).name == found.name
    # a branch's own key is the only one that branch accepts
    _, other = generate_keypair(b"another mirror")
    with pytest.raises(ImageBuilderError, match="not a trusted key"):
        _locate(signed, tmp_path, trusted, branch_key=other)


def test_a_bad_signature_is_refused_before_the_archive_is_downloaded(
    signed: Any, tmp_path: Path
) -> None:
    info = signed.info
    sums = info.first.dir / "sha256sums"
    sums.write_text(sums.read_text() + f"{'1' * 64} *openwrt-extra.bin\n")
    trusted = _settings(signed, signatures={"trusted_keys": [info.public_key]})
    with pytest.raises(ImageBuilderError, match="signature does not match"):
        _locate(signed, tmp_path, trusted)
    # allow_unsigned does not excuse a signature that is present and wrong
    lax = _settings(signed, signatures={"trusted_keys": [info.public_key], "allow_unsigned": True})
    with pytest.raises(ImageBuilderError, match="signature does not match"):
        _locate(signed, tmp_path, lax)
    assert signed.downloads_of(info.first.archive_rel) == 0


def test_a_missing_signature_is_refused_unless_allowed(
    signed: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    info = signed.info
    (info.first.dir / "sha256sums.sig").unlink()
    trusted = _settings(signed, signatures={"trusted_keys": [info.public_key]})
    with pytest.raises(ImageBuilderError, match=r"sha256sums\.sig is missing.*allow_unsigned"):
        _locate(signed, tmp_path, trusted)
    with pytest.raises(ImageBuilderError, match="missing"):
        _locate(signed, tmp_path, _settings(signed), branch_key=info.public_key)
    assert signed.downloads_of(info.first.archive_rel) == 0
    lax = _settings(signed, signatures={"allow_unsigned": True})
    with caplog.at_level(logging.WARNING, logger="asu_ci.build.imagebuilder"):
        found = _locate(signed, tmp_path, lax)
    assert found.sha256 == info.archive_sha256
    assert any("is not signed" in r.getMessage() for r in caplog.records)


def test_a_signature_by_an_openwrt_key_over_other_content_is_refused(
    signed: Any, tmp_path: Path
) -> None:
    """A signature naming a shipped key id but made with another secret key fails."""
    impostor, _ = generate_keypair(b"impostor")
    secret = dataclasses.replace(impostor, keynum=bytes.fromhex("d310c6f2833e97f7"))  # 24.10's
    sums = (signed.info.first.dir / "sha256sums").read_bytes()
    (signed.info.first.dir / "sha256sums.sig").write_text(sign(secret, sums))
    with pytest.raises(ImageBuilderError, match=r"does not match \(key d310c6f2833e97f7\)"):
        _locate(signed, tmp_path, _settings(signed))
    assert signed.downloads_of(signed.info.first.archive_rel) == 0


def test_allow_unsigned_is_warned_about_at_start(signed: Any, tmp_path: Path) -> None:
    env = {
        "ASU_CI_UPSTREAM": signed.url,
        "ASU_CI_HOME": str(tmp_path / "home"),
        "ASU_CI_SIGNATURES__ALLOW_UNSIGNED": "true",
    }
    result = CliRunner().invoke(app, ["render"], env=env)
    assert result.exit_code == 0, result.output
    assert "warning: signatures.allow_unsigned is on" in result.stderr
    quiet = CliRunner().invoke(
        app, ["render"], env={**env, "ASU_CI_SIGNATURES__ALLOW_UNSIGNED": "false"}
    )
    assert quiet.exit_code == 0, quiet.output
    assert "allow_unsigned" not in quiet.stderr


def test_a_trusted_key_that_is_not_a_usign_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"signatures\.trusted_keys.*not a usign public key"):
        load_settings(None, {"signatures.trusted_keys": ["RWQ-not-a-key"]}, environ={})

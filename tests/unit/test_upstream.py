"""Reading upstream: the cached HTTP source, local sources, package index parsers, metadata."""

from __future__ import annotations

import gzip
import hashlib
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from asu_ci.config import Branch
from asu_ci.errors import ConfigError, UpstreamError
from asu_ci.http import Session
from asu_ci.upstream.metadata import (
    Versions,
    find_index,
    kmods_folder,
    newest_first,
    read_targets,
    read_versions,
    releases,
    resolve_branches,
    targets_from_overview,
)
from asu_ci.upstream.packages import parse_apk_index, parse_index, parse_opkg
from asu_ci.upstream.source import Upstream, check_relpath
from tests.support.mirror import MirrorServer
from tests.support.packages import (
    apk_index_json,
    format_packages,
    opkg_packages,
    package_records,
    parse_packages,
)

PROFILES = "releases/23.05.4/targets/ath79/generic/profiles.json"


def _no_retries() -> Session:
    return Session(timeout=(2.0, 5.0), retries=0)


def _statuses(mirror: MirrorServer) -> list[int]:
    return [record.status for record in mirror.log]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- relpaths -----------------------------------------------------------------


@pytest.mark.parametrize(
    "relpath",
    [
        "",
        "/etc/passwd",
        "../x",
        "a/../b",
        "a//b",
        "a/",
        "./a",
        "a\0b",
        "a?b=1",
        "a#b",
        "a\\b",
        "a b",
    ],
)
def test_a_relpath_that_is_not_plain_is_a_programming_error(relpath: str) -> None:
    with pytest.raises(ValueError, match="not a plain relative path"):
        check_relpath(relpath)


def test_plain_relpaths_pass() -> None:
    for relpath in (".versions.json", PROFILES, "releases/packages-23.05/x/libc++_1.0.ipk"):
        assert check_relpath(relpath) == relpath


# -- HTTP: conditional GETs and the cache --------------------------------------


def test_a_second_get_is_a_304_served_from_the_cache(mirror: MirrorServer, tmp_path: Path) -> None:
    body = (mirror.root / PROFILES).read_bytes()
    with Upstream(mirror.url, tmp_path / "cache") as upstream:
        first = upstream.get(PROFILES)
        assert first is not None and first.changed
        assert first.data == body and first.digest == hashlib.sha256(body).hexdigest()
        downloaded = upstream.bytes_downloaded
        second = upstream.get(PROFILES)
        assert second is not None and not second.changed
        assert (second.data, second.digest) == (body, first.digest)
        assert upstream.bytes_downloaded == downloaded == len(body)
        assert upstream.requests == 2
    assert _statuses(mirror) == [200, 304]
    # One body and one meta file per URL.
    assert sorted(p.suffix for p in (tmp_path / "cache").iterdir()) == [".body", ".json"]


def test_the_cache_survives_the_object_and_sees_changes(
    mirror: MirrorServer, tmp_path: Path
) -> None:
    with Upstream(mirror.url, tmp_path / "cache") as upstream:
        assert upstream.get(".versions.json") is not None
    with Upstream(mirror.url, tmp_path / "cache") as upstream:
        fetched = upstream.get(".versions.json")
        assert fetched is not None and not fetched.changed
        (mirror.root / ".versions.json").write_text('{"versions_list": []}')
        fetched = upstream.get(".versions.json")
        assert fetched is not None and fetched.changed and fetched.data == b'{"versions_list": []}'
    assert _statuses(mirror) == [200, 304, 200]


def test_a_broken_cache_entry_is_fetched_again(mirror: MirrorServer, tmp_path: Path) -> None:
    with Upstream(mirror.url, tmp_path / "cache") as upstream:
        upstream.get(PROFILES)
        for body in (tmp_path / "cache").glob("*.body"):
            body.write_bytes(b"truncated")
        fetched = upstream.get(PROFILES)
    assert fetched is not None and fetched.data == (mirror.root / PROFILES).read_bytes()
    assert _statuses(mirror) == [200, 200]


def test_missing_files_are_none(mirror: MirrorServer, tmp_path: Path) -> None:
    with Upstream(mirror.url, tmp_path / "cache") as upstream:
        assert upstream.get("releases/23.05.4/targets/nope/nope/profiles.json") is None
        assert upstream.get("nothing.json") is None


def test_a_broken_json_file_names_the_url(mirror: MirrorServer, tmp_path: Path) -> None:
    (mirror.root / ".versions.json").write_text("<html>not json</html>")
    with Upstream(mirror.url, tmp_path / "cache") as upstream, pytest.raises(UpstreamError) as err:
        read_versions(upstream)
    assert f"{mirror.url}/.versions.json: not valid JSON" in err.value.message
    assert "--upstream" in err.value.message


def test_a_server_error_is_an_upstream_error(mirror: MirrorServer, tmp_path: Path) -> None:
    mirror.fail_next("/.versions.json", status=503)
    with (
        Upstream(mirror.url, tmp_path / "cache", session=_no_retries()) as upstream,
        pytest.raises(UpstreamError, match=r"\.versions\.json: the server answered HTTP 503"),
    ):
        upstream.get(".versions.json")


def test_an_unreachable_server_is_an_upstream_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    with (
        Upstream(url, tmp_path / "cache", session=_no_retries()) as upstream,
        pytest.raises(UpstreamError) as err,
    ):
        upstream.get(".versions.json")
    assert err.value.message.startswith(
        f"{url}/.versions.json: cannot be read (Connection refused)"
    )
    assert "--upstream" in err.value.message


def test_a_thread_pool_shares_one_upstream(mirror: MirrorServer, tmp_path: Path) -> None:
    relpaths = sorted(str(p.relative_to(mirror.root)) for p in mirror.root.rglob("profiles.json"))
    with Upstream(mirror.url, tmp_path / "cache") as upstream:
        with ThreadPoolExecutor(8) as pool:
            fetched = list(pool.map(upstream.get, relpaths))
        assert upstream.requests == len(relpaths) == 75
        assert upstream.bytes_downloaded == sum(len(f.data) for f in fetched if f)
        for relpath, item in zip(relpaths, fetched, strict=True):
            assert item is not None and item.data == (mirror.root / relpath).read_bytes()


def test_download_streams_to_a_file(mirror: MirrorServer, tmp_path: Path) -> None:
    progress: list[tuple[int, int | None]] = []
    dest = tmp_path / "out" / "profiles.json"
    with Upstream(mirror.url, tmp_path / "cache") as upstream:
        upstream.download(PROFILES, dest, lambda done, total: progress.append((done, total)))
        size = dest.stat().st_size
        assert dest.read_bytes() == (mirror.root / PROFILES).read_bytes()
        assert progress[-1] == (size, size)
        assert upstream.bytes_downloaded == size
        with pytest.raises(UpstreamError, match="not found upstream"):
            upstream.download("releases/nothing.tar.zst", tmp_path / "out" / "x")
    assert sorted(p.name for p in dest.parent.iterdir()) == ["profiles.json"]
    assert not (tmp_path / "cache").exists()


def test_url_names_the_public_file(mirror: MirrorServer, tmp_path: Path) -> None:
    assert Upstream(mirror.url + "/", tmp_path).url("a/b") == f"{mirror.url}/a/b"
    local = Upstream(str(mirror.root), tmp_path)
    assert local.url("a/b") == (mirror.root / "a" / "b").as_uri()


# -- local sources ---------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["folder", "file"])
def test_local_sources_read_files(upstream_dir: Path, tmp_path: Path, scheme: str) -> None:
    base = str(upstream_dir) if scheme == "folder" else upstream_dir.as_uri()
    with Upstream(base, tmp_path / "cache") as upstream:
        fetched = upstream.get(PROFILES)
        assert fetched is not None and fetched.data == (upstream_dir / PROFILES).read_bytes()
        assert upstream.get("releases/none.json") is None
        versions = read_versions(upstream)
        assert versions is not None and versions.stable_version == "23.05.4"
        upstream.download(PROFILES, tmp_path / "copy.json")
        assert (tmp_path / "copy.json").read_bytes() == fetched.data
        assert upstream.requests == 0
    assert not (tmp_path / "cache").exists()


def test_a_missing_local_folder_is_an_upstream_error(tmp_path: Path) -> None:
    upstream = Upstream(str(tmp_path / "nowhere"), tmp_path / "cache")
    with pytest.raises(UpstreamError, match="nowhere: no such folder"):
        upstream.get(".versions.json")


def test_an_unknown_scheme_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ftp://x"):
        Upstream("ftp://x", tmp_path)


# -- package indexes --------------------------------------------------------------

HAND_WRITTEN = (
    b"Package: wpad-basic-mbedtls\r\n"
    b"Version: 2023-09-08-e5451c8a-6\r\n"
    b"Provides: hostapd-common, wpad,\r\n"
    b"  wpad-basic\r\n"
    b"Description:  a description\r\n"
    b" Package: not-a-package\r\n"
    b"\r\n"
    b"Package: wpad-mbedtls\n"
    b"Version: 2023-09-08-e5451c8a-7\n"
    b"Provides: wpad, hostapd-common (= 1)\n"
    b"\n"
    b"\n"
    b"Package: no-version\n"
    b"Architecture: all\n"
    b"\n"
    b"Version: 1.0\n"
    b"Package: version-first\n"
    b"Provides: wpad-mbedtls"
)


def test_opkg_stanzas_folded_lines_crlf_and_provides() -> None:
    index = parse_opkg(HAND_WRITTEN, "test")
    assert index.packages == {
        "wpad-basic-mbedtls": "2023-09-08-e5451c8a-6",
        "wpad-mbedtls": "2023-09-08-e5451c8a-7",
        "version-first": "1.0",
    }
    # Every provider of a provided name, sorted; a real package is never a provided name.
    assert index.provides == {
        "hostapd-common": ("wpad-basic-mbedtls", "wpad-mbedtls"),
        "wpad": ("wpad-basic-mbedtls", "wpad-mbedtls"),
        "wpad-basic": ("wpad-basic-mbedtls",),
    }
    assert index.abi == {}
    assert "not-a-package" not in index.packages and "no-version" not in index.packages


def test_opkg_abi_suffix_is_removed_and_kept_as_an_alias() -> None:
    text = (
        b"Package: libustream-mbedtls20201210\n"
        b"Version: 2024.07.28~99bd3d2b-1\n"
        b"Provides: libustream-mbedtls, libustream-ssl\n"
        b"ABIVersion: 20201210\n"
        b"\n"
        b"Package: libubox20240329\n"
        b"Version: 2024.03.29~eb9bcb64-1\n"
        b"ABIVersion: 20240329\n"
        b"\n"
        b"Package: nftables-json\n"
        b"Version: 1.0.8-1\n"
        b"Provides: nftables\n"
        b"\n"
        b"Package: nftables-nojson\n"
        b"Version: 1.0.8-1\n"
        b"Provides: nftables\n"
    )
    index = parse_opkg(text, "test")
    assert index.packages == {
        "libustream-mbedtls": "2024.07.28~99bd3d2b-1",
        "libubox": "2024.03.29~eb9bcb64-1",
        "nftables-json": "1.0.8-1",
        "nftables-nojson": "1.0.8-1",
    }
    assert index.abi == {
        "libustream-mbedtls20201210": "libustream-mbedtls",
        "libubox20240329": "libubox",
    }
    # The real name a package provides for itself is no provided name.
    assert index.provides == {
        "libustream-ssl": ("libustream-mbedtls",),
        "nftables": ("nftables-json", "nftables-nojson"),
    }
    assert index.sidecar() == {
        "abi": {"libubox20240329": "libubox", "libustream-mbedtls20201210": "libustream-mbedtls"},
        "provides": {
            "libustream-ssl": ["libustream-mbedtls"],
            "nftables": ["nftables-json", "nftables-nojson"],
        },
    }


def test_merged_indexes_first_wins_and_providers_join() -> None:
    base = parse_opkg(b"Package: a\nVersion: 1\nProvides: v\n", "base")
    other = parse_opkg(
        b"Package: a\nVersion: 2\n\nPackage: b\nVersion: 3\nProvides: v, a, w\n", "other"
    )
    merged = base.merged(other)
    assert merged.packages == {"a": "1", "b": "3"}
    assert merged.provides == {"v": ("a", "b"), "w": ("b",)}
    # A provided name that the other index has as a real package is not provided any more.
    assert base.merged(parse_opkg(b"Package: v\nVersion: 9\n", "x")).provides == {}


def test_opkg_gzip_is_detected_by_its_magic() -> None:
    plain = parse_opkg(HAND_WRITTEN, "test")
    assert parse_opkg(gzip.compress(HAND_WRITTEN), "test") == plain
    # Two gzip members (cat a.gz b.gz) are one index.
    half = HAND_WRITTEN.index(b"Package: wpad-mbedtls")
    members = gzip.compress(HAND_WRITTEN[:half]) + gzip.compress(HAND_WRITTEN[half:])
    assert parse_index("Packages.gz", members, "test") == plain


def test_broken_gzip_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match=r"x/Packages\.gz: truncated gzip"):
        parse_opkg(gzip.compress(HAND_WRITTEN)[:40], "x/Packages.gz")
    with pytest.raises(UpstreamError, match="not valid gzip"):
        parse_opkg(b"\x1f\x8b" + b"\xff" * 40, "x")


def test_opkg_at_the_scale_of_a_real_feed() -> None:
    text = opkg_packages("mips_24kc", 9000)
    records = package_records("mips_24kc", 9000)
    assert [p.name for p in parse_packages(text)] == [r.name for r in records]
    expected = {r.stripped_name: r.version for r in records}
    index = parse_opkg(gzip.compress(text.encode()), "test")
    assert len(records) == 9000
    assert index.packages == expected
    with_abi = {r.name: r.stripped_name for r in records if r.name != r.stripped_name}
    assert with_abi and index.abi == with_abi
    provided = {v for r in records for v in r.provides}
    assert provided and provided <= set(index.packages) | set(index.provides)


def test_apk_index_v2() -> None:
    doc = apk_index_json("aarch64_generic", {"busybox": "1.36.1-r2", "apk-mbedtls": "3.0-r1"})
    index = parse_index("index.json", json.dumps(doc).encode(), "test")
    assert index.packages == {"busybox": "1.36.1-r2", "apk-mbedtls": "3.0-r1"}
    assert index.provides == {} and index.abi == {}


@pytest.mark.parametrize(
    "doc", [[], {"version": 3, "packages": {}}, {"version": 2}, {"version": 2, "packages": []}]
)
def test_a_wrong_apk_index_is_an_upstream_error(doc: object) -> None:
    with pytest.raises(UpstreamError, match=r"x/index\.json: not an apk index\.json version 2"):
        parse_apk_index(json.dumps(doc).encode(), "x/index.json")


# -- metadata ----------------------------------------------------------------------


def test_versions_sort_newest_first() -> None:
    listed = [
        "22.03.7",
        "24.10.0-rc2",
        "23.05.10",
        "SNAPSHOT",
        "23.05.9",
        "24.10.0",
        "24.10.0-rc10",
    ]
    assert newest_first(listed) == [
        "SNAPSHOT",
        "24.10.0",
        "24.10.0-rc10",
        "24.10.0-rc2",
        "23.05.10",
        "23.05.9",
        "22.03.7",
    ]


def test_default_branches_are_snapshot_upcoming_stable_and_oldstable() -> None:
    listed = Versions(
        ("24.10.1", "23.05.5", "24.10.0", "23.05.4", "22.03.7", "21.02.7", "bad/../x"),
        stable_version="24.10.1",
        oldstable_version="23.05.5",
        upcoming_version="25.12.0-rc1",
    )
    branches = resolve_branches(None, listed)
    assert [(b.name, b.versions, b.snapshot) for b in branches] == [
        ("SNAPSHOT", ["SNAPSHOT"], True),
        ("25.12", ["25.12.0-rc1", "25.12-SNAPSHOT"], False),
        ("24.10", ["24.10.1", "24.10.0", "24.10-SNAPSHOT"], False),
        ("23.05", ["23.05.5", "23.05.4", "23.05-SNAPSHOT"], False),
    ]
    assert (branches[0].path, branches[0].git_branch) == ("snapshots", "main")
    # Older branches are one setting away.
    older = resolve_branches(None, listed, extra=["22.03", "21.02"])
    assert [b.name for b in older] == ["SNAPSHOT", "25.12", "24.10", "23.05", "22.03", "21.02"]
    assert older[-1].versions == ["21.02.7", "21.02-SNAPSHOT"]


def test_branches_are_derived_from_versions_list() -> None:
    listed = Versions(("23.05.3", "24.10.0-rc1", "23.05.4", "22.03.7", "bad/../x"))
    # No stable version named: the newest branch (and SNAPSHOT).
    assert [b.name for b in resolve_branches(None, listed)] == ["SNAPSHOT", "24.10"]
    listed = Versions(listed.versions_list, stable_version="23.05.4")
    branches = resolve_branches(None, listed, extra=["22.03"])
    assert [(b.name, b.versions) for b in branches] == [
        ("SNAPSHOT", ["SNAPSHOT"]),
        ("23.05", ["23.05.4", "23.05.3", "23.05-SNAPSHOT"]),
        ("22.03", ["22.03.7", "22.03-SNAPSHOT"]),
    ]
    b = branches[1]
    assert (b.path, b.path_packages, b.git_branch, b.snapshot) == (
        "releases/{version}",
        "releases/packages-{branch}",
        "openwrt-23.05",
        False,
    )
    assert [r.path for r in releases(branches)][:2] == ["snapshots", "releases/23.05.4"]


def test_configured_branches() -> None:
    listed = Versions(("23.05.3", "23.05.4", "22.03.7"))
    configured = (
        Branch(name="SNAPSHOT", snapshot=True),
        Branch(name="23.05"),
        Branch(name="22.03", versions=["22.03.7"], enabled=False, git_branch="legacy"),
    )
    snapshot, current, old = resolve_branches(configured, listed)
    assert (snapshot.versions, snapshot.path, snapshot.path_packages, snapshot.git_branch) == (
        ["SNAPSHOT"],
        "snapshots",
        "snapshots/packages",
        "main",
    )
    assert current.versions == ["23.05.4", "23.05.3"]
    assert old.git_branch == "legacy"
    assert [r.path for r in releases([snapshot, current, old])] == [
        "snapshots",
        "releases/23.05.4",
        "releases/23.05.3",
    ]


def test_bad_branch_configurations_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="is not a plain name"):
        resolve_branches((Branch(name="x", versions=["../x"]),), None)
    with pytest.raises(ConfigError, match="unique"):
        resolve_branches((Branch(name="x", versions=[]), Branch(name="x", versions=[])), None)
    same_path = resolve_branches((Branch(name="x", versions=["1.0", "2.0"], path="fixed"),), None)
    with pytest.raises(ConfigError, match="both live in 'fixed'"):
        releases(same_path)
    with pytest.raises(UpstreamError, match=r"\.versions\.json is missing upstream"):
        resolve_branches((Branch(name="23.05"),), None)


def test_metadata_of_the_fixture(upstream_dir: Path, tmp_path: Path) -> None:
    (upstream_dir / "releases/23.05.4/.targets.json").write_text(
        json.dumps({"ath79/generic": "mips_24kc", "../x/y": "a", "x86/64": "x 86"})
    )
    folder = upstream_dir / "releases/23.05.4/targets/ath79/generic/packages"
    folder.mkdir()
    (folder / "Packages").write_text(format_packages(package_records("mips_24kc", 10)))
    with Upstream(str(upstream_dir), tmp_path / "cache") as upstream:
        versions = read_versions(upstream)
        assert versions is not None and versions.digest
        assert versions == Versions(("23.05.4",), "23.05.4", "", "", digest=versions.digest)
        assert read_targets(upstream, "releases/23.05.4") == {"ath79/generic": "mips_24kc"}
        assert read_targets(upstream, "releases/1.0") is None
        found = find_index(upstream, "releases/23.05.4/targets/ath79/generic/packages")
        assert found is not None and found[0].endswith("/Packages")
        assert find_index(upstream, "releases/23.05.4/targets/x86/64/packages") is None


def test_a_versions_file_without_versions_list_is_an_upstream_error(
    upstream_dir: Path, tmp_path: Path
) -> None:
    (upstream_dir / ".versions.json").write_text('{"stable_version": "23.05.4"}')
    with pytest.raises(UpstreamError, match="no versions_list"):
        read_versions(Upstream(str(upstream_dir), tmp_path))


def test_kmods_folder_from_linux_kernel() -> None:
    kernel = {"version": "6.6.73", "release": 1, "vermagic": "0a1b2c3d"}
    assert kmods_folder("releases/24.10.0", "ath79/generic", {"linux_kernel": kernel}) == (
        "releases/24.10.0/targets/ath79/generic/kmods/6.6.73-1-0a1b2c3d"
    )
    assert kmods_folder("releases/23.05.4", "ath79/generic", {}) is None
    for bad in ({"version": "6.6", "release": "1"}, {**kernel, "vermagic": "../x"}, "6.6"):
        with pytest.raises(UpstreamError, match="linux_kernel is not"):
            kmods_folder("snapshots", "x86/64", {"linux_kernel": bad})


def test_targets_from_overview(upstream_dir: Path, tmp_path: Path) -> None:
    rel = upstream_dir / "releases/23.05.4"
    profiles = [
        {"id": "a", "target": "ath79/generic"},
        {"id": "b", "target": "x86/64"},
        {"id": "c", "target": "../x"},
        {"id": "d", "target": "ramips/nowhere"},
    ]
    (rel / ".overview.json").write_text(json.dumps({"release": "23.05.4", "profiles": profiles}))
    with Upstream(str(upstream_dir), tmp_path / "cache") as upstream:
        # Unsafe names and targets whose arch cannot be read are left out (and logged).
        assert targets_from_overview(upstream, "releases/23.05.4") == {
            "ath79/generic": "mips_24kc",
            "x86/64": "x86_64",
        }
        assert targets_from_overview(upstream, "releases/1.0") is None
    (rel / ".overview.json").write_text('{"release": "23.05.4"}')
    with (
        Upstream(str(upstream_dir), tmp_path / "cache") as upstream,
        pytest.raises(UpstreamError, match="has no list of profiles"),
    ):
        targets_from_overview(upstream, "releases/23.05.4")

"""Rendering the static index from the real 23.05.4 metadata (served on 127.0.0.1)."""

from __future__ import annotations

import functools
import json
import operator
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from asu_ci import __version__
from asu_ci.cli import app
from asu_ci.config import Branch, Server, Settings
from asu_ci.errors import UpstreamError
from asu_ci.fsutil import FileLock
from asu_ci.http import Session
from asu_ci.index.render import RenderSummary, render_tree
from asu_ci.upstream import source
from asu_ci.upstream.source import Upstream
from tests.support.imagebuilder import UPSTREAM_FIXTURES
from tests.support.mirror import MirrorServer
from tests.support.packages import (
    CORE,
    FEEDS,
    format_packages,
    package_records,
    split_feeds,
    write_apk_index,
    write_gzip,
    write_packages,
    write_text,
)

REL = "releases/23.05.4"
JSON = f"json/v1/{REL}"
SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
#: A few targets with few profiles: quick to render (the FS is the slow part).
SMALL_TARGETS = ("armsr/armv7", "armsr/armv8", "ath79/tiny", "bcm27xx/bcm2708", "x86/64")


def _settings(upstream: str, home: Path, **extra: Any) -> Settings:
    return Settings(upstream=upstream, public=home / "public", data=home / "data", **extra)


def _tree(public: Path) -> dict[str, bytes]:
    return {str(p.relative_to(public)): p.read_bytes() for p in public.rglob("*") if p.is_file()}


def _stats(public: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(public)): (p.stat().st_ino, p.stat().st_mtime_ns)
        for p in public.rglob("*")
        if p.is_file()
    }


def _load(public: Path, relpath: str) -> Any:
    return json.loads((public / relpath).read_bytes())


def _expected_device_files(upstream_dir: Path) -> dict[str, str]:
    """``<t>/<s>/<name>`` → profile id for every id and every board name one profile
    claims alone (the contested ones: :data:`CONTESTED`)."""
    expected: dict[str, str] = {}
    for path in sorted((upstream_dir / REL / "targets").glob("*/*/profiles.json")):
        target = str(path.parent.relative_to(upstream_dir / REL / "targets"))
        profiles = json.loads(path.read_bytes())["profiles"]
        claims: dict[str, set[str]] = {}
        for pid in profiles:
            for device in profiles[pid].get("supported_devices", []):
                claims.setdefault(device.replace(",", "_"), set()).add(pid)
        names = {pid: pid for pid in profiles}
        for name, pids in claims.items():
            if len(pids) == 1:
                names.setdefault(name, pids.pop())
            elif name not in names:
                names[name] = CONTESTED.get(f"{target}/{name}", "")
        for name, pid in names.items():
            if SAFE.fullmatch(name) and name not in ("index", "names"):
                expected[f"{target}/{name}"] = pid
    return expected


#: Board names two profiles claim in 23.05.4, and who gets each by the documented rule
#: (earliest in the profile's own supported_devices, then the id naming the board, then
#: the sorted id). Those not written here are checked against the rule in the test.
CONTESTED = {
    # all list it second; the id names the board, or a version of it
    "ath79/generic/wzr-hp-g450h": "buffalo_wzr-hp-g450h",
    "ath79/generic/tl-wdr4300": "tplink_tl-wdr4300-v1",
    "ipq806x/generic/ap148": "qcom_ipq8064-ap148",
    # the -legacy profile lists it first
    "mediatek/mt7623/unielec_u7623-02-emmc-512m": "unielec_u7623-02-emmc-512m-legacy",
    # both first, neither id names it: the sorted id
    "mediatek/filogic/mediatek_mt7986a-rfb-snand": "mediatek_mt7986a-rfb-nand",
    "mxs/generic/olimex_imx23-olinuxino": "olinuxino_maxi",
}


def _add_package_indexes(root: Path) -> dict[str, dict[str, str]]:
    """opkg feeds for mips_24kc (3,000 packages), apk indexes for aarch64_generic."""
    feeds = split_feeds(package_records("mips_24kc", 3000))
    for feed in FEEDS:
        folder = root / REL / "packages" / "mips_24kc" / feed
        text = format_packages(feeds[feed])
        if feed == "base":
            write_gzip(folder / "Packages.gz", text)
        elif feed == "luci":
            write_text(folder / "Packages", text)
        else:
            write_packages(folder, text)
    write_packages(root / REL / "targets/ath79/tiny/packages", format_packages(feeds[CORE]))
    apk_feed = {"busybox": "1.36.1-r2", "luci": "24.1-r1"}
    apk_target = {"kmod-e1000e": "6.6.30-r1"}
    write_apk_index(root / REL / "packages/aarch64_generic/base", "aarch64_generic", apk_feed)
    write_apk_index(root / REL / "targets/armsr/armv8/packages", "aarch64_generic", apk_target)
    return {
        "mips_24kc": {r.stripped_name: r.version for f in FEEDS for r in feeds[f]},
        "ath79/tiny": {r.stripped_name: r.version for r in feeds[CORE]},
        "aarch64_generic": apk_feed,
        "armsr/armv8": apk_target,
    }


@dataclass
class Rendered:
    """The full fixture plus generated package indexes, served and rendered once."""

    mirror: MirrorServer
    home: Path
    summary: RenderSummary
    progress: list[tuple[int, int, str]]
    packages: dict[str, dict[str, str]]

    @property
    def public(self) -> Path:
        return self.home / "public"


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    top = tmp_path_factory.mktemp("full")
    root = Path(shutil.copytree(UPSTREAM_FIXTURES, top / "upstream"))
    packages = _add_package_indexes(root)
    with MirrorServer([root]) as mirror:
        progress: list[tuple[int, int, str]] = []
        settings = _settings(mirror.url, top / "home")
        summary = render_tree(settings, on_progress=lambda *a: progress.append(a))
        yield Rendered(mirror, top / "home", summary, progress, packages)


@pytest.fixture
def small(mirror: MirrorServer) -> MirrorServer:
    """The mirror of a private copy that lists only a few targets (quick to render)."""
    path = mirror.root / REL / ".targets.json"
    targets = json.loads(path.read_text())
    path.write_text(json.dumps({t: targets[t] for t in SMALL_TARGETS}))
    return mirror


def test_the_fixture_renders_every_profile_by_id_and_board_name(full: Rendered) -> None:
    summary, public = full.summary, full.public
    assert (summary.versions, summary.targets, summary.profiles) == (1, 75, 1534)
    assert summary.files_unchanged == 0 and summary.files_written == len(_tree(public))

    expected = _expected_device_files(full.mirror.root)
    upstream_files: dict[str, Any] = {}
    for name, pid in expected.items():
        if not pid or name in CONTESTED:
            continue
        target = name.rsplit("/", 1)[0]
        device = _load(public, f"{JSON}/targets/{name}.json")
        if target not in upstream_files:
            upstream_files[target] = _load(
                full.mirror.root, f"{REL}/targets/{target}/profiles.json"
            )
        upstream = upstream_files[target]
        assert device == {
            **{k: v for k, v in upstream.items() if k != "profiles"},
            **upstream["profiles"][pid],
            "id": pid,
        }, name
    device_files = {
        str(p.relative_to(public / JSON / "targets"))[: -len(".json")]
        for p in (public / JSON / "targets").glob("*/*/*.json")
        if p.name not in ("index.json", "names.json")
    }
    assert device_files == set(expected)
    assert len({(n.rsplit("/", 1)[0], pid) for n, pid in expected.items() if pid}) == 1534
    contested = [name for name, pid in expected.items() if pid in ("", CONTESTED.get(name))]
    assert len(contested) == 37
    for name in contested:
        target, board = name.rsplit("/", 1)
        doc = upstream_files.get(target) or _load(
            full.mirror.root, f"{REL}/targets/{target}/profiles.json"
        )
        got = _load(public, f"{JSON}/targets/{name}.json")["id"]
        if name in CONTESTED:
            assert got == CONTESTED[name], name
        ranked = sorted(
            (
                [d.replace(",", "_") for d in p.get("supported_devices", [])].index(board),
                0 if pid.endswith(f"_{board}") else 1 if f"_{board}-" in pid else 2,
                pid,
            )
            for pid, p in doc["profiles"].items()
            if board in [d.replace(",", "_") for d in p.get("supported_devices", [])]
        )
        assert len(ranked) >= 2 and got == ranked[0][2], name
    # auc's request: the board name with commas as underscores.
    generic = f"{JSON}/targets/ath79/generic"
    assert _load(public, f"{generic}/tplink_archer-c7-v5.json")["id"] == "tplink_archer-c7-v5"
    assert _load(public, f"{generic}/8dev_carambola2.json")["id"] == "8dev_carambola2"
    assert _load(public, f"{generic}/carambola2.json")["id"] == "8dev_carambola2"

    archs = set(_load(full.mirror.root, f"{REL}/.targets.json").values())
    units = 75 + len(archs)
    assert [p[:2] for p in full.progress] == [(n, units) for n in range(1, units + 1)]
    assert "23.05.4 ath79/generic" in {p[2] for p in full.progress}


def test_the_download_server_files_and_overview(full: Rendered) -> None:
    public = full.public
    targets = _load(full.mirror.root, f"{REL}/.targets.json")
    overview = _load(public, "json/v1/overview.json")
    assert overview["latest"] == ["23.05.4"]
    assert overview["upstream_url"] == full.mirror.url
    assert overview["server"] == {
        "version": __version__,
        "contact": "",
        "allow_defaults": True,
        "max_custom_rootfs_size_mb": 1024,
        "max_defaults_length": 20480,
        "repository_allow_list": [],
    }
    assert overview["branches"] == {
        "23.05": {
            "name": "23.05",
            "enabled": True,
            "snapshot": False,
            "path": "releases/{version}",
            "path_packages": "releases/packages-{branch}",
            "versions": ["23.05.4"],
            "targets": targets,
            # the shipped knowledge (asu_ci/data/releases.yaml) up to 23.05's branch-off
            "package_changes": [
                {"source": s, "target": t, "revision": r, "mandatory": m}
                for s, t, r, m in [
                    ("firewall", "firewall4", 18611, False),
                    ("kmod-nft-nat6", None, 20282, True),
                    ("libustream-wolfssl", "libustream-mbedtls", 21994, False),
                    ("px5g-wolfssl", "px5g-mbedtls", 21994, False),
                    ("wpad-basic-wolfssl", "wpad-basic-mbedtls", 21994, False),
                ]
            ],
        }
    }
    assert _load(public, "json/v1/branches.json") == [
        {**overview["branches"]["23.05"], "git_branch": "openwrt-23.05", "branch_off_rev": 23069}
    ]
    assert _load(public, "json/v1/latest.json") == {"latest": ["23.05.4"]}
    assert _load(public, ".versions.json") == {
        "versions_list": ["23.05.4"],
        "stable_version": "23.05.4",
        "oldstable_version": "",
        "upcoming_version": "",
    }
    assert _load(public, f"{REL}/.targets.json") == targets
    ofs = _load(public, f"{REL}/.overview.json")
    assert ofs["release"] == "23.05.4"
    upstream_ofs = _load(full.mirror.root, f"{REL}/.overview.json")
    by_target_and_id = operator.itemgetter("target", "id")
    assert ofs["profiles"] == sorted(upstream_ofs["profiles"], key=by_target_and_id)
    for path in (full.mirror.root / REL / "targets").glob("*/*/profiles.json"):
        relpath = str(path.relative_to(full.mirror.root))
        assert (public / relpath).read_bytes() == path.read_bytes()


def test_both_title_forms(full: Rendered) -> None:
    public = full.public
    armsr = _load(public, f"{JSON}/targets/armsr/armv8/generic.json")
    assert armsr["titles"] == [{"title": "Generic EFI Boot"}]
    ath79 = _load(public, f"{JSON}/targets/ath79/generic/8dev_carambola2.json")
    assert ath79["titles"] == [{"model": "Carambola2", "vendor": "8devices"}]
    ofs = _load(public, f"{REL}/.overview.json")["profiles"]
    entries = {(p["target"], p["id"]): p for p in ofs}
    assert entries["armsr/armv7", "generic"]["titles"] == [{"title": "Generic EFI Boot"}]


def test_package_indexes_opkg_and_apk(full: Rendered) -> None:
    public, expected = full.public, full.packages
    mips = _load(public, f"{JSON}/packages/mips_24kc-index.json")
    assert len(expected["mips_24kc"]) > 2000
    assert {k: mips[k] for k in expected["mips_24kc"]} == expected["mips_24kc"]
    records = [r for r in package_records("mips_24kc", 3000) if r.feed != CORE]
    # Real names only, ABI suffix removed; the other names a request may use are beside it.
    assert set(mips) == set(expected["mips_24kc"])
    names = _load(public, f"{JSON}/packages/mips_24kc-names.json")
    provided = {v for r in records for v in r.provides} - set(mips)
    assert provided and set(names["provides"]) == provided
    for virtual, providers in names["provides"].items():
        expected_providers = {r.stripped_name for r in records if virtual in r.provides}
        assert providers == sorted(expected_providers), virtual
    with_abi = {r.name: r.stripped_name for r in records if r.abi_version}
    assert with_abi and names["abi"] == with_abi
    aarch64 = _load(public, f"{JSON}/packages/aarch64_generic-index.json")
    assert aarch64 == expected["aarch64_generic"]
    ath79 = _load(public, f"{JSON}/targets/ath79/tiny/index.json")
    assert ath79["architecture"] == "mips_24kc"
    assert {k: ath79["packages"][k] for k in expected["ath79/tiny"]} == expected["ath79/tiny"]
    assert _load(public, f"{JSON}/targets/armsr/armv8/index.json") == {
        "architecture": "aarch64_generic",
        "packages": expected["armsr/armv8"],
    }
    assert _load(public, f"{JSON}/targets/x86/64/index.json") == {
        "architecture": "x86_64",
        "packages": {},
    }
    # No feed index upstream, no file.
    assert not (public / JSON / "packages" / "x86_64-index.json").exists()
    assert full.summary.packages == len(mips) + len(ath79["packages"]) + 3


def test_a_second_render_downloads_and_writes_nothing(full: Rendered) -> None:
    before = _stats(full.public)
    full.mirror.reset()
    second = render_tree(_settings(full.mirror.url, full.home))
    assert (second.files_written, second.files_unchanged) == (0, full.summary.files_written)
    assert (second.targets, second.profiles, second.packages) == (75, 1534, full.summary.packages)
    assert 200 not in _statuses(full.mirror)
    # .versions.json, .targets.json, 75 profiles.json and the 8 package indexes.
    assert _statuses(full.mirror).count(304) == 2 + 75 + 8
    assert second.bytes_downloaded == 0 and second.requests == len(full.mirror.log)
    assert _stats(full.public) == before


def test_a_fresh_render_from_a_local_folder_is_byte_identical(
    full: Rendered, tmp_path: Path
) -> None:
    base = str(full.mirror.root)
    summary = render_tree(_settings(base, tmp_path))
    assert (summary.targets, summary.profiles, summary.requests) == (75, 1534, 0)
    local, over_http = _tree(tmp_path / "public"), _tree(full.public)
    overviews = [json.loads(t.pop("json/v1/overview.json")) for t in (local, over_http)]
    assert [o.pop("upstream_url") for o in overviews] == [base, full.mirror.url]
    assert overviews[0] == overviews[1]
    assert local == over_http


def test_a_file_url_works_too(small: MirrorServer, tmp_path: Path) -> None:
    render_tree(_settings(str(small.root), tmp_path / "folder"))
    summary = render_tree(_settings(small.root.as_uri(), tmp_path / "file"))
    assert (summary.targets, summary.requests) == (len(SMALL_TARGETS), 0)
    local, folder = _tree(tmp_path / "file" / "public"), _tree(tmp_path / "folder" / "public")
    del local["json/v1/overview.json"], folder["json/v1/overview.json"]
    assert local == folder


def test_only_what_changed_upstream_is_fetched_and_written(
    small: MirrorServer, tmp_path: Path
) -> None:
    _add_package_indexes(small.root)
    settings = _settings(small.url, tmp_path)
    render_tree(settings)
    public = tmp_path / "public"
    luci = small.root / REL / "packages/mips_24kc/luci/Packages"
    luci.write_text(luci.read_text() + "\nPackage: luci-app-new\nVersion: 1.0-r1\n")
    small.reset()
    summary = render_tree(settings)
    assert summary.files_written == 1
    assert [r.path for r in small.log if r.status == 200] == [
        f"/{REL}/packages/mips_24kc/luci/Packages"
    ]
    assert _load(public, f"{JSON}/packages/mips_24kc-index.json")["luci-app-new"] == "1.0-r1"
    # The feeds disappear: so does the index.
    for feed in FEEDS:
        for name in ("Packages", "Packages.gz"):
            (small.root / REL / "packages/mips_24kc" / feed / name).unlink(missing_ok=True)
    render_tree(settings)
    assert not (public / JSON / "packages" / "mips_24kc-index.json").exists()


def test_files_that_are_no_longer_produced_are_removed(small: MirrorServer, tmp_path: Path) -> None:
    settings = _settings(small.url, tmp_path)
    render_tree(settings)
    public = tmp_path / "public"
    tiny = small.root / REL / "targets/ath79/tiny/profiles.json"
    doc = json.loads(tiny.read_text())
    del doc["profiles"]["engenius_ecb350-v1"]
    tiny.write_text(json.dumps(doc))
    rpi = small.root / REL / "targets/bcm27xx/bcm2708/profiles.json"
    doc = json.loads(rpi.read_text())
    doc["profiles"]["rpi"]["supported_devices"].remove("raspberrypi,compute-module")
    rpi.write_text(json.dumps(doc))
    targets_path = small.root / REL / ".targets.json"
    targets = json.loads(targets_path.read_text())
    del targets["x86/64"]
    targets_path.write_text(json.dumps(targets))
    before = _stats(public)

    summary = render_tree(settings)
    assert summary.targets == len(SMALL_TARGETS) - 1
    after = _stats(public)
    gone = set(before) - set(after)
    assert {f for f in gone if "x86/64" not in f} == {
        f"{JSON}/targets/ath79/tiny/engenius_ecb350-v1.json",
        f"{JSON}/targets/bcm27xx/bcm2708/raspberrypi_compute-module.json",
    }
    assert not (public / JSON / "targets" / "x86").exists()
    assert not (public / REL / "targets" / "x86").exists()
    assert (public / JSON / "targets" / "armsr" / "armv8").is_dir()
    assert not set(after) - set(before)
    changed = {f for f in after if after[f] != before[f]}
    assert {f for f in changed if not re.search("/(ath79/tiny|bcm27xx/bcm2708)/", f)} == {
        "json/v1/overview.json",
        "json/v1/branches.json",
        f"{REL}/.overview.json",
        f"{REL}/.targets.json",
    }


def test_a_snapshot_branch_and_server_settings(small: MirrorServer, tmp_path: Path) -> None:
    snapshots = small.root / "snapshots"
    source = small.root / REL / "targets/x86/64/profiles.json"
    write_text(snapshots / "targets/x86/64/profiles.json", source.read_text())
    write_text(snapshots / ".targets.json", '{"x86/64": "x86_64"}')
    write_apk_index(snapshots / "packages/x86_64/base", "x86_64", {"apk-mbedtls": "3.0-r1"})
    branches = (Branch(name="SNAPSHOT", snapshot=True), Branch(name="23.05"))
    server = Server(contact="ops@example.org", repository_allow_list=("https://feed.example",))
    summary = render_tree(_settings(small.url, tmp_path, branches=branches, server=server))
    public = tmp_path / "public"
    assert (summary.versions, summary.targets) == (2, len(SMALL_TARGETS) + 1)
    assert summary.packages == 1
    overview = _load(public, "json/v1/overview.json")
    assert overview["latest"] == ["23.05.4"]
    assert overview["server"]["contact"] == "ops@example.org"
    assert overview["server"]["repository_allow_list"] == ["https://feed.example"]
    snapshot = overview["branches"]["SNAPSHOT"]
    assert (snapshot["path"], snapshot["versions"]) == ("snapshots", ["SNAPSHOT"])
    assert snapshot["targets"] == {"x86/64": "x86_64"}
    assert _load(public, ".versions.json")["versions_list"] == ["23.05.4"]
    assert [b["name"] for b in _load(public, "json/v1/branches.json")] == ["SNAPSHOT", "23.05"]
    assert _load(public, "json/v1/snapshots/targets/x86/64/generic.json")["id"] == "generic"
    assert _load(public, "json/v1/snapshots/packages/x86_64-index.json") == {
        "apk-mbedtls": "3.0-r1"
    }
    assert _load(public, "snapshots/.overview.json")["release"] == "SNAPSHOT"
    assert (public / "snapshots/targets/x86/64/profiles.json").read_bytes() == source.read_bytes()


def test_an_unreachable_upstream_is_an_upstream_error(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    settings = _settings(url, tmp_path)
    with (
        Upstream(url, tmp_path / "cache", Session(retries=0)) as upstream,
        pytest.raises(UpstreamError, match=r"\.versions\.json: cannot be read \(Connection"),
    ):
        render_tree(settings, upstream=upstream)
    assert not (tmp_path / "public").exists()


# -- the command line --------------------------------------------------------------


def _statuses(mirror: MirrorServer) -> list[int]:
    return [record.status for record in mirror.log]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def _dirs(home: Path) -> tuple[str, ...]:
    return ("--public", str(home / "public"), "--data", str(home / "data"))


def test_cli_render_prints_one_summary_line(small: MirrorServer, tmp_path: Path) -> None:
    public, data = tmp_path / "public", tmp_path / "data"
    common = ("--upstream", small.url, *_dirs(tmp_path))
    result = _cli("render", *common)
    assert result.exit_code == 0, result.output
    match = re.fullmatch(
        r"rendered 1 version, 5 targets, (\d+) profiles, 0 packages in \d+\.\d s "
        r"\((\d+) files written, 0 unchanged; (\d+) requests, \d\.\d MB downloaded\)\n",
        result.stdout,
    )
    assert match is not None, result.stdout
    assert result.stderr == ""
    assert (public / "json/v1/overview.json").is_file() and (data / "render-state.json").is_file()
    profiles, files, requests = match.groups()
    result = _cli("render", *common)
    assert f"{profiles} profiles" in result.stdout
    assert f"(0 files written, {files} unchanged; {requests} requests, 0.0 MB" in result.stdout


def test_cli_bad_versions_file_is_one_line(mirror: MirrorServer, tmp_path: Path) -> None:
    (mirror.root / ".versions.json").write_text("<!doctype html>")
    result = _cli("render", "--upstream", mirror.url, *_dirs(tmp_path))
    assert result.exit_code == 3
    assert result.stdout == ""
    url = re.escape(f"{mirror.url}/.versions.json")
    assert re.fullmatch(rf"asu-ci: {url}: not valid JSON \(.*\); .*--upstream.*\n", result.stderr)


@pytest.mark.parametrize("where", ["http", "folder"])
def test_cli_unreachable_upstream_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # The session's retries would only make this test wait.
    monkeypatch.setattr(source, "Session", functools.partial(Session, retries=0))
    if where == "http":
        upstream = f"http://127.0.0.1:{_free_port()}"
        expected = "cannot be read (Connection refused)"
    else:
        upstream = str(tmp_path / "nowhere")
        expected = "no such folder"
    result = _cli("render", "--upstream", upstream, *_dirs(tmp_path))
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and expected in result.stderr
    assert result.stderr.startswith(f"asu-ci: {upstream}")
    assert "Traceback" not in result.output


def test_summary_line_counts_in_words() -> None:
    summary = RenderSummary(2, 1, 0, 1, 3, 4, 0.25, 1, 2_500_000)
    assert summary.line() == (
        "rendered 2 versions, 1 target, 0 profiles, 1 package in 0.2 s "
        "(3 files written, 4 unchanged; 1 request, 2.5 MB downloaded)"
    )


def test_a_second_render_at_once_waits_for_the_first(full: Rendered) -> None:
    settings = _settings(full.mirror.url, full.home)
    finished = threading.Event()

    def second() -> None:
        render_tree(settings)
        finished.set()

    with FileLock(settings.data_dir / "render.lock"):
        thread = threading.Thread(target=second)
        thread.start()
        assert not finished.wait(0.5), "a render ran while another held the data folder"
    thread.join(timeout=60)
    assert finished.is_set()

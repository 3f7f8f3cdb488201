"""Builds of today's OpenWrt: 24.10 (opkg, kmods feed), 25.12 and SNAPSHOT (apk).

The parsers first, on the real formats (``apk list --manifest``, apk-tools'
``unable to select packages`` report and ``trying to overwrite`` error, as
apk-tools' src/commit.c and src/database.c print them), then whole builds
against the stand-ins' modern mirror on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from asu_ci.build import imagebuilder, job
from asu_ci.build.job import run_build
from asu_ci.config import Settings
from asu_ci.errors import BuildError
from asu_ci.identity.hashing import request_hash
from asu_ci.identity.identify import identify
from asu_ci.identity.validate import NormalizedRequest
from asu_ci.index.catalog import Catalog
from asu_ci.index.render import render_tree
from asu_ci.publish.local import LocalStore
from tests.support.mirror import MirrorServer
from tests.support.packages import PackageRecord, generate_apk_key, write_apk_feed

pytest_plugins = ["tests.support.fixtures"]

TARGET = "ath79/generic"
PROFILE = "tplink_archer-c7-v5"

# --- parsers on the real formats -----------------------------------------------------------


def test_apk_manifest_keeps_abi_names_and_skips_other_lines() -> None:
    text = (
        "base-files 1647~28e77f6a46\n"
        "kernel 6.12.57~09aaf05eff8dbb89ec4ddc0ce7659332-r1\n"
        "libgcc1 14.3.0-r5\n"
        "libustream-mbedtls20201210 2024.07.28~99bd3d2b-r1\n"
        "Installing packages...\n"
        "OK: 12 MiB in 98 packages\n"
    )
    assert job.parse_manifest(text) == {
        "base-files": "1647~28e77f6a46",
        "kernel": "6.12.57~09aaf05eff8dbb89ec4ddc0ce7659332-r1",
        "libgcc1": "14.3.0-r5",
        "libustream-mbedtls20201210": "2024.07.28~99bd3d2b-r1",
    }
    assert job.parse_manifest("luci - git-24.086.45142-09d5a38\n") == {
        "luci": "git-24.086.45142-09d5a38"
    }


@pytest.mark.parametrize(
    ("label", "name"),
    [
        ("dnsmasq-full-2.90-r2", "dnsmasq-full"),
        ("kmod-nf-ipt6-6.6.73-r1", "kmod-nf-ipt6"),
        ("libustream-mbedtls20201210-2024.07.28~99bd3d2b-r1", "libustream-mbedtls20201210"),
        ("nftables-nojson-1.1.1-r1[nftables=1.1.1-r1]", "nftables-nojson"),
        ("libfoo-2-1.0-r1", "libfoo-2"),
        ("busybox-1.36.1", "busybox"),
        ("world", "world"),
    ],
)
def test_apk_package_labels_lose_their_version(label: str, name: str) -> None:
    assert job.apk_name(label) == name


APK_REPORT = """\
ERROR: unable to select packages:
  asu-ghost (no such package):
    required by: world[asu-ghost]
  nftables (virtual):
    note: please select one of the 'provided by' packages explicitly
    provided by: nftables-json nftables-nojson
    required by: world[nftables]
  dnsmasq-full-2.90-r2:
    conflicts: dnsmasq-2.90-r2[dnsmasq=2.90-r2]
    satisfies: world[dnsmasq-full]
  libfoo-1.0-r1:
    breaks: luci-app-foo-2.0-r1[libfoo>=2] luci-app-bar-2.0-r1[libfoo>=2]
            luci-app-baz-2.0-r1[libfoo>=2]
    satisfies: world[libfoo]
make[2]: *** [Makefile:222: package_install] Error 99
make[1]: *** [Makefile:191: _call_manifest] Error 2
make: *** [Makefile:342: manifest] Error 2
"""


def test_apk_report_names_every_package() -> None:
    assert job.impossible_selection(APK_REPORT) == (
        "Impossible package selection: missing (asu-ghost) "
        "conflicts (dnsmasq-full, dnsmasq, libfoo, luci-app-foo, luci-app-bar, luci-app-baz) "
        "virtual (nftables, provided by nftables-json | nftables-nojson: name one of them)"
    )


def test_apk_conflict_alone_has_no_empty_missing_part() -> None:
    report = (
        "ERROR: unable to select packages:\n  dnsmasq-full-2.90-r2:\n"
        "    conflicts: dnsmasq-2.90-r2[dnsmasq=2.90-r2]\n    satisfies: world[dnsmasq-full]\n"
        "make: *** [Makefile:41: manifest] Error 1\n"
    )
    assert job.impossible_selection(report) == (
        "Impossible package selection: conflicts (dnsmasq-full, dnsmasq)"
    )


def test_apk_2_unsatisfiable_constraints_and_overwrites() -> None:
    old = (
        "ERROR: unsatisfiable constraints:\n"
        "  asu-ghost (missing):\n    required by: world[asu-ghost]\n"
    )
    assert job.impossible_selection(old) == "Impossible package selection: missing (asu-ghost)"
    overwrite = (
        "(12/40) Installing tc-full (6.11.0-r1)\n"
        "ERROR: tc-tiny-6.11.0-r1: trying to overwrite usr/sbin/tc owned by tc-full-6.11.0-r1.\n"
        "1 error; 4 MiB in 40 packages\nmake: *** [Makefile:41: manifest] Error 1\n"
    )
    assert job.impossible_selection(overwrite) == (
        "Impossible package selection: conflicts (tc-tiny, tc-full)"
    )


def test_opkg_file_clash_and_unreadable_output() -> None:
    clash = (
        "Collected errors:\n"
        " * check_data_file_clashes: Package tc-tiny wants to install file /usr/sbin/tc\n"
        "\tBut that file is already provided by package  * tc-full\n"
        " * opkg_install_cmd: Cannot install package tc-tiny.\n"
    )
    assert job.impossible_selection(clash) == (
        "Impossible package selection: conflicts (tc-tiny, tc-full)"
    )
    assert job.impossible_selection("make: *** [Makefile:41: manifest] Error 1\n") == (
        "Impossible package selection (make: *** [Makefile:41: manifest] Error 1)"
    )


def test_requested_names_find_what_installed_them() -> None:
    manifest = {
        "libgcc1": "14.3.0-r5",
        "libustream-mbedtls20201210": "2024.07.28~99bd3d2b-r1",
        "libnl-tiny1": "2023.07.27~bc92a280-r1",
        "libpcre2": "10.42-r1",
        "nftables-json": "1.1.1-r1",
        "kmod-usb-storage": "6.12.57-r1",
        "libfoo2-3": "1-r1",
    }
    aliases = {
        "nftables": ["nftables-json", "nftables-nojson"],
        "libjson-c5": ["libjson-c"],
    }
    real = {"libgcc", "libustream-mbedtls", "libpcre2", "nftables-json", "kmod-usb-storage"}

    def found(name: str, installed: dict[str, str] = manifest) -> str | None:
        return job.installed_name(name, installed, aliases, real)

    assert found("libgcc") == "libgcc1"
    assert found("libustream-mbedtls") == "libustream-mbedtls20201210"
    assert found("libnl-tiny") == "libnl-tiny1"
    assert found("libfoo2") == "libfoo2-3"  # a name ending in a digit: "-" before the ABI
    assert found("nftables") == "nftables-json"
    assert found("kmod-usb-storage") == "kmod-usb-storage"
    assert found("libpcre") is None  # libpcre2 is a package of its own
    assert found("kmod-usb") is None  # kernel modules carry no ABI suffix
    assert found("libjson-c5", {"libjson-c": "0.16-r3"}) == "libjson-c"  # opkg's STRIP_ABI
    assert found("libfoo", {"libfoo1": "1", "libfoo2": "2"}) is None  # ambiguous


# --- repositories of an apk ImageBuilder ---------------------------------------------------

KMODS = "https://downloads.openwrt.org/releases/25.12.0/targets/ath79/generic/kmods/6.12.57-1-09aaf05eff8dbb89ec4ddc0ce7659332"


def test_apk_repositories_replace_keeps_the_kmods_feed(tmp_path: Path) -> None:
    ib = tmp_path / "ib"
    (ib / "keys").mkdir(parents=True)
    (ib / "repositories").write_text(
        "https://downloads.openwrt.org/releases/25.12.0/targets/ath79/generic/packages/packages.adb\n"
        f"{KMODS}/packages.adb\n"
        "https://downloads.openwrt.org/releases/25.12.0/packages/mips_24kc/base/packages.adb\n"
    )
    key = generate_apk_key(b"custom-feed").public_pem
    added = imagebuilder.configure_repositories(
        ib, [("custom", "http://127.0.0.1:1/feed")], [key], "replace"
    )
    assert added == ["http://127.0.0.1:1/feed/packages.adb"]
    assert (ib / "repositories").read_text().splitlines() == [
        f"{KMODS}/packages.adb",
        "http://127.0.0.1:1/feed/packages.adb",
    ]
    pems = list((ib / "keys").glob("asu-*.pem"))
    assert len(pems) == 1 and pems[0].read_text() == key.strip() + "\n"


def test_opkg_repositories_replace_keeps_the_kmods_feed(tmp_path: Path) -> None:
    ib = tmp_path / "ib"
    ib.mkdir()
    (ib / "repositories.conf").write_text(
        "src/gz openwrt_core https://downloads.openwrt.org/releases/24.10.0/targets/ath79/generic/packages\n"
        "src/gz openwrt_kmods https://downloads.openwrt.org/releases/24.10.0/targets/ath79/generic/kmods/6.6.73-1-910b4b1f98d5d476ce2222b4a21cf1ba\n"
        "src/gz openwrt_base https://downloads.openwrt.org/releases/24.10.0/packages/mips_24kc/base\n"
        "src imagebuilder file:packages\noption check_signature\n"
    )
    imagebuilder.configure_repositories(ib, [("custom", "http://127.0.0.1:1/feed")], [], "replace")
    assert (ib / "repositories.conf").read_text().splitlines() == [
        "src/gz openwrt_kmods https://downloads.openwrt.org/releases/24.10.0/targets/ath79/generic/kmods/6.6.73-1-910b4b1f98d5d476ce2222b4a21cf1ba",
        "src/gz custom http://127.0.0.1:1/feed",
        "src imagebuilder file:packages",
        "option check_signature",
    ]


# --- whole builds on the modern stand-in mirror --------------------------------------------


@dataclass
class Modern:
    mirror: MirrorServer
    settings: Settings
    catalog: Catalog
    store: LocalStore

    def request(self, version: str, **fields: Any) -> NormalizedRequest:
        raw = {"version": version, "target": TARGET, "profile": PROFILE, **fields}
        return identify(raw, self.catalog, self.settings.server).request

    def build(self, request: NormalizedRequest) -> dict[str, Any]:
        return run_build(request, settings=self.settings, store=self.store, catalog=self.catalog)

    def fails(self, request: NormalizedRequest, match: str) -> dict[str, Any]:
        with pytest.raises(BuildError, match=match):
            self.build(request)
        status = self.store.status(request_hash(request))
        assert status is not None and status["status"] == 500
        return status

    def offered(self, version: str) -> dict[str, str]:
        """The target's and its architecture's index: real name → version."""
        path = self.catalog.path_of(version)
        public = self.settings.public_dir / "json/v1" / str(path)
        target = json.loads((public / "targets" / TARGET / "index.json").read_bytes())
        arch = json.loads(
            (public / "packages" / f"{target['architecture']}-index.json").read_bytes()
        )
        return {**arch, **target["packages"]}


@pytest.fixture(scope="module")
def modern(modern_mirror: MirrorServer, tmp_path_factory: pytest.TempPathFactory) -> Modern:
    home = tmp_path_factory.mktemp("modern-build")
    assert modern_mirror.info is not None
    settings = Settings(
        upstream=modern_mirror.url,
        public=home / "public",
        data=home / "data",
        signatures={"trusted_keys": [modern_mirror.info.public_key]},
        server={"repository_allow_list": ["127.0.0.1"]},
        build={"timeout_seconds": 120},
    )
    render_tree(settings)
    return Modern(modern_mirror, settings, Catalog(settings.public_dir), LocalStore(home / "store"))


def test_24_10_build_installs_kernel_modules_from_the_kmods_feed(modern: Modern) -> None:
    info = modern.mirror.info
    assert info is not None
    wanted = ["kmod-usb-storage", "kmod-fs-ext4", "block-mount"]
    body = modern.build(modern.request("24.10.0", packages=wanted))
    assert {"kmod-usb-storage", "kmod-fs-ext4", "block-mount"} <= set(body["manifest"])
    kmods_rel = info.target("24.10.0", TARGET).kmods_rel
    assert kmods_rel is not None and modern.mirror.count(f"/{kmods_rel}/Packages.gz") >= 1
    offered = modern.offered("24.10.0")
    assert body["manifest"]["kmod-usb-storage"] == offered["kmod-usb-storage"]


@pytest.mark.parametrize("version", ["25.12.0", "SNAPSHOT"])
def test_apk_build_checks_versions_through_abi_suffixes(modern: Modern, version: str) -> None:
    offered = modern.offered(version)
    names = ["libgcc", "libustream-mbedtls", "kmod-usb-storage", "busybox"]
    request = modern.request(
        version,
        packages=["libustream-mbedtls", "kmod-usb-storage"],
        packages_versions={name: offered[name] for name in names},
    )
    body = modern.build(request)
    manifest = body["manifest"]
    assert manifest["libgcc1"] == offered["libgcc"]
    assert manifest["libustream-mbedtls20201210"] == offered["libustream-mbedtls"]
    assert "libgcc" not in manifest
    assert modern.mirror.info is not None
    assert body["version_code"] == modern.mirror.info.target(version, TARGET).revision

    wrong = modern.request(version, packages_versions={"libgcc": "0.1-r1", "busybox": "0.1-r1"})
    status = modern.fails(wrong, "package versions differ")
    assert status["detail"] == (
        "Impossible package selection: package versions differ from the request: "
        f"busybox (requested 0.1-r1, got {offered['busybox']}), "
        f"libgcc (requested 0.1-r1, got {offered['libgcc']} as libgcc1)"
    )


def test_apk_conflict_names_both_packages(modern: Modern) -> None:
    status = modern.fails(modern.request("25.12.0", packages=["dnsmasq-full"]), "Impossible")
    assert status["detail"] == "Impossible package selection: conflicts (dnsmasq-full, dnsmasq)"
    assert "unable to select packages" in status["stderr"]


def test_apk_overwrite_names_both_packages(modern: Modern) -> None:
    status = modern.fails(modern.request("25.12.0", packages=["tc-tiny", "tc-full"]), "Impossible")
    assert status["detail"] == "Impossible package selection: conflicts (tc-tiny, tc-full)"
    assert "trying to overwrite usr/sbin/tc" in status["stderr"]


def test_apk_unknown_package_is_named(modern: Modern) -> None:
    """The index offers a name the ImageBuilder's feeds lack (they disagree for a moment
    while upstream publishes): apk's "no such package" becomes the detail."""
    path = modern.catalog.path_of("25.12.0")
    index = modern.settings.public_dir / "json/v1" / str(path) / "targets" / TARGET / "index.json"
    original = index.read_bytes()
    document = json.loads(original)
    document["packages"]["asu-ghost"] = "1.0-r1"
    index.write_text(json.dumps(document))
    try:
        fresh = Modern(modern.mirror, modern.settings, Catalog(modern.catalog.public), modern.store)
        status = fresh.fails(fresh.request("25.12.0", packages=["asu-ghost"]), "Impossible")
    finally:
        index.write_bytes(original)
    assert status["detail"] == "Impossible package selection: missing (asu-ghost)"
    assert "asu-ghost (no such package)" in status["stderr"]


def test_custom_apk_repository_with_a_pem_key(modern: Modern) -> None:
    info = modern.mirror.info
    assert info is not None
    key = generate_apk_key(b"asu-ci-custom-apk-feed", "custom.pem")
    record = PackageRecord("asu-extra", "1.0-r1", "custom", info.arch)
    write_apk_feed(info.root / "custom-apk", info.arch, [record], key)
    url = f"{modern.mirror.url}/custom-apk"
    body = modern.build(
        modern.request(
            "25.12.0",
            packages=["asu-extra"],
            repositories={"custom": url},
            repository_keys=[key.public_pem],
        )
    )
    assert body["manifest"]["asu-extra"] == "1.0-r1"
    assert modern.mirror.count("/custom-apk/packages.adb") >= 1
    shared = next((modern.settings.data_dir / "imagebuilders" / "25.12.0").glob("*/*/*/root"))
    assert "custom-apk" not in (shared / "repositories").read_text()
    assert not [
        p for p in (shared / "keys").iterdir() if re.fullmatch(r"asu-[0-9a-f]{64}\.pem", p.name)
    ]

    unsigned = generate_apk_key(b"asu-ci-other-key", "other.pem")
    status = modern.fails(
        modern.request(
            "25.12.0",
            packages=["asu-extra", "kmod-fs-ext4"],
            repositories={"custom": url},
            repository_keys=[unsigned.public_pem],
        ),
        "Impossible",
    )
    assert status["detail"] == "Impossible package selection: missing (asu-extra)"
    assert "UNTRUSTED signature" in status["stderr"]


def test_a_changed_archive_is_read_again_once(modern: Modern, tmp_path: Path) -> None:
    """The ImageBuilder download does not match sha256sums (upstream replaced it, or
    the bytes were damaged): sha256sums is read again and the archive fetched once more."""
    info = modern.mirror.info
    assert info is not None
    settings = modern.settings.model_copy(update={"data": tmp_path / "data"})
    archive = info.target("SNAPSHOT", TARGET).archive_rel
    modern.mirror.corrupt_next(f"/{archive}")
    before = modern.mirror.count(f"/{archive}")
    body = run_build(
        modern.request("SNAPSHOT", packages=["kmod-fs-ext4"]),
        settings=settings,
        store=LocalStore(tmp_path / "store"),
        catalog=modern.catalog,
    )
    assert body["manifest"]["kmod-fs-ext4"]
    assert modern.mirror.count(f"/{archive}") == before + 2

    modern.mirror.corrupt_next(f"/{archive}", times=2)
    with pytest.raises(BuildError, match="does not match its sha256sums entry"):
        run_build(
            modern.request("SNAPSHOT", packages=["kmod-fs-ext4", "block-mount"]),
            settings=settings.model_copy(update={"data": tmp_path / "data2"}),
            store=LocalStore(tmp_path / "store"),
            catalog=modern.catalog,
        )


def test_a_moved_revision_reads_upstream_again_before_failing(
    modern: Modern, tmp_path: Path
) -> None:
    """The request names a revision the ImageBuilder upstream no longer has: the
    version's index is rendered again (it now lists the ImageBuilder's revision), then
    the build fails, so the next request resolves the current revision."""
    info = modern.mirror.info
    assert info is not None
    current = info.target("SNAPSHOT", TARGET).revision
    request = modern.request("SNAPSHOT", packages=["block-mount"], version_code="r1-0000000000")
    profiles = modern.settings.public_dir / "snapshots/targets" / TARGET / "profiles.json"
    profiles.unlink()  # what the next render must write again, from upstream
    status = modern.fails(request, "also after reading upstream again")
    assert status["detail"] == (
        f"Received incorrect version {current} (requested r1-0000000000): the ImageBuilder "
        "on the download server has another revision than the request, also after reading "
        f"upstream again; the index now lists {current}; ask for the current one"
    )
    assert json.loads(profiles.read_bytes())["version_code"] == current

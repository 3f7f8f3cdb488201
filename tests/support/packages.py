"""Generators of realistic OpenWrt package indexes.

Two formats exist on the download server:

* opkg (releases up to 24.10): ``Packages`` files of RFC-822 style stanzas in
  ``targets/<t>/<s>/packages/`` (kernel modules and target packages, the
  "core" feed) and ``packages/<arch>/<feed>/`` for the feeds ``base``,
  ``luci``, ``packages``, ``routing`` and ``telephony``;
* apk (25.x and snapshots): ``packages/index.json`` =
  ``{"version": 2, "architecture": arch, "packages": {name: version}}``.

:func:`package_records` builds a deterministic universe of packages for one
architecture: the well-known names every OpenWrt device has (``base-files``,
``busybox``, ``libc``, ``luci`` …, with real-looking versions, dependencies,
``Provides``/``Conflicts`` and ABI-versioned libraries such as
``libubus20230605``) plus generated ones, so that ``count`` can reach the
thousands like a real ``mips_24kc`` feed. Every dependency of every package can
be resolved inside the universe.

Release eras (:class:`ReleaseShape`, chosen by :func:`release_shape` from the
version, e.g. ``release_shape("24.10.0")``) change the universe the way the
real releases differ:

* ``23.05`` (23.05.x and older): opkg, ``<kernel>-1`` kmod versions, kmods in
  the core feed, ``auc``, ``luci-app-opkg``, ``opkg``, the
  ``*-wolfssl``/``*-mbedtls`` variants (23.05.6+ keep this set but move the
  kmods to the kmods feed, as their ``linux_kernel`` says);
* ``24.10`` (24.10.x): opkg with the
  apk-compatible versions 24.10 introduced (``1.36.1-r2``,
  ``2024.09.01~598d9fbb-r1``), ``kernel`` ``<k>~<vermagic>-r1``, every
  ``kmod-*`` in the pseudo feed :data:`KMODS`
  (``targets/<t>/<s>/kmods/<k>-<release>-<vermagic>/``), ``owut`` instead of
  ``auc``, ``luci-app-package-manager`` instead of ``luci-app-opkg``,
  ``luci-app-diag-core``;
* ``25.12`` (25.12.x and SNAPSHOT): as 24.10, plus apk: ``apk-mbedtls`` /
  ``apk-openssl`` (providing ``apk``) instead of ``opkg``. Names keep their
  ABI suffix (``libustream-mbedtls20201210``, tag
  ``openwrt:abiversion=20201210``), provides carry a version
  (``libustream-mbedtls=<version>``) and default variants a
  ``provider-priority`` (``nftables-json`` for ``nftables``; which packages
  get one is this stand-in's choice). :func:`apk_index_document` gives
  the ``packages.adb`` STAND-IN and :func:`apk_index_from_records` the real
  ``index.json`` v2 (``scripts/make-index-json.py``: ABI suffix removed).

Every era also has what upgrade flows across releases need (``_era_extras``):
the TLS variants, ``kmod-nft-nat6``, ``luci-i18n-opkg-*`` (23.05) or
``luci-i18n-package-manager-*`` (later) and, from 24.10,
``ipq-wifi-tplink_archer-c6-v2``.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import json
import random
import re
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

FEEDS: tuple[str, ...] = ("base", "luci", "packages", "routing", "telephony")
"""The arch feeds of a release, in the order of ``repositories.conf``."""

CORE = "core"
"""Pseudo feed name of ``targets/<t>/<s>/packages`` (kernel and kmods)."""

KMODS = "kmods"
"""Pseudo feed name of ``targets/<t>/<s>/kmods/<version>-<release>-<vermagic>``
(24.10 and later: every ``kmod-*``)."""

KERNEL_VERSION = "5.15.162"
"""Linux version of the 23.05.4 kmods."""

ARCH_ALL = "all"


@dataclass(frozen=True)
class PackageRecord:
    """One package of an opkg feed, i.e. one stanza of a ``Packages`` file."""

    name: str
    version: str
    feed: str
    architecture: str
    section: str = "utils"
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    abi_version: str | None = None
    source: str = ""
    source_name: str = ""
    license: str = "GPL-2.0"
    installed_size: int = 1024
    size: int = 1024
    sha256: str = ""
    description: str = ""
    source_date_epoch: int = 1721081658
    maintainer: str | None = None

    @property
    def filename(self) -> str:
        """The ``Filename`` of the ipk: ``<name>_<version>_<arch>.ipk``."""
        return f"{self.name}_{self.version}_{self.architecture}.ipk"

    @property
    def stripped_name(self) -> str:
        """The name without its ABI suffix (what ``opkg --strip-abi`` prints)."""
        if self.abi_version and self.name.endswith(self.abi_version):
            return self.name[: -len(self.abi_version)]
        return self.name

    def stanza(self) -> str:
        """The stanza for a ``Packages`` file (without the separating blank line)."""
        lines = [f"Package: {self.name}", f"Version: {self.version}"]
        if self.depends:
            lines.append("Depends: " + ", ".join(self.depends))
        if self.provides:
            lines.append("Provides: " + ", ".join(self.provides))
        if self.conflicts:
            lines.append("Conflicts: " + ", ".join(self.conflicts))
        lines += [
            f"Source: {self.source}",
            f"SourceName: {self.source_name or self.stripped_name}",
            f"License: {self.license}",
            f"Section: {self.section}",
            f"SourceDateEpoch: {self.source_date_epoch}",
        ]
        if self.abi_version:
            lines.append(f"ABIVersion: {self.abi_version}")
        if self.maintainer:
            lines.append(f"Maintainer: {self.maintainer}")
        lines += [
            f"Architecture: {self.architecture}",
            f"Installed-Size: {self.installed_size}",
            f"Filename: {self.filename}",
            f"Size: {self.size}",
            f"SHA256sum: {self.sha256}",
        ]
        description = self.description or f"{self.stripped_name} package."
        first, *rest = description.split("\n")
        lines.append(f"Description:  {first}")
        lines += [f" {line}" if line else " ." for line in rest]
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class _Known:
    """A well-known package: the part of a record that is not generated."""

    name: str
    version: str
    feed: str
    section: str
    depends: tuple[str, ...] = ()
    provides: tuple[str, ...] = ()
    conflicts: tuple[str, ...] = ()
    abi: str | None = None
    source: str = ""
    license: str = "GPL-2.0"
    arch_all: bool = False
    description: str = ""


def _k(
    name: str,
    version: str,
    feed: str,
    section: str,
    depends: str = "libc",
    *,
    provides: str = "",
    conflicts: str = "",
    abi: str | None = None,
    source: str = "",
    license: str = "GPL-2.0",
    arch_all: bool = False,
    description: str = "",
) -> _Known:
    def split(text: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in text.split(",") if part.strip())

    return _Known(
        name=name,
        version=version,
        feed=feed,
        section=section,
        depends=split(depends),
        provides=split(provides),
        conflicts=split(conflicts),
        abi=abi,
        source=source,
        license=license,
        arch_all=arch_all,
        description=description,
    )


_KERNEL = "kernel (=@KERNEL@)"
_WPAD_VARIANTS = (
    "wpad-basic-mbedtls",
    "wpad-basic-openssl",
    "wpad-basic-wolfssl",
    "wpad-mbedtls",
    "wpad-openssl",
    "wpad-wolfssl",
    "wpad-mesh-openssl",
)
_UBOX = "libubox20230523"
_UBUS = "libubus20230605"
_UCI = "libuci20130104"
_BLOB = "libblobmsg-json20230523"
_LUCI_V = "git-24.073.29889-cd7e519"


def _wpad(name: str, tls: str) -> _Known:
    others = ", ".join(v for v in _WPAD_VARIANTS if v != name)
    return _k(
        name,
        "2023-09-08-e5ccbfc6-6",
        "base",
        "net",
        f"libc, hostapd-common, {_UBUS}, libucode20230711, {tls}",
        provides="hostapd, wpa-supplicant, wpad",
        conflicts=others,
        source="package/network/services/hostapd",
        license="BSD-3-Clause",
        description="This package contains a full featured IEEE 802.1x/WPA/EAP/RADIUS\n"
        "Authenticator and Supplicant.",
    )


def _kmod(name: str, depends: str = "", description: str = "") -> _Known:
    deps = ", ".join(d for d in ("libc", _KERNEL, depends) if d)
    return _k(
        name,
        f"{KERNEL_VERSION}-1",
        CORE,
        "kernel",
        deps,
        source="package/kernel/linux",
        description=description or f"Kernel support for {name.removeprefix('kmod-')}.",
    )


def _luci(name: str, depends: str = "luci-base", section: str = "luci") -> _Known:
    return _k(
        name,
        _LUCI_V,
        "luci",
        section,
        depends,
        source=f"feeds/luci/applications/{name}",
        license="Apache-2.0",
        arch_all=name.startswith(("luci-app-", "luci-theme-", "luci-proto-", "luci-i18n-")),
        description=f"LuCI {name.removeprefix('luci-')}",
    )


KNOWN: tuple[_Known, ...] = (
    # --- core: kernel and kernel modules (targets/<t>/<s>/packages) ---
    _k("kernel", "@KERNEL@", CORE, "sys", "", source="package/kernel/linux"),
    _k(
        "base-files",
        "1565-@REVISION@",
        CORE,
        "base",
        f"libc, netifd, jsonfilter, usign, openwrt-keyring, fstools, fwtool, {_UBOX}",
        source="package/base-files",
        description="This package contains a base filesystem and system scripts for OpenWrt.",
    ),
    _kmod("kmod-cfg80211", "kmod-crypto-aead"),
    _kmod("kmod-crypto-aead"),
    _kmod("kmod-crypto-cmac", "kmod-crypto-aead"),
    _kmod("kmod-mac80211", "kmod-cfg80211, kmod-crypto-cmac"),
    _kmod("kmod-ath", "kmod-mac80211"),
    _kmod("kmod-ath9k-common", "kmod-ath"),
    _kmod("kmod-ath9k", "kmod-ath9k-common", "This module adds support for wireless adapters"),
    _kmod("kmod-ath10k-ct", "kmod-ath, kmod-hwmon-core"),
    _kmod("kmod-hwmon-core"),
    _kmod("kmod-gpio-button-hotplug", "", "Kernel GPIO Buttons module"),
    _kmod("kmod-nfnetlink"),
    _kmod("kmod-nf-conntrack"),
    _kmod("kmod-nf-reject"),
    _kmod("kmod-nf-nat", "kmod-nf-conntrack"),
    _kmod("kmod-nf-flow", "kmod-nf-conntrack"),
    _kmod("kmod-nft-core", "kmod-nfnetlink, kmod-nf-reject, kmod-nf-conntrack"),
    _kmod("kmod-nft-fib", "kmod-nft-core"),
    _kmod("kmod-nft-nat", "kmod-nft-core, kmod-nf-nat"),
    _kmod("kmod-nft-reject", "kmod-nft-core"),
    _kmod("kmod-nft-offload", "kmod-nf-flow, kmod-nft-nat"),
    _kmod("kmod-lib-crc-ccitt"),
    _kmod("kmod-slhc"),
    _kmod("kmod-ppp", "kmod-lib-crc-ccitt, kmod-slhc"),
    _kmod("kmod-pppox", "kmod-ppp"),
    _kmod("kmod-pppoe", "kmod-ppp, kmod-pppox"),
    _kmod("kmod-swconfig"),
    _kmod("kmod-usb-core"),
    _kmod("kmod-usb-ehci", "kmod-usb-core"),
    _kmod("kmod-usb2", "kmod-usb-core, kmod-usb-ehci"),
    _kmod("kmod-usb-ohci", "kmod-usb-core"),
    _kmod("kmod-usb-chipidea2", "kmod-usb2"),
    _kmod("kmod-usb-storage", "kmod-usb-core"),
    _kmod("kmod-usb-ledtrig-usbport", "kmod-usb-core"),
    _kmod("kmod-fs-ext4"),
    _kmod("kmod-udptunnel4"),
    _kmod("kmod-udptunnel6"),
    _kmod("kmod-wireguard", "kmod-udptunnel4, kmod-udptunnel6"),
    _kmod("kmod-batman-adv", "kmod-lib-crc16, kmod-cfg80211"),
    _kmod("kmod-lib-crc16"),
    _kmod("kmod-sched-cake"),
    # --- base ---
    _k("libc", "1.2.4-4", "base", "libs", "libgcc1", source="toolchain", license="MIT"),
    _k(
        "libgcc1",
        "12.3.0-4",
        "base",
        "libs",
        "libc",
        provides="libgcc",
        abi="1",
        source="toolchain",
        license="GPL-3.0-with-GCC-exception",
    ),
    _k("libpthread", "1.2.4-4", "base", "libs", "libgcc1", source="toolchain", license="MIT"),
    _k("librt", "1.2.4-4", "base", "libs", "libpthread", source="toolchain", license="MIT"),
    _k(
        "busybox",
        "1.36.1-1",
        "base",
        "base",
        "libc",
        source="package/utils/busybox",
        description="The Swiss Army Knife of embedded Linux.\n"
        "It slices, it dices, it makes Julian Fries.",
    ),
    _k("ca-bundle", "20230311-1", "base", "base", "", arch_all=True, license="MPL-2.0"),
    _k(
        "dnsmasq",
        "2.90-2",
        "base",
        "net",
        f"libc, {_UBUS}",
        source="package/network/services/dnsmasq",
        description="It is intended to provide coupled DNS and DHCP service to a LAN.",
    ),
    _k(
        "dnsmasq-full",
        "2.90-2",
        "base",
        "net",
        f"libc, {_UBUS}, libnettle8, kmod-nft-core, libnftnl11",
        provides="dnsmasq",
        conflicts="dnsmasq",
        source="package/network/services/dnsmasq",
    ),
    _k("dropbear", "2022.82-6", "base", "net", "libc", source="package/network/services/dropbear"),
    _k(
        "firewall4",
        "2023-09-01-598d9fbb-1",
        "base",
        "net",
        "libc, kmod-nft-core, kmod-nft-fib, kmod-nft-offload, kmod-nft-nat, kmod-nft-reject, "
        "nftables-json, ucode, ucode-mod-fs, ucode-mod-ubus, ucode-mod-uci",
        source="package/network/config/firewall4",
        license="ISC",
        description="This package provides an nftables-based implementation of the UCI firewall.",
    ),
    _k(
        "fstools",
        "2023-02-28-bfe882d5-1",
        "base",
        "base",
        f"libc, ubox, {_UBOX}, {_UCI}, {_BLOB}, libjson-c5",
        source="package/system/fstools",
    ),
    _k("fwtool", "2019-11-12-8f7fe925-1", "base", "base", "libc"),
    _k("jshn", "2023-05-23-75a3b870-1", "base", "utils", f"libc, libjson-c5, {_UBOX}, {_BLOB}"),
    _k("jsonfilter", "2024-01-23-594cfa86-1", "base", "base", f"libc, {_UBOX}, libjson-c5"),
    _k("libjson-c5", "0.16-3", "base", "libs", "libc", provides="libjson-c", abi="5"),
    _k(
        "libjson-script20230523",
        "2023-05-23-75a3b870-1",
        "base",
        "libs",
        f"libc, {_UBOX}",
        provides="libjson-script",
        abi="20230523",
    ),
    _k(
        _UBOX,
        "2023-05-23-75a3b870-1",
        "base",
        "libs",
        "libc",
        provides="libubox",
        abi="20230523",
        source="package/libs/libubox",
        license="ISC",
        description="Basic utility library",
    ),
    _k(
        _UBUS,
        "2023-06-05-f787c97b-1",
        "base",
        "libs",
        f"libc, {_UBOX}",
        provides="libubus",
        abi="20230605",
        source="package/system/ubus",
        license="LGPL-2.1",
    ),
    _k(
        _UCI,
        "2023-08-10-5781664d-1",
        "base",
        "libs",
        f"libc, {_UBOX}",
        provides="libuci",
        abi="20130104",
        source="package/system/uci",
        license="LGPL-2.1",
    ),
    _k(
        _BLOB,
        "2023-05-23-75a3b870-1",
        "base",
        "libs",
        f"libc, libjson-c5, {_UBOX}",
        provides="libblobmsg-json",
        abi="20230523",
        source="package/libs/libubox",
    ),
    _k(
        "libmbedtls12",
        "2.28.8-1",
        "base",
        "libs",
        "libc",
        provides="libmbedtls",
        abi="12",
        license="GPL-2.0-or-later",
    ),
    _k(
        "libustream-mbedtls20201210",
        "2023-02-25-498f6e26-1",
        "base",
        "libs",
        f"libc, {_UBOX}, libmbedtls12",
        provides="libustream-mbedtls, libustream-ssl",
        abi="20201210",
        license="ISC",
    ),
    _k(
        "libustream-openssl20201210",
        "2023-02-25-498f6e26-1",
        "base",
        "libs",
        f"libc, {_UBOX}, libopenssl3",
        provides="libustream-openssl, libustream-ssl",
        abi="20201210",
        license="ISC",
    ),
    _k(
        "libuclient20201210",
        "2023-04-13-007d9454-1",
        "base",
        "libs",
        f"libc, {_UBOX}",
        provides="libuclient",
        abi="20201210",
        license="ISC",
    ),
    _k(
        "libnl-tiny1",
        "2023-07-27-bc92a280-1",
        "base",
        "libs",
        "libc",
        provides="libnl-tiny",
        abi="1",
        license="LGPL-2.1",
    ),
    _k(
        "libopenssl3",
        "3.0.14-1",
        "base",
        "libs",
        "libc",
        provides="libopenssl",
        abi="3",
        license="Apache-2.0",
    ),
    _k(
        "libpcap1",
        "1.10.4-1",
        "base",
        "libs",
        "libc",
        provides="libpcap",
        abi="1",
        license="BSD-3-Clause",
    ),
    _k("libnftnl11", "1.2.6-1", "base", "libs", "libc, libmnl0", provides="libnftnl", abi="11"),
    _k("libmnl0", "1.0.5-1", "base", "libs", "libc", provides="libmnl", abi="0"),
    _k("jansson4", "2.14-3", "base", "libs", "libc", provides="jansson", abi="4", license="MIT"),
    _k("libnettle8", "3.9.1-1", "base", "libs", "libc, libgmp10", provides="libnettle", abi="8"),
    _k("libgmp10", "6.2.1-1", "base", "libs", "libc", provides="libgmp", abi="10"),
    _k(
        "libiwinfo20230701",
        "2023-07-01-ca79f641-1",
        "base",
        "libs",
        f"libc, {_UCI}, libnl-tiny1",
        provides="libiwinfo",
        abi="20230701",
    ),
    _k(
        "libucode20230711",
        "2023-11-07-a6e75e02-1",
        "base",
        "libs",
        "libc, libjson-c5",
        provides="libucode",
        abi="20230711",
        license="ISC",
    ),
    _k(
        "libncurses6",
        "6.4-2",
        "base",
        "libs",
        "libc, terminfo",
        provides="libncurses",
        abi="6",
        license="MIT",
    ),
    _k("terminfo", "6.4-2", "base", "utils", "libc", license="MIT"),
    _k("logd", "2022-08-13-4c7b720b-2", "base", "base", f"libc, {_UBOX}, {_UBUS}, {_BLOB}"),
    _k("mtd", "26", "base", "utils", f"libc, {_UBOX}"),
    _k(
        "netifd",
        "2024-01-04-c18cc79d-2",
        "base",
        "base",
        f"libc, {_UCI}, libnl-tiny1, {_UBUS}, ubus, ubusd, jshn, {_UBOX}",
        source="package/network/config/netifd",
    ),
    _k(
        "nftables-json",
        "1.0.8-1",
        "base",
        "net",
        "libc, kmod-nft-core, libnftnl11, jansson4, libmnl0",
        provides="nftables",
        conflicts="nftables-nojson",
    ),
    _k(
        "nftables-nojson",
        "1.0.8-1",
        "base",
        "net",
        "libc, kmod-nft-core, libnftnl11, libmnl0",
        provides="nftables",
        conflicts="nftables-json",
    ),
    _k("odhcp6c", "2023-05-12-bcd28363-20", "base", "net", f"libc, {_UBOX}"),
    _k(
        "odhcpd",
        "2023-10-24-d8118f6e-1",
        "base",
        "net",
        f"libc, {_UBOX}, {_UCI}, {_UBUS}",
        conflicts="odhcpd-ipv6only",
    ),
    _k(
        "odhcpd-ipv6only",
        "2023-10-24-d8118f6e-1",
        "base",
        "net",
        f"libc, {_UBOX}, {_UCI}, {_UBUS}",
        conflicts="odhcpd",
    ),
    _k("openwrt-keyring", "2022-03-25-62471e69-2", "base", "base", "", arch_all=True),
    _k(
        "opkg",
        "2022-02-24-d038e5b6-2",
        "base",
        "base",
        f"libc, uclient-fetch, libpthread, {_UBOX}",
        source="package/system/opkg",
    ),
    _k("ppp", "2.4.9.git-2021-01-04-4", "base", "net", "libc, kmod-ppp", license="BSD-4-Clause"),
    _k(
        "ppp-mod-pppoe",
        "2.4.9.git-2021-01-04-4",
        "base",
        "net",
        "libc, kmod-pppoe, ppp (>= 2.4.9)",
        license="BSD-4-Clause",
    ),
    _k(
        "procd",
        "2023-06-25-2db83655-2",
        "base",
        "base",
        f"libc, ubusd, ubus, libjson-script20230523, ubox, {_UBOX}, {_UBUS}, {_BLOB}, "
        "libjson-c5, jshn",
    ),
    _k("procd-seccomp", "2023-06-25-2db83655-2", "base", "base", f"libc (>= 1.2), {_UBOX}"),
    _k(
        "procd-ujail",
        "2023-06-25-2db83655-2",
        "base",
        "base",
        f"libc, {_UBOX}, {_UCI}, {_UBUS}, {_BLOB}",
    ),
    _k("swconfig", "12", "base", "base", f"libc, {_UCI}, libnl-tiny1, kmod-swconfig"),
    _k("uboot-envtools", "2023.04-1", "base", "utils", "libc (>= 1.2)"),
    _k("ubox", "2022-08-13-4c7b720b-2", "base", "base", f"libc, {_UBOX}, {_UBUS}, {_UCI}"),
    _k("ubus", "2023-06-05-f787c97b-1", "base", "base", f"libc, {_UBUS}, {_BLOB}, ubusd"),
    _k("ubusd", "2023-06-05-f787c97b-1", "base", "base", f"libc, {_UBOX}, {_BLOB}"),
    _k("uci", "2023-08-10-5781664d-1", "base", "base", f"libc, {_UCI}"),
    _k("ucode", "2023-11-07-a6e75e02-1", "base", "utils", "libc, libucode20230711", license="ISC"),
    _k("ucode-mod-fs", "2023-11-07-a6e75e02-1", "base", "utils", "libc, libucode20230711"),
    _k(
        "ucode-mod-ubus",
        "2023-11-07-a6e75e02-1",
        "base",
        "utils",
        f"libc, libucode20230711, {_UBUS}, {_BLOB}",
    ),
    _k(
        "ucode-mod-uci", "2023-11-07-a6e75e02-1", "base", "utils", f"libc, libucode20230711, {_UCI}"
    ),
    _k(
        "uclient-fetch",
        "2023-04-13-007d9454-1",
        "base",
        "net",
        "libc, libuclient20201210",
        license="ISC",
    ),
    _k("urandom-seed", "3", "base", "base", "libc, getrandom"),
    _k("getrandom", "2022-08-13-4c7b720b-2", "base", "base", "libc"),
    _k("urngd", "2023-11-01-44365eb1-1", "base", "utils", f"libc, {_UBOX}"),
    _k("usign", "2020-05-23-f1f65026-1", "base", "base", f"libc, {_UBOX}", license="ISC"),
    _k("hostapd-common", "2023-09-08-e5ccbfc6-6", "base", "net", "libc"),
    _wpad("wpad-basic-mbedtls", "libmbedtls12"),
    _wpad("wpad-basic-openssl", "libopenssl3"),
    _wpad("wpad-basic-wolfssl", "libwolfssl5.7.2.e624513f"),
    _wpad("wpad-mbedtls", "libmbedtls12"),
    _wpad("wpad-openssl", "libopenssl3"),
    _wpad("wpad-wolfssl", "libwolfssl5.7.2.e624513f"),
    _wpad("wpad-mesh-openssl", "libopenssl3"),
    _k(
        "libwolfssl5.7.2.e624513f",
        "5.7.2-stable-1",
        "base",
        "libs",
        "libc",
        provides="libwolfssl",
        abi="5.7.2.e624513f",
    ),
    _k("iwinfo", "2023-07-01-ca79f641-1", "base", "utils", "libc, libiwinfo20230701"),
    _k(
        "ip-full",
        "6.3.0-1",
        "base",
        "net",
        "libc, libnl-tiny1, libbpf1, libelf1, libmnl0",
        provides="ip",
    ),
    _k("libbpf1", "1.2.2-1", "base", "libs", "libc, libelf1, zlib", provides="libbpf", abi="1"),
    _k("libelf1", "0.189-1", "base", "libs", "libc, zlib", provides="libelf", abi="1"),
    _k("zlib", "1.2.13-1", "base", "libs", "libc", license="Zlib"),
    _k(
        "rpcd",
        "2023-07-01-c07ab2f9-1",
        "base",
        "utils",
        f"libc, {_UBUS}, {_UBOX}, {_UCI}, {_BLOB}, libjson-c5",
    ),
    _k("rpcd-mod-file", "2023-07-01-c07ab2f9-1", "base", "utils", "libc, rpcd"),
    _k("rpcd-mod-luci", "20240305-1", "base", "utils", f"libc, rpcd, {_UBOX}, libnl-tiny1"),
    _k("rpcd-mod-ucode", "2023-07-01-c07ab2f9-1", "base", "utils", "libc, rpcd, libucode20230711"),
    _k("rpcd-mod-rrdns", "20170710", "base", "utils", "libc, rpcd"),
    _k("uhttpd", "2023-06-25-34a8a74d-2", "base", "net", f"libc, {_UBUS}, {_UBOX}"),
    _k("uhttpd-mod-ubus", "2023-06-25-34a8a74d-2", "base", "net", f"libc, uhttpd, {_UBUS}"),
    _k("cgi-io", "2022-08-10-901b0f04-21", "base", "net", f"libc, {_UBOX}, {_UBUS}"),
    _k("block-mount", "2023-02-28-bfe882d5-1", "base", "base", f"libc, ubox, {_UBOX}, {_UCI}"),
    _k("e2fsprogs", "1.47.0-2", "base", "utils", "libc, libuuid1, libext2fs2"),
    _k("libuuid1", "2.39-2", "base", "libs", "libc", provides="libuuid", abi="1"),
    _k("libext2fs2", "1.47.0-2", "base", "libs", "libc, libuuid1", provides="libext2fs", abi="2"),
    _k("rssileds", "4", "base", "utils", "libc, libiwinfo20230701"),
    _k("uqmi", "2022-10-20-99f2b4fc-1", "base", "net", f"libc, {_UBOX}, {_BLOB}"),
    # --- luci ---
    _luci("luci", "luci-light, luci-app-opkg, luci-theme-bootstrap", "luci"),
    _luci("luci-ssl", "luci, libustream-mbedtls20201210"),
    _luci(
        "luci-light",
        "luci-base, luci-app-firewall, luci-mod-admin-full, luci-proto-ppp, luci-proto-ipv6, "
        "rpcd-mod-rrdns, luci-theme-bootstrap, uhttpd, uhttpd-mod-ubus",
    ),
    _luci(
        "luci-base",
        "libc, cgi-io, rpcd, rpcd-mod-file, rpcd-mod-luci, rpcd-mod-ucode, ucode, "
        "ucode-mod-fs, ucode-mod-uci, ucode-mod-ubus",
    ),
    _luci("luci-mod-admin-full", "luci-base, luci-mod-network, luci-mod-status, luci-mod-system"),
    _luci("luci-mod-network"),
    _luci("luci-mod-status"),
    _luci("luci-mod-system"),
    _luci("luci-theme-bootstrap"),
    _luci("luci-proto-ppp"),
    _luci("luci-proto-ipv6"),
    _luci("luci-proto-wireguard", "luci-base, wireguard-tools"),
    _luci("luci-app-firewall", "luci-base, firewall4"),
    _luci("luci-app-opkg", "luci-base, opkg"),
    _luci("luci-app-attendedsysupgrade", "luci-base, attendedsysupgrade-common, rpcd-mod-file"),
    _luci("luci-app-sqm", "luci-base, sqm-scripts"),
    _luci("luci-app-statistics", "luci-base, collectd, rrdtool1"),
    _luci("luci-app-upnp", "luci-base, miniupnpd"),
    _luci("luci-app-ddns", "luci-base, ddns-scripts"),
    _luci("luci-app-adblock", "luci-base, adblock"),
    _luci("luci-app-wol", "luci-base, etherwake"),
    _luci("luci-app-ttyd", "luci-base, ttyd"),
    # --- packages ---
    _k(
        "tcpdump",
        "4.99.4-1",
        "packages",
        "net",
        "libc, libpcap1",
        license="BSD-3-Clause",
        description="Network monitoring and data acquisition tool",
    ),
    _k("tcpdump-mini", "4.99.4-1", "packages", "net", "libc, libpcap1", license="BSD-3-Clause"),
    _k("htop", "3.2.2-2", "packages", "admin", "libc, libncurses6"),
    _k("nano", "7.2-1", "packages", "utils", "libc, libncurses6", license="GPL-3.0-or-later"),
    _k("curl", "8.7.1-1", "packages", "net", "libc, libcurl4", license="MIT"),
    _k(
        "libcurl4",
        "8.7.1-1",
        "packages",
        "libs",
        "libc, libmbedtls12, zlib",
        provides="libcurl",
        abi="4",
        license="MIT",
    ),
    _k(
        "wget-ssl",
        "1.24.5-1",
        "packages",
        "net",
        "libc, libpcre2, zlib, libopenssl3",
        provides="gnu-wget, wget",
        conflicts="wget-nossl",
        license="GPL-3.0-or-later",
    ),
    _k(
        "wget-nossl",
        "1.24.5-1",
        "packages",
        "net",
        "libc, libpcre2, zlib",
        provides="gnu-wget, wget",
        conflicts="wget-ssl",
        license="GPL-3.0-or-later",
    ),
    _k("libpcre2", "10.42-1", "packages", "libs", "libc", license="BSD-3-Clause"),
    _k("iperf3", "3.17.1-1", "packages", "net", "libc, libiperf3", license="BSD-3-Clause"),
    _k("libiperf3", "3.17.1-1", "packages", "libs", "libc", license="BSD-3-Clause"),
    _k("openssh-sftp-server", "9.7p1-1", "packages", "net", "libc", license="BSD-2-Clause"),
    _k(
        "auc",
        "0.3.2-1",
        "packages",
        "utils",
        f"libc, attendedsysupgrade-common, libuclient20201210, {_UBUS}, {_UCI}, {_BLOB}",
    ),
    _k("attendedsysupgrade-common", "10", "packages", "utils", "", arch_all=True),
    _k("sqm-scripts", "1.6.0-1", "packages", "net", "libc, tc, kmod-sched-cake", arch_all=True),
    _k("tc", "6.3.0-1", "packages", "net", "libc, libnl-tiny1"),
    _k("wireguard-tools", "1.0.20210914-2", "packages", "net", "libc, kmod-wireguard, ip"),
    _k("collectd", "5.12.0-48", "packages", "utils", "libc, libpthread, zlib, libltdl7"),
    _k("libltdl7", "2.4.7-1", "packages", "libs", "libc", provides="libltdl", abi="7"),
    _k("rrdtool1", "1.0.50-3", "packages", "utils", "libc, librrd1"),
    _k("librrd1", "1.0.50-3", "packages", "libs", "libc, zlib", provides="librrd", abi="1"),
    _k(
        "miniupnpd",
        "2.3.3-3",
        "packages",
        "net",
        "libc, libcap-ng0, libuuid1",
        license="BSD-3-Clause",
    ),
    _k("libcap-ng0", "0.8.3-1", "packages", "libs", "libc", provides="libcap-ng", abi="0"),
    _k("ddns-scripts", "2.8.2-45", "packages", "net", "libc, uclient-fetch", arch_all=True),
    _k(
        "adblock",
        "4.2.2-1",
        "packages",
        "net",
        "libc, jshn, jsonfilter, coreutils-sort",
        arch_all=True,
    ),
    _k("coreutils", "9.3-2", "packages", "utils", "libc"),
    _k("coreutils-sort", "9.3-2", "packages", "utils", "libc, coreutils"),
    _k("etherwake", "1.09-5", "packages", "net", "libc"),
    _k("ttyd", "1.7.4-2", "packages", "utils", "libc, libjson-c5, libwebsockets-full"),
    _k(
        "libwebsockets-full",
        "4.3.3-1",
        "packages",
        "libs",
        "libc, libopenssl3, zlib",
        provides="libwebsockets",
        conflicts="libwebsockets-openssl",
        license="MIT",
    ),
    _k(
        "libwebsockets-openssl",
        "4.3.3-1",
        "packages",
        "libs",
        "libc, libopenssl3, zlib",
        provides="libwebsockets",
        conflicts="libwebsockets-full",
        license="MIT",
    ),
    _k("python3-light", "3.11.7-1", "packages", "lang", "libc, libpthread, zlib, libffi"),
    _k("python3", "3.11.7-1", "packages", "lang", "libc, python3-light"),
    _k("libffi", "3.4.4-1", "packages", "libs", "libc", license="MIT"),
    _k("perl", "5.28.1-10", "packages", "lang", "libc, libpthread", license="GPL-1.0-or-later"),
    _k("php8", "8.2.20-1", "packages", "lang", "libc, libpcre2, zlib", license="PHP-3.01"),
    _k("lua", "5.1.5-11", "packages", "lang", "libc, liblua5.1.5", license="MIT"),
    _k("liblua5.1.5", "5.1.5-11", "packages", "libs", "libc", provides="liblua", abi="5.1.5"),
    _k("node", "v18.20.3-1", "packages", "lang", "libc, libopenssl3, zlib", license="MIT"),
    _k(
        "prometheus-node-exporter-lua",
        "2022.12.21-1",
        "packages",
        "utils",
        "libc, lua",
        arch_all=True,
    ),
    # --- routing ---
    _k("babeld", "1.13.1-1", "routing", "net", f"libc, {_UBUS}, {_UBOX}", license="MIT"),
    _k("bird2", "2.15-1", "routing", "net", "libc, libpthread"),
    _k("batctl-full", "2023.1-3", "routing", "net", "libc, kmod-batman-adv, libnl-tiny1"),
    _k("olsrd", "0.9.8-6", "routing", "net", "libc", license="BSD-3-Clause"),
    _k("quagga", "1.2.4-6", "routing", "net", "libc, librt"),
    _k("alfred", "2023.1-1", "routing", "net", "libc, librt"),
    # --- telephony ---
    _k(
        "asterisk",
        "20.8.1-1",
        "telephony",
        "net",
        "libc, libopenssl3, libncurses6, libpthread, zlib, jansson4, libuuid1",
    ),
    _k("baresip", "3.9.0-1", "telephony", "net", "libc, libre"),
    _k("libre", "3.9.0-1", "telephony", "libs", "libc, libopenssl3, zlib"),
    _k("kamailio", "5.7.4-1", "telephony", "net", "libc, libncurses6, libopenssl3"),
    _k("freeswitch", "1.10.11-1", "telephony", "net", "libc, libopenssl3, libpcre2, zlib"),
    _k("siproxd", "0.8.3-1", "telephony", "net", "libc, libltdl7, libosip2-15"),
    _k("libosip2-15", "5.3.1-1", "telephony", "libs", "libc", provides="libosip2", abi="15"),
)
"""The well-known packages of an OpenWrt 23.05 release (versions are close to real)."""


@dataclass(frozen=True)
class _Family:
    """How generated packages of one kind look."""

    feed: str
    prefix: str
    base: str | None
    section: str
    weight: int
    arch_all: bool = False


_FAMILIES: tuple[_Family, ...] = (
    _Family("packages", "python3-", "python3-light", "lang", 14),
    _Family("packages", "perl-", "perl", "lang", 8),
    _Family("packages", "php8-mod-", "php8", "lang", 4),
    _Family("packages", "collectd-mod-", "collectd", "utils", 4),
    _Family("packages", "lua-", "lua", "lang", 3),
    _Family("packages", "node-", "node", "lang", 2),
    _Family(
        "packages",
        "prometheus-node-exporter-lua-",
        "prometheus-node-exporter-lua",
        "utils",
        2,
        True,
    ),
    _Family("packages", "lib", None, "libs", 8),
    _Family("packages", "", None, "utils", 10),
    _Family("luci", "luci-i18n-", None, "luci", 22, True),
    _Family("luci", "luci-app-", "luci-base", "luci", 3, True),
    _Family(CORE, "kmod-", "kernel", "kernel", 8),
    _Family("routing", "bird2-", "bird2", "net", 1),
    _Family("routing", "olsrd-mod-", "olsrd", "net", 1),
    _Family("routing", "", None, "net", 2),
    _Family("telephony", "asterisk-", "asterisk", "net", 4),
    _Family("telephony", "baresip-mod-", "baresip", "net", 1),
    _Family("telephony", "kamailio-mod-", "kamailio", "net", 1),
    _Family("telephony", "freeswitch-mod-", "freeswitch", "net", 1),
)

_SYLLABLES = (
    "ba",
    "co",
    "de",
    "fi",
    "gu",
    "ha",
    "jo",
    "ka",
    "lu",
    "mi",
    "no",
    "pa",
    "qui",
    "ro",
    "su",
    "ti",
    "vo",
    "wa",
    "xe",
    "yo",
    "za",
    "net",
    "cfg",
    "mon",
    "log",
    "ssl",
    "dns",
    "vpn",
    "usb",
    "ctl",
    "io",
    "web",
    "http",
    "json",
    "xml",
    "zip",
    "time",
    "pkt",
    "mesh",
    "snmp",
    "ipc",
)
_LANGS = (
    "ar",
    "bg",
    "bn",
    "ca",
    "cs",
    "da",
    "de",
    "el",
    "es",
    "fi",
    "fr",
    "he",
    "hi",
    "hu",
    "it",
    "ja",
    "ko",
    "lt",
    "mr",
    "ms",
    "nb",
    "nl",
    "pl",
    "pt",
    "pt-br",
    "ro",
    "ru",
    "sk",
    "sv",
    "ta",
    "tr",
    "uk",
    "vi",
    "zh-cn",
    "zh-tw",
    "yue",
    "ga",
    "lv",
    "fa",
    "id",
)
_LICENSES = ("GPL-2.0", "GPL-2.0-or-later", "MIT", "BSD-3-Clause", "Apache-2.0", "ISC", "LGPL-2.1")


ERAS: tuple[str, ...] = ("23.05", "24.10", "25.12")
"""The package-set eras :func:`release_shape` knows (see the module docstring)."""


@dataclass(frozen=True)
class ReleaseShape:
    """How the download server publishes one release (see :func:`release_shape`)."""

    version: str
    era: str
    """``23.05``, ``24.10`` or ``25.12``: which package set and version style."""
    package_manager: str
    """``opkg`` or ``apk``."""
    kmods_feed: bool
    """kmods in ``targets/<t>/<s>/kmods/…`` and ``linux_kernel`` in profiles.json."""
    compression: str
    """ImageBuilder archive: ``xz`` or ``zst``."""
    kernel: str
    """Linux version of the kmods (``linux_kernel.version``)."""
    revision: str
    """``version_code`` of the release."""
    kernel_release: str = "1"
    """``linux_kernel.release``."""
    kernel_vermagic: str = ""
    """``linux_kernel.vermagic`` when given (e.g. by a real profiles.json)."""

    @property
    def apk(self) -> bool:
        return self.package_manager == "apk"

    @property
    def vermagic(self) -> str:
        """``linux_kernel.vermagic``: given, or 32 hex digits derived from the revision."""
        if self.kernel_vermagic:
            return self.kernel_vermagic
        return hashlib.md5(self.revision.encode(), usedforsecurity=False).hexdigest()

    @property
    def kmods_dir(self) -> str:
        """``<version>-<release>-<vermagic>``: the kmods feed folder name."""
        return f"{self.kernel}-{self.kernel_release}-{self.vermagic}"

    @property
    def linux_kernel(self) -> dict[str, str] | None:
        """The ``linux_kernel`` object of profiles.json (None before the kmods feed)."""
        if not self.kmods_feed:
            return None
        return {"release": self.kernel_release, "vermagic": self.vermagic, "version": self.kernel}


_ERA_KERNEL = {"23.05": KERNEL_VERSION, "24.10": "6.6.73", "25.12": "6.12.57"}
_KNOWN_REVISIONS = {
    "23.05.4": "r24012-d8dd03c46f",
    "24.10.0": "r28427-6df0e3d02a",
}


def _version_key(version: str) -> tuple[int, int, int] | None:
    parts = version.split("-")[0].split(".")
    try:
        numbers = [int(p) for p in parts[:3]]
    except ValueError:
        return None
    while len(numbers) < 3:
        numbers.append(0)
    return numbers[0], numbers[1], numbers[2]


def release_shape(version: str, **overrides: object) -> ReleaseShape:
    """The shape of ``version`` on the download server; ``overrides`` replace fields.

    SNAPSHOT and 25.12+ are apk (``.tar.zst``, kmods feed, 6.12 kernel); 24.10
    (and 23.05.6+, which got the kmods feed and ``linux_kernel``) opkg with the
    kmods feed; everything older opkg with kmods in the core feed and ``.tar.xz``.
    Unknown point releases get a generated, stable ``r<N>-<hash>`` revision.
    A release-branch snapshot (``24.10-SNAPSHOT``) has its branch's shape.
    """
    key = _version_key(version)
    if version.upper() == "SNAPSHOT" or key is None or key[:2] >= (25, 12):
        era, manager, kmods, compression = "25.12", "apk", True, "zst"
    elif key[:2] >= (24, 10):
        era, manager, kmods, compression = "24.10", "opkg", True, "zst"
    else:
        era, manager, kmods, compression = "23.05", "opkg", key >= (23, 5, 6), "xz"
    kernel = _ERA_KERNEL[era] if era != "23.05" or not kmods else "5.15.167"
    if version.upper() == "SNAPSHOT":
        kernel = "6.12.60"
    revision = _KNOWN_REVISIONS.get(version)
    if revision is None:
        seed = int(hashlib.sha256(version.encode()).hexdigest()[:6], 16)
        base = {"23.05": 24000, "24.10": 28400, "25.12": 32300}[era]
        if version.upper() == "SNAPSHOT":
            base = 33000
        elif version.upper().endswith("-SNAPSHOT"):
            base += 900  # a branch snapshot is built after the branch's releases
        digest = hashlib.sha1(version.encode(), usedforsecurity=False).hexdigest()[:10]
        revision = f"r{base + seed % 900}-{digest}"
    shape = ReleaseShape(version, era, manager, kmods, compression, kernel, revision)
    if overrides:
        shape = dataclasses.replace(shape, **overrides)  # type: ignore[arg-type]
    return shape


def apk_version(version: str) -> str:
    """An opkg-era version in the style 24.10+ use (``2.90-2`` → ``2.90-r2``,
    ``2023-09-01-598d9fbb-1`` → ``2023.09.01~598d9fbb-r1``,
    ``git-24.073.29889-cd7e519`` → ``24.073.29889~cd7e519``)."""
    dated = re.fullmatch(r"(\d{4})-(\d{2})-(\d{2})-([0-9a-f]+)-(\d+)", version)
    if dated:
        year, month, day, commit, release = dated.groups()
        return f"{year}.{month}.{day}~{commit}-r{release}"
    git = re.fullmatch(r"git-(\d+\.\d+\.\d+)-([0-9a-f]+)", version)
    if git:
        return f"{git.group(1)}~{git.group(2)}"
    upstream, sep, release = version.rpartition("-")
    if sep and release.isdigit():
        return f"{upstream}-r{release}"
    return version


# Renames across releases (asu's package_changes.py and the branch-off
# revisions in issue 10): name in 23.05 -> name from this era on.
_ERA_DROPS: dict[str, frozenset[str]] = {
    "23.05": frozenset(),
    "24.10": frozenset({"auc", "luci-app-opkg"}),
    "25.12": frozenset({"auc", "luci-app-opkg", "opkg"}),
}


def _era_adds(era: str) -> tuple[_Known, ...]:
    if era == "23.05":
        return ()
    adds = [
        _k(
            "owut",
            "2025-01-05-ba4bcbe5-1",
            "packages",
            "utils",
            "ucode, ucode-mod-fs, ucode-mod-ubus, ucode-mod-uci, ucode-mod-uclient, "
            "attendedsysupgrade-common, rpcd-mod-file",
            arch_all=True,
            source="feeds/packages/utils/owut",
            description="Over-The-Air upgrade tool (attended sysupgrade client).",
        ),
        _k("ucode-mod-uclient", "2024-07-22-5507654a-1", "base", "utils", "libc, libucode20230711"),
        _luci("luci-app-package-manager", "luci-base"),
        _luci("luci-app-diag-core", "luci-base"),
        _k("tc-tiny", "6.11.0-1", "base", "net", "libc, libnl-tiny1"),
        _k("tc-full", "6.11.0-1", "base", "net", "libc, libnl-tiny1, libbpf1"),
    ]
    if era == "25.12":
        adds += [
            _k(
                "apk-mbedtls",
                "2025-01-02-d1ad1e85-1",
                "base",
                "base",
                "libc, libmbedtls12, zlib",
                provides="apk",
                conflicts="apk-openssl",
                source="package/system/apk",
                description="Alpine Package Keeper (mbedtls).",
            ),
            _k(
                "apk-openssl",
                "2025-01-02-d1ad1e85-1",
                "base",
                "base",
                "libc, libopenssl3, zlib",
                provides="apk",
                conflicts="apk-mbedtls",
                source="package/system/apk",
                description="Alpine Package Keeper (openssl).",
            ),
        ]
    return tuple(adds)


def era_default_packages(defaults: Iterable[str], era: str) -> list[str]:
    """A 23.05 ``default_packages`` list as the era has it (``opkg`` → ``apk-mbedtls``)."""
    result = [("apk-mbedtls" if name == "opkg" and era == "25.12" else name) for name in defaults]
    return sorted(set(result))


def _era_extras(era: str) -> tuple[_Known, ...]:
    """Packages upgrade flows across releases need, generated with their own
    random stream so that the rest of a 23.05 universe stays as it was: the
    TLS variants (``*-wolfssl`` / ``*-mbedtls``), ``kmod-nft-nat6``, the
    ``luci-i18n-opkg-*`` → ``luci-i18n-package-manager-*`` language packs and,
    from 24.10, ``ipq-wifi-tplink_archer-c6-v2`` (asu's package_changes.py)."""
    tls = (
        _kmod("kmod-nft-nat6", "kmod-nft-nat"),
        _k(
            "libustream-wolfssl20201210",
            "2023-02-25-498f6e26-1",
            "base",
            "libs",
            f"libc, {_UBOX}, libwolfssl5.7.2.e624513f",
            provides="libustream-wolfssl, libustream-ssl",
            abi="20201210",
            license="ISC",
        ),
        _k("px5g-mbedtls", "10", "base", "utils", "libc, libmbedtls12", conflicts="px5g-wolfssl"),
        _k(
            "px5g-wolfssl",
            "9",
            "base",
            "utils",
            "libc, libwolfssl5.7.2.e624513f",
            conflicts="px5g-mbedtls",
        ),
    )
    if era == "23.05":
        app = "luci-app-opkg"
        return (*tls, *(_luci(f"luci-i18n-opkg-{lang}", app) for lang in ("de", "fr")))
    app = "luci-app-package-manager"
    return (
        *tls,
        *(_luci(f"luci-i18n-package-manager-{lang}", app) for lang in ("de", "fr")),
        _k(
            "ipq-wifi-tplink_archer-c6-v2",
            "2024-09-20-6c8e8ef2-1",
            CORE,
            "firmware",
            "",
            source="package/firmware/ipq-wifi",
            license="ISC",
            description="Board data file for TP-Link Archer C6 v2.",
        ),
    )


_PRIORITY = {"nftables-json": 100, "apk-mbedtls": 100, "libustream-mbedtls20201210": 100}
"""``provider_priority`` of the default variants (apk resolves a provided name by it)."""

_FILE_CLASHES = {"tc-tiny": "usr/sbin/tc", "tc-full": "usr/sbin/tc"}
"""Files two packages ship without declaring a conflict ("trying to overwrite")."""


def kernel_package_version(
    revision: str = "r24012-d8dd03c46f", shape: ReleaseShape | None = None
) -> str:
    """The version of the ``kernel`` package (kmods depend on it with ``=``)."""
    if shape is not None and shape.era != "23.05":
        return f"{shape.kernel}~{shape.vermagic}-r1"
    vermagic = hashlib.md5(revision.encode(), usedforsecurity=False).hexdigest()
    kernel = shape.kernel if shape is not None else KERNEL_VERSION
    return f"{kernel}-1-{vermagic}"


def _arch_seed(arch: str, seed: int) -> int:
    return (zlib.crc32(arch.encode()) << 20) ^ seed


def _record(
    rng: random.Random,
    *,
    name: str,
    version: str,
    feed: str,
    arch: str,
    section: str,
    depends: Sequence[str],
    provides: Sequence[str] = (),
    conflicts: Sequence[str] = (),
    abi: str | None = None,
    source: str = "",
    license: str = "GPL-2.0",
    arch_all: bool = False,
    description: str = "",
) -> PackageRecord:
    architecture = ARCH_ALL if arch_all else arch
    installed = rng.randint(900, 900_000)
    size = max(600, int(installed * rng.uniform(0.35, 0.8)))
    digest = hashlib.sha256(f"{name}\0{version}\0{architecture}".encode()).hexdigest()
    base = name.removesuffix(abi) if abi else name
    return PackageRecord(
        name=name,
        version=version,
        feed=feed,
        architecture=architecture,
        section=section,
        depends=tuple(depends),
        provides=tuple(provides),
        conflicts=tuple(conflicts),
        abi_version=abi,
        source=source or f"feeds/{'base' if feed == CORE else feed}/{base}",
        source_name=base,
        license=license,
        installed_size=installed,
        size=size,
        sha256=digest,
        description=description,
        maintainer=rng.choice((None, None, "OpenWrt Developers <openwrt-devel@lists.openwrt.org>")),
    )


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))


def _version(rng: random.Random, feed: str) -> str:
    if feed == "luci":
        build = f"{rng.randint(10, 200):03d}.{rng.randint(10000, 99999)}"
        return f"git-24.{build}-{rng.randbytes(4).hex()[:7]}"
    if rng.random() < 0.3:
        date = f"20{rng.randint(19, 24)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        return f"{date}-{rng.randbytes(4).hex()}-{rng.randint(1, 5)}"
    return f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}-{rng.randint(1, 9)}"


def _upstream(version: str) -> str:
    """The part of a version before the release number (for ``>=`` constraints)."""
    return version.rsplit("-", 1)[0] if "-" in version else version


def package_records(
    arch: str,
    count: int,
    seed: int = 0,
    *,
    revision: str = "r24012-d8dd03c46f",
    required: Iterable[str] = (),
    shape: ReleaseShape | None = None,
) -> list[PackageRecord]:
    """Return a deterministic package universe for ``arch``.

    ``shape`` (default: 23.05, exactly as before) selects the era's package
    set, version style, kernel and feeds (see the module docstring).

    The result holds every well-known package, a stub for each name in
    ``required`` that is not otherwise present (e.g. the device packages of
    every profile of a target; a leading ``-`` is ignored) and generated
    packages until there are ``count`` records (fewer are never returned than
    the known ones). The same arguments always give the same list.
    """
    rng = random.Random(_arch_seed(arch, seed))
    era = shape.era if shape is not None else "23.05"
    kernel_version = kernel_package_version(revision, shape)
    kmod_version = f"{shape.kernel if shape else KERNEL_VERSION}-1"
    records: dict[str, PackageRecord] = {}
    provided: set[str] = set()

    def add(record: PackageRecord) -> None:
        records[record.name] = record
        provided.update(record.provides)

    known_set = [k for k in KNOWN if k.name not in _ERA_DROPS[era]] + list(_era_adds(era))
    if era != "23.05":
        known_set = [_era_known(k, era) for k in known_set]
    for known in known_set:
        version = known.version.replace("@KERNEL@", kernel_version).replace("@REVISION@", revision)
        if known.feed == CORE and known.name.startswith("kmod-"):
            version = kmod_version
        known_depends = [d.replace("@KERNEL@", kernel_version) for d in known.depends]
        add(
            _record(
                rng,
                name=known.name,
                version=version,
                feed=known.feed,
                arch=arch,
                section=known.section,
                depends=known_depends,
                provides=known.provides,
                conflicts=known.conflicts,
                abi=known.abi,
                source=known.source,
                license=known.license,
                arch_all=known.arch_all,
                description=known.description,
            )
        )

    extra_rng = random.Random(_arch_seed(arch, seed) ^ 0x5EED)
    for known in _era_extras(era):
        if era != "23.05":
            known = _era_known(known, era)
        add(
            _record(
                extra_rng,
                name=known.name,
                version=kmod_version if known.name.startswith("kmod-") else known.version,
                feed=known.feed,
                arch=arch,
                section=known.section,
                depends=[d.replace("@KERNEL@", kernel_version) for d in known.depends],
                provides=known.provides,
                conflicts=known.conflicts,
                abi=known.abi,
                source=known.source,
                license=known.license,
                arch_all=known.arch_all,
                description=known.description,
            )
        )

    for raw in required:
        name = raw.strip().lstrip("-")
        if not name or name in records or name in provided:
            continue
        if name.startswith("kmod-"):
            feed, section, deps = CORE, "kernel", ["libc", f"kernel (={kernel_version})"]
        else:
            feed, section, deps = "base", "utils", ["libc"]
        version = kmod_version if feed == CORE else _version(rng, feed)
        add(
            _record(
                rng,
                name=name,
                version=version,
                feed=feed,
                arch=arch,
                section=section,
                depends=deps,
                description=f"Device support package {name}.",
            )
        )

    libs = [r.name for r in records.values() if r.section == "libs"]
    luci_apps = [r.name for r in records.values() if r.name.startswith("luci-app-")]
    kmods = [r.name for r in records.values() if r.name.startswith("kmod-")]
    weights = [f.weight for f in _FAMILIES]
    attempts = 0
    while len(records) < count:
        attempts += 1
        if attempts > count * 50:
            raise RuntimeError("could not generate enough distinct package names")
        family = rng.choices(_FAMILIES, weights)[0]
        abi: str | None = None
        provides: list[str] = []
        depends: list[str] = [] if family.arch_all else ["libc"]
        if family.prefix == "luci-i18n-":
            app = rng.choice(luci_apps)
            name = f"luci-i18n-{app.removeprefix('luci-app-')}-{rng.choice(_LANGS)}"
            depends = [app]
        elif family.prefix == "lib":
            word = _word(rng)
            abi = rng.choice(
                (str(rng.randint(0, 12)), f"20{rng.randint(19, 24)}0{rng.randint(1, 9)}15")
            )
            name = f"lib{word}{abi}"
            provides = [f"lib{word}"]
            if f"lib{word}" in records or f"lib{word}" in provided:
                continue
        else:
            name = f"{family.prefix}{_word(rng)}"
        if name in records or name in provided:
            continue
        version = kmod_version if family.feed == CORE else _version(rng, family.feed)
        if family.base == "kernel":
            depends.append(f"kernel (={kernel_version})")
            if rng.random() < 0.3:
                depends.append(rng.choice(kmods))
        elif family.base:
            base = records[family.base]
            if rng.random() < 0.08:
                depends.append(f"{family.base} (>= {_upstream(base.version)})")
            else:
                depends.append(family.base)
        if family.feed != CORE and not family.arch_all and libs and rng.random() < 0.35:
            lib = rng.choice(libs)
            if lib not in depends:
                depends.append(lib)
        record = _record(
            rng,
            name=name,
            version=version,
            feed=family.feed,
            arch=arch,
            section=family.section,
            depends=depends,
            provides=provides,
            abi=abi,
            license=rng.choice(_LICENSES),
            arch_all=family.arch_all,
            description=f"Generated test package {name}.\nPart of the {family.feed} feed.",
        )
        add(record)
        if abi:
            libs.append(name)
        elif name.startswith("luci-app-"):
            luci_apps.append(name)
        elif name.startswith("kmod-"):
            kmods.append(name)
    result = sorted(records.values(), key=lambda r: r.name)
    if shape is None or (era == "23.05" and not shape.kmods_feed):
        return result
    return [_shape_record(r, shape) for r in result]


def _era_known(known: _Known, era: str) -> _Known:
    """A 23.05 well-known package as a later era has it."""
    depends = tuple(
        "luci-app-package-manager" if d == "luci-app-opkg" else d for d in known.depends
    )
    if era == "25.12":
        depends = tuple("apk-mbedtls" if d == "opkg" else d for d in depends)
    return dataclasses.replace(known, depends=depends)


_DEP_TEXT = re.compile(r"^\s*([^\s(]+)\s*(?:\(\s*(<<|<=|>=|>>|=|<|>)\s*([^)\s]+)\s*\))?\s*$")


def _shape_dep(text: str, shape: ReleaseShape) -> str:
    match = _DEP_TEXT.match(text)
    if not match:
        return text
    name, op, version = match.groups()
    if op is None or version is None:
        return name
    if shape.era != "23.05" and not version.startswith(shape.kernel + "~"):
        version = apk_version(version)
    return f"{name} ({op} {version})"


def _shape_record(record: PackageRecord, shape: ReleaseShape) -> PackageRecord:
    """Move kmods to the kmods feed and restyle versions for ``shape``."""
    feed = record.feed
    if shape.kmods_feed and feed == CORE and record.name.startswith("kmod-"):
        feed = KMODS
    version = record.version
    if shape.era != "23.05":
        if record.name == "base-files":
            version = f"1647~{shape.revision.rsplit('-', 1)[-1]}"
        elif record.name != "kernel":
            version = apk_version(version)
    depends = tuple(_shape_dep(d, shape) for d in record.depends)
    return dataclasses.replace(record, feed=feed, version=version, depends=depends)


def format_packages(records: Iterable[PackageRecord]) -> str:
    """Render records as an opkg ``Packages`` file (stanzas separated by blank lines)."""
    return "\n".join(record.stanza() for record in records)


def opkg_packages(
    arch: str,
    count: int,
    seed: int = 0,
    *,
    revision: str = "r24012-d8dd03c46f",
    required: Iterable[str] = (),
) -> str:
    """Return the text of an opkg ``Packages`` index of ``count`` packages for ``arch``.

    Deterministic for (arch, count, seed, revision, required); see
    :func:`package_records`.
    """
    records = package_records(arch, count, seed, revision=revision, required=required)
    return format_packages(records)


def split_feeds(records: Iterable[PackageRecord]) -> dict[str, list[PackageRecord]]:
    """Group records by feed (``core`` plus :data:`FEEDS`, always present, and
    :data:`KMODS` when a record is in it)."""
    feeds: dict[str, list[PackageRecord]] = {CORE: [], **{feed: [] for feed in FEEDS}}
    for record in records:
        feeds.setdefault(record.feed, []).append(record)
    return feeds


@dataclass
class ParsedPackage:
    """A stanza read back from a ``Packages`` file (for tests)."""

    fields: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.fields["Package"]

    @property
    def version(self) -> str:
        return self.fields["Version"]


def parse_packages(text: str) -> list[ParsedPackage]:
    """Parse an opkg ``Packages`` file into its stanzas (continuation lines joined)."""
    result: list[ParsedPackage] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line.startswith(" ") and key:
                fields[key] += "\n" + line[1:]
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if "Package" in fields:
            result.append(ParsedPackage(fields))
    return result


def apk_index_json(arch: str, packages: Mapping[str, str]) -> dict[str, object]:
    """Return an apk-style ``index.json`` document for ``arch``."""
    return {
        "version": 2,
        "architecture": arch,
        "packages": {name: packages[name] for name in sorted(packages)},
    }


def apk_index_from_records(arch: str, records: Iterable[PackageRecord]) -> dict[str, object]:
    """The real ``index.json`` v2 of a feed: ``make-index-json.py -f apk`` output,
    i.e. every package name with its ABI suffix removed, mapped to its version.
    Provided names are not listed."""
    return apk_index_json(arch, {r.stripped_name: r.version for r in records})


APK_INDEX_STAND_IN = "asu-ci test stand-in for apk-tools packages.adb"
"""The ``format`` of the ``packages.adb`` STAND-IN (see :func:`apk_index_document`)."""


def apk_dependency(text: str) -> str:
    """An opkg ``Depends`` entry in apk's form: ``foo (>= 1.2)`` → ``foo>=1.2``."""
    match = _DEP_TEXT.match(text)
    if not match:
        return text.strip()
    name, op, version = match.groups()
    if op is None:
        return name
    return f"{name}{ {'<<': '<', '>>': '>'}.get(op, op) }{version}"


def apk_package(record: PackageRecord) -> dict[str, object]:
    """One package of the stand-in index, with the fields of ``apk adbdump``'s
    JSON that resolution needs (``name``, ``version``, ``arch``, ``depends``
    with ``!name`` for conflicts, versioned ``provides``, ``provider_priority``,
    ``tags`` with ``openwrt:abiversion=``, sizes) plus the ``files`` it installs."""
    provides = [f"{name}={record.version}" for name in record.provides]
    if record.abi_version and record.stripped_name not in record.provides:
        provides.insert(0, f"{record.stripped_name}={record.version}")
    package: dict[str, object] = {
        "name": record.name,
        "version": record.version,
        "arch": "noarch" if record.architecture == ARCH_ALL else record.architecture,
        "license": record.license,
        "origin": record.source_name or record.stripped_name,
        "installed-size": record.installed_size,
        "file-size": record.size,
        "depends": [apk_dependency(d) for d in record.depends]
        + [f"!{name}" for name in record.conflicts],
        "provides": provides,
        "tags": [f"openwrt:abiversion={record.abi_version}"] if record.abi_version else [],
        "files": [_FILE_CLASHES.get(record.name, f"usr/share/asu-ci-test/{record.name}")],
    }
    if record.name in _PRIORITY:
        package["provider-priority"] = _PRIORITY[record.name]
    return package


def apk_index_document(
    records: Iterable[PackageRecord], description: str = ""
) -> dict[str, object]:
    """The unsigned ``packages.adb`` STAND-IN document of a feed.

    The real file is apk-tools' binary, signed ADB; nothing in asu-ci reads
    it (the product reads ``index.json``), only the test ImageBuilder does. The
    stand-in is JSON shaped like ``apk adbdump --format json packages.adb``
    (``{"packages": [...]}``, which ``make-index-json.py -f apk`` also
    accepts) with a ``format`` marker; :func:`sign_apk_index` adds the
    signature block."""
    return {
        "format": APK_INDEX_STAND_IN,
        "description": description,
        "packages": [apk_package(r) for r in sorted(records, key=lambda r: r.name)],
    }


def apk_signed_payload(document: Mapping[str, object]) -> bytes:
    """The bytes a stand-in index signature covers: its ``packages``, canonical JSON."""
    return json.dumps(document.get("packages", []), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class ApkKey:
    """An ECDSA P-256 key pair like OpenWrt's apk signing keys (PEM files)."""

    private_pem: bytes
    public_pem: str
    name: str
    """File name in ``keys/`` (``<name>.pem``)."""

    @property
    def key_id(self) -> str:
        """Hex of the first 16 bytes of SHA-512 over the public key as
        ``i2d_PublicKey`` encodes it (the uncompressed EC point): how an ADB
        signature names its key (apk-tools ``crypto_openssl.c`` apk_pkey_init)."""
        from cryptography.hazmat.primitives import serialization

        public = serialization.load_pem_public_key(self.public_pem.encode())
        point = public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return hashlib.sha512(point).digest()[:16].hex()


def generate_apk_key(seed: bytes, name: str = "") -> ApkKey:
    """A deterministic P-256 key pair for ``seed`` (test keys only)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
    scalar = int.from_bytes(hashlib.sha256(b"asu-ci-apk-key:" + seed).digest()) % (order - 1) + 1
    private = ec.derive_private_key(scalar, ec.SECP256R1())
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return ApkKey(private_pem, public_pem, name or f"asu-ci-test-{seed.hex()[:12]}.pem")


def sign_apk_index(document: Mapping[str, object], key: ApkKey) -> dict[str, object]:
    """``document`` with a ``signature`` block: ECDSA P-256 / SHA-256 over
    :func:`apk_signed_payload`, naming the key by :attr:`ApkKey.key_id`."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private = serialization.load_pem_private_key(key.private_pem, password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    signature = private.sign(apk_signed_payload(document), ec.ECDSA(hashes.SHA256()))
    signed = dict(document)
    signed["signature"] = {
        "algorithm": "ecdsa-p256-sha256",
        "key_id": key.key_id,
        "value": base64.b64encode(signature).decode(),
    }
    return signed


def write_apk_feed(
    directory: Path,
    arch: str,
    records: Sequence[PackageRecord],
    key: ApkKey | None,
) -> tuple[Path, Path]:
    """Write a feed the apk way: ``packages.adb`` (stand-in, signed with ``key``)
    and ``index.json`` v2 beside it; return both paths."""
    document = apk_index_document(records)
    if key is not None:
        document = sign_apk_index(document, key)
    adb = write_text(directory / "packages.adb", json.dumps(document, indent=1) + "\n")
    index = write_text(
        directory / "index.json",
        json.dumps(apk_index_from_records(arch, records), indent=2) + "\n",
    )
    return adb, index


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (parents created) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def write_gzip(path: Path, data: bytes | str, *, level: int = 6) -> Path:
    """Write ``data`` gzip-compressed (reproducible: no name, mtime 0) to ``path``."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, compresslevel=level, mtime=0))
    return path


def write_packages(directory: Path, text: str) -> tuple[Path, Path]:
    """Write ``Packages`` and ``Packages.gz`` into ``directory``; return both paths."""
    plain = write_text(directory / "Packages", text)
    return plain, write_gzip(directory / "Packages.gz", text)


def write_opkg_index_json(directory: Path, arch: str, records: Iterable[PackageRecord]) -> Path:
    """The ``index.json`` an opkg feed of 24.10 has beside ``Packages``: what
    ``package/Makefile``'s ``index`` target writes with sed, i.e. "version 1"
    (no ``version`` key, names WITH their ABI suffix)."""
    document = {"architecture": arch, "packages": {r.name: r.version for r in records}}
    return write_text(directory / "index.json", json.dumps(document) + "\n")


def write_apk_index(directory: Path, arch: str, packages: Mapping[str, str]) -> Path:
    """Write an apk ``index.json`` for ``arch`` into ``directory`` and return its path."""
    document = apk_index_json(arch, packages)
    return write_text(directory / "index.json", json.dumps(document, indent=2) + "\n")

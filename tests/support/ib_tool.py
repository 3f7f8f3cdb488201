#!/usr/bin/env python3
"""Backend of the TEST ImageBuilder (copied into the archive as ``scripts/ib_tool.py``).

The archive's ``Makefile`` runs ``python3 scripts/ib_tool.py info|manifest|image|clean``
and hands over the make variables (PROFILE, PACKAGES, BIN_DIR, FILES,
EXTRA_IMAGE_NAME, ROOTFS_PARTSIZE, STRIP_ABI, DISABLED_SERVICES, ADD_LOCAL_KEY)
through the environment only. This file uses the Python standard library only:
it runs with the machine's ``python3``.

It behaves like the real OpenWrt ImageBuilder where a client of it can see:

* ``make info`` prints the target, architecture, revision, default packages
  and every profile in the real format;
* package selection is ``default packages + device packages + PACKAGES +
  kernel``; ``-name`` anywhere removes ``name``; dependencies (``Depends``
  with version constraints and alternatives, ``Provides``) are resolved
  transitively and ``Conflicts`` honoured, against the feeds listed in
  ``repositories.conf`` (``src imagebuilder file:packages`` is the bundled
  index; loopback ``http://127.0.0.1`` feeds are really downloaded);
* failures print opkg's messages ("Collected errors: ... Cannot install
  package foo.") and exit 1;
* ``make image`` writes images named like the real ones, ``profiles.json``,
  ``<image_prefix>.manifest`` and ``sha256sums`` into BIN_DIR; an image over
  the size limit is skipped with "WARNING: Image file ... is too big" and the
  exit code stays 0, like the real one.

apk mode (``package_manager: apk`` in ``.targetinfo.json``, the 25.12 and
SNAPSHOT ImageBuilders) follows ``target/imagebuilder/files/Makefile``'s
``CONFIG_USE_APK`` branches and apk-tools' output instead:

* feeds are the lines of ``repositories`` (``packages.adb`` URLs; upstream
  URLs read the bundled ``packages/packages.adb``, loopback ones are
  downloaded, ``file://`` and absolute paths read). Each index is a STAND-IN
  (JSON, see tests/support/packages.py) whose ECDSA P-256 signature must
  verify with a PEM key in ``keys/``, else apk's
  "WARNING: opening <url>: UNTRUSTED signature" and the feed is unused;
* resolution knows versioned ``provides``, ``provider-priority``, ``!name``
  conflicts and the files each package installs; failures print apk's
  "ERROR: unable to select packages:" report (``<name> (no such package):``,
  ``<name> (virtual):`` with its ``provided by:`` list, ``<pkg>-<ver>:`` with
  ``conflicts:`` and ``satisfies:``, or with ``breaks:`` for a version
  constraint no package meets) or
  "ERROR: <pkg>-<ver>: trying to overwrite <file> owned by <pkg>-<ver>." and
  exit 1;
* ``make manifest`` prints ``apk list --quiet --manifest`` lines
  (``<name> <version>``, ABI suffix kept, STRIP_ABI has no effect); the image's
  ``.manifest`` is that list sorted with ``' - '`` (include/image.mk's
  ``Image/Manifest``).

Image bytes are a readable description of what went in (packages with
versions, every file under FILES with its content, ROOTFS_PARTSIZE ...)
padded to a size that grows with the number of packages.
"""

from __future__ import annotations

import base64
import functools
import gzip
import hashlib
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

TOPDIR = Path(__file__).resolve().parent.parent
SETTINGS_FILE = ".targetinfo.json"
PROFILES_FILE = ".profiles.json"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
UPSTREAM_HOSTS = frozenset({"downloads.openwrt.org", "downloads.cdn.openwrt.org"})
SIZE_CHECKED_TYPES = ("sysupgrade", "factory")

_DEP_RE = re.compile(r"^\s*([^\s(]+)\s*(?:\(\s*(<<|<=|>=|>>|=|<|>)\s*([^)\s]+)\s*\))?\s*$")


class BuildError(Exception):
    """A failure that ends the command with exit code 1 (message already printed)."""


# --------------------------------------------------------------------------- versions


def _char_order(char: str) -> int:
    if char == "~":
        return -1
    if char.isdigit():
        return 0
    if not char:
        return 0
    if char.isalpha():
        return ord(char)
    return ord(char) + 256


def _verrevcmp(left: str, right: str) -> int:
    """Compare two version parts the way dpkg and opkg do."""
    i = j = 0
    while i < len(left) or j < len(right):
        first_diff = 0
        while (i < len(left) and not left[i].isdigit()) or (
            j < len(right) and not right[j].isdigit()
        ):
            lc = _char_order(left[i] if i < len(left) else "")
            rc = _char_order(right[j] if j < len(right) else "")
            if lc != rc:
                return lc - rc
            i += 1
            j += 1
        while i < len(left) and left[i] == "0":
            i += 1
        while j < len(right) and right[j] == "0":
            j += 1
        while i < len(left) and left[i].isdigit() and j < len(right) and right[j].isdigit():
            if not first_diff:
                first_diff = ord(left[i]) - ord(right[j])
            i += 1
            j += 1
        if i < len(left) and left[i].isdigit():
            return 1
        if j < len(right) and right[j].isdigit():
            return -1
        if first_diff:
            return first_diff
    return 0


def _split_version(version: str) -> tuple[int, str, str]:
    epoch = 0
    if ":" in version:
        head, _, version = version.partition(":")
        epoch = int(head) if head.isdigit() else 0
    upstream, sep, revision = version.rpartition("-")
    if not sep:
        return epoch, version, ""
    return epoch, upstream, revision


def compare_versions(left: str, right: str) -> int:
    """Negative, zero or positive like opkg's ``pkg_version_compare``."""
    le, lu, lr = _split_version(left)
    re_, ru, rr = _split_version(right)
    if le != re_:
        return le - re_
    return _verrevcmp(lu, ru) or _verrevcmp(lr, rr)


def version_satisfies(version: str, op: str | None, wanted: str | None) -> bool:
    """Whether ``version`` meets the constraint ``(op wanted)`` of a Depends entry."""
    if not op or wanted is None:
        return True
    cmp = compare_versions(version, wanted)
    return {
        "<<": cmp < 0,
        "<": cmp <= 0,
        "<=": cmp <= 0,
        "=": cmp == 0,
        ">=": cmp >= 0,
        ">": cmp >= 0,
        ">>": cmp > 0,
    }[op]


# --------------------------------------------------------------------------- index


@dataclass(frozen=True)
class Dep:
    """One alternative of a dependency: a name and an optional version constraint."""

    name: str
    op: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.op} {self.version})" if self.op else self.name


@dataclass
class Pkg:
    """A package of a feed, as far as resolution needs it."""

    name: str
    version: str
    depends: list[list[Dep]] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    abi: str | None = None
    repo: str = ""

    @property
    def stripped_name(self) -> str:
        if self.abi and self.name.endswith(self.abi):
            return self.name[: -len(self.abi)]
        return self.name


def _parse_dep_list(text: str) -> list[list[Dep]]:
    groups: list[list[Dep]] = []
    for item in text.split(","):
        alternatives: list[Dep] = []
        for alt in item.split("|"):
            match = _DEP_RE.match(alt)
            if match and match.group(1):
                alternatives.append(Dep(match.group(1), match.group(2), match.group(3)))
        if alternatives:
            groups.append(alternatives)
    return groups


def parse_packages(text: str, repo: str) -> list[Pkg]:
    """Parse an opkg ``Packages`` file (only the fields resolution needs)."""
    result: list[Pkg] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line[0] in " \t":
                continue
            key, sep, value = line.partition(":")
            if sep and key in {
                "Package",
                "Version",
                "Depends",
                "Provides",
                "Conflicts",
                "ABIVersion",
            }:
                fields[key] = value.strip()
        if "Package" not in fields or "Version" not in fields:
            continue
        result.append(
            Pkg(
                name=fields["Package"],
                version=fields["Version"],
                depends=_parse_dep_list(fields.get("Depends", "")),
                provides=[p.strip() for p in fields.get("Provides", "").split(",") if p.strip()],
                conflicts=[
                    dep.name
                    for group in _parse_dep_list(fields.get("Conflicts", ""))
                    for dep in group
                ],
                abi=fields.get("ABIVersion") or None,
                repo=repo,
            )
        )
    return result


class Index:
    """All packages of all active feeds, by name and by provided name."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[Pkg]] = {}
        self.providers: dict[str, list[Pkg]] = {}

    def add(self, packages: Iterable[Pkg]) -> None:
        for pkg in packages:
            versions = self.by_name.setdefault(pkg.name, [])
            if any(p.version == pkg.version for p in versions):
                continue
            versions.append(pkg)
            for name in pkg.provides:
                if name != pkg.name:
                    self.providers.setdefault(name, []).append(pkg)

    def knows(self, name: str) -> bool:
        return name in self.by_name or name in self.providers


# --------------------------------------------------------------------------- resolution


class Resolver:
    """A small opkg: installs requested names with their dependencies into a set."""

    def __init__(self, index: Index, requested: Iterable[str]) -> None:
        self.index = index
        self.requested = set(requested)
        self.installed: dict[str, Pkg] = {}
        self.provided: dict[str, str] = {}
        self.errors: list[str] = []
        self.notices: list[str] = []

    def _satisfied(self, dep: Dep) -> bool:
        pkg = self.installed.get(dep.name)
        if pkg is not None and version_satisfies(pkg.version, dep.op, dep.version):
            return True
        return dep.op is None and dep.name in self.provided

    def _candidates(self, dep: Dep) -> list[Pkg]:
        real = [
            p
            for p in self.index.by_name.get(dep.name, [])
            if version_satisfies(p.version, dep.op, dep.version)
        ]
        if real:
            by_version = functools.cmp_to_key(compare_versions)
            return sorted(real, key=lambda p: by_version(p.version), reverse=True)
        if dep.op is not None:
            return []
        providers = list(self.index.providers.get(dep.name, []))
        providers.sort(
            key=lambda p: (p.name not in self.installed, p.name not in self.requested, p.name)
        )
        return providers

    def _conflicts_with(self, pkg: Pkg) -> list[str]:
        found: list[str] = []
        mine = set(pkg.conflicts)
        for other in self.installed.values():
            if other.name == pkg.name:
                continue
            theirs = set(other.conflicts)
            if (
                other.name in mine
                or mine.intersection(other.provides)
                or pkg.name in theirs
                or theirs.intersection(pkg.provides)
            ):
                found.append(other.name)
        return found

    def install(self, dep: Dep) -> bool:
        """Install ``dep`` and what it needs; record opkg-style errors on failure."""
        if self._satisfied(dep):
            return True
        candidates = self._candidates(dep)
        if not candidates:
            return False
        pkg = candidates[0]
        conflicts = self._conflicts_with(pkg)
        if conflicts:
            self.errors.append(
                f" * check_conflicts_for: The following packages conflict with {pkg.name}:"
            )
            self.errors.append(
                " * check_conflicts_for: " + "".join(f"\t{name} * " for name in conflicts)
            )
            return False
        self.installed[pkg.name] = pkg
        for name in pkg.provides:
            self.provided.setdefault(name, pkg.name)
        missing: list[str] = []
        for group in pkg.depends:
            if any(self._satisfied(alt) for alt in group):
                continue
            if not any(self.install(alt) for alt in group):
                missing.append(" | ".join(str(alt) for alt in group))
        if missing:
            self.errors.append(
                " * satisfy_dependencies_for: Cannot satisfy the following dependencies "
                f"for {pkg.name}:"
            )
            self.errors.extend(f" * \t{text}" for text in missing)
            del self.installed[pkg.name]
            self.provided = {k: v for k, v in self.provided.items() if v != pkg.name}
            return False
        return True

    def run(self, names: Iterable[str]) -> None:
        for name in names:
            dep = _DEP_RE.match(name)
            target = Dep(dep.group(1)) if dep and dep.group(1) else Dep(name)
            if self.install(target):
                continue
            if not self.index.knows(target.name):
                self.notices.append(f"Unknown package '{target.name}'.")
            self.errors.append(f" * opkg_install_cmd: Cannot install package {target.name}.")


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """Everything a command needs: settings, profiles and the make variables."""

    settings: dict[str, object]
    profiles_doc: dict[str, object]
    env: dict[str, str]
    out: Callable[[str], None]

    @property
    def profiles(self) -> dict[str, dict[str, object]]:
        profiles = self.profiles_doc.get("profiles", {})
        assert isinstance(profiles, dict)
        return profiles

    def var(self, name: str) -> str:
        return self.env.get(name, "").strip()

    def setting(self, name: str) -> str:
        return str(self.settings.get(name, ""))

    def int_setting(self, name: str, default: int) -> int:
        value = self.settings.get(name, default)
        return int(value) if isinstance(value, int | str) else default


def _err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _print(text: str) -> None:
    sys.stdout.write(text + "\n")


def _quiet(_text: str) -> None:
    return None


def load_context(out: Callable[[str], None]) -> Context:
    settings = json.loads((TOPDIR / SETTINGS_FILE).read_text(encoding="utf-8"))
    profiles_doc = json.loads((TOPDIR / PROFILES_FILE).read_text(encoding="utf-8"))
    env = {
        key: os.environ.get(key, "")
        for key in (
            "PROFILE",
            "PACKAGES",
            "BIN_DIR",
            "FILES",
            "EXTRA_IMAGE_NAME",
            "ROOTFS_PARTSIZE",
            "STRIP_ABI",
            "DISABLED_SERVICES",
            "ADD_LOCAL_KEY",
            "ASU_TEST_IB_MAX_IMAGE_SIZE",
        )
    }
    return Context(settings, profiles_doc, env, out)


# --------------------------------------------------------------------------- repositories


@dataclass(frozen=True)
class Repository:
    kind: str
    name: str
    url: str
    line: str


def read_repositories() -> tuple[list[Repository], dict[str, str]]:
    """Parse ``repositories.conf``: active ``src``/``src/gz`` lines and options."""
    repos: list[Repository] = []
    options: dict[str, str] = {}
    path = TOPDIR / "repositories.conf"
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if parts[0] == "option" and len(parts) >= 2:
            options[parts[1]] = parts[2] if len(parts) > 2 else "1"
        elif parts[0] in {"src", "src/gz"} and len(parts) >= 3:
            repos.append(Repository(parts[0], parts[1], parts[2], line))
    return repos, options


def _known_keynums() -> set[str]:
    keys = TOPDIR / "keys"
    return {p.name for p in keys.iterdir() if p.is_file()} if keys.is_dir() else set()


def _fetch(url: str) -> bytes:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "file":
        return Path(urllib.parse.unquote(parsed.path)).read_bytes()
    if parsed.scheme in {"http", "https"} and (parsed.hostname or "") in LOOPBACK_HOSTS:
        with urllib.request.urlopen(url, timeout=30) as response:
            data: bytes = response.read()
            return data
    raise OSError("no route to host (the test ImageBuilder only reaches 127.0.0.1)")


def _signature_keynum(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        blob = base64.b64decode(lines[1], validate=True)
    except (IndexError, ValueError):
        return None
    return blob[2:10].hex() if len(blob) == 74 and blob[:2] == b"Ed" else None


def load_index(ctx: Context) -> Index:
    """Read every active feed of ``repositories.conf`` into one index."""
    repos, options = read_repositories()
    check_signature = "check_signature" in options
    keynums = _known_keynums()
    index = Index()
    for repo in repos:
        if repo.url.startswith("file:") and not repo.url.startswith("file://"):
            local = Path(repo.url[len("file:") :])
            folder = local if local.is_absolute() else TOPDIR / local
            plain = folder / "Packages"
            packed = folder / "Packages.gz"
            if plain.is_file():
                text = plain.read_text(encoding="utf-8")
            elif packed.is_file():
                text = gzip.decompress(packed.read_bytes()).decode("utf-8")
            else:
                text = ""
            index.add(parse_packages(text, repo.name))
            ctx.out(f"Updated list of available packages in {TOPDIR}/dl/{repo.name}")
            continue
        base = repo.url.rstrip("/")
        list_url = f"{base}/Packages.gz" if repo.kind == "src/gz" else f"{base}/Packages"
        ctx.out(f"Downloading {list_url}")
        host = urllib.parse.urlsplit(base).hostname or ""
        if host in UPSTREAM_HOSTS:
            # The upstream feeds are bundled in packages/Packages (the local repository).
            ctx.out(f"Updated list of available packages in {TOPDIR}/dl/{repo.name}")
            if check_signature:
                ctx.out(f"Downloading {base}/Packages.sig")
                ctx.out("Signature check passed.")
            continue
        try:
            data = _fetch(list_url)
            text = (gzip.decompress(data) if repo.kind == "src/gz" else data).decode("utf-8")
        except (OSError, ValueError, EOFError) as exc:
            _err(f" * opkg_download: Failed to download {list_url}, wget returned 4. ({exc})")
            _err(f"*** Failed to download the package list from {list_url}")
            continue
        ctx.out(f"Updated list of available packages in {TOPDIR}/dl/{repo.name}")
        if check_signature:
            sig_url = f"{base}/Packages.sig"
            ctx.out(f"Downloading {sig_url}")
            try:
                keynum = _signature_keynum(_fetch(sig_url).decode("ascii", "replace"))
            except OSError:
                keynum = None
            if keynum is None or keynum not in keynums:
                ctx.out("Signature check failed.")
                ctx.out("Remove wrong Signature file.")
                continue
            ctx.out("Signature check passed.")
        index.add(parse_packages(text, repo.name))
    return index


# --------------------------------------------------------------------------- profiles


def _title(profile: dict[str, object]) -> str:
    titles = profile.get("titles") or []
    if not isinstance(titles, list) or not titles:
        return ""
    first = titles[0]
    if not isinstance(first, dict):
        return ""
    if "title" in first:
        return str(first["title"])
    parts = [first.get("vendor"), first.get("model"), first.get("variant")]
    return " ".join(str(p) for p in parts if p)


def _str_list(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def select_profiles(ctx: Context) -> dict[str, dict[str, object]]:
    """The profiles a command works on: PROFILE, or all of them when it is empty."""
    wanted = ctx.var("PROFILE")
    if not wanted:
        return dict(ctx.profiles)
    name = wanted.removeprefix("DEVICE_")
    if name not in ctx.profiles:
        _print(f'Profile "{wanted}" does not exist!')
        _print('Use "make info" to get a list of available profile names.')
        raise BuildError
    return {name: ctx.profiles[name]}


def build_package_list(ctx: Context, profile: dict[str, object] | None) -> list[str]:
    """``$(sort DEFAULT_PACKAGES USER_PACKAGES <profile>_PACKAGES kernel)`` minus removals."""
    names = _str_list(ctx.profiles_doc.get("default_packages"))
    names += ctx.var("PACKAGES").split()
    if profile is not None:
        names += _str_list(profile.get("device_packages"))
    names.append("kernel")
    removed = {n[1:] for n in names if n.startswith("-")}
    return sorted({n for n in names if not n.startswith("-") and n not in removed})


def resolve(ctx: Context, index: Index, names: list[str]) -> dict[str, Pkg]:
    """Install ``names`` like ``opkg install``; on failure print opkg's errors and stop."""
    resolver = Resolver(index, names)
    resolver.run(names)
    for notice in resolver.notices:
        ctx.out(notice)
    if resolver.errors:
        _err("Collected errors:")
        for line in resolver.errors:
            _err(line)
        raise BuildError
    return resolver.installed


# --------------------------------------------------------------------------- commands


# --------------------------------------------------------------------------- apk mode

_P256_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
_P256_A = _P256_P - 3
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P256_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)
_P256_SPKI_PREFIX = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")

_Point = tuple[int, int] | None


def _ec_add(a: _Point, b: _Point) -> _Point:
    if a is None:
        return b
    if b is None:
        return a
    p = _P256_P
    if a[0] == b[0]:
        if (a[1] + b[1]) % p == 0:
            return None
        slope = (3 * a[0] * a[0] + _P256_A) * pow(2 * a[1], -1, p) % p
    else:
        slope = (b[1] - a[1]) * pow(b[0] - a[0], -1, p) % p
    x = (slope * slope - a[0] - b[0]) % p
    return x, (slope * (a[0] - x) - a[1]) % p


def _ec_mul(k: int, point: _Point) -> _Point:
    result: _Point = None
    while k:
        if k & 1:
            result = _ec_add(result, point)
        point = _ec_add(point, point)
        k >>= 1
    return result


def _der_ints(der: bytes) -> tuple[int, int] | None:
    """(r, s) of a DER ECDSA signature."""
    if len(der) < 8 or der[0] != 0x30:
        return None
    values: list[int] = []
    at = 2
    while at < len(der) and len(values) < 2:
        if der[at] != 0x02:
            return None
        size = der[at + 1]
        values.append(int.from_bytes(der[at + 2 : at + 2 + size], "big"))
        at += 2 + size
    return (values[0], values[1]) if len(values) == 2 else None


def pem_public_key(text: str) -> tuple[bytes, tuple[int, int]] | None:
    """(DER, point) of a PEM P-256 public key, or None for anything else."""
    body = "".join(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("-----")
    )
    try:
        der = base64.b64decode(body, validate=True)
    except ValueError:
        return None
    if not der.startswith(_P256_SPKI_PREFIX) or len(der) != len(_P256_SPKI_PREFIX) + 65:
        return None
    raw = der[len(_P256_SPKI_PREFIX) :]
    if raw[0] != 4:
        return None
    return der, (int.from_bytes(raw[1:33], "big"), int.from_bytes(raw[33:], "big"))


def ecdsa_verify(point: tuple[int, int], data: bytes, signature: bytes) -> bool:
    """ECDSA P-256 with SHA-256 (what the stand-in index signatures use)."""
    pair = _der_ints(signature)
    if pair is None:
        return False
    r, s_ = pair
    if not (0 < r < _P256_N and 0 < s_ < _P256_N):
        return False
    e = int.from_bytes(hashlib.sha256(data).digest(), "big")
    w = pow(s_, -1, _P256_N)
    total = _ec_add(_ec_mul(e * w % _P256_N, _P256_G), _ec_mul(r * w % _P256_N, point))
    return total is not None and total[0] % _P256_N == r


def _apk_keys() -> dict[str, tuple[int, int]]:
    """key id → point, of keys/*.pem; the id is the first 16 bytes of SHA-512
    over the uncompressed point, as apk-tools computes it."""
    keys: dict[str, tuple[int, int]] = {}
    folder = TOPDIR / "keys"
    for path in sorted(folder.glob("*.pem")) if folder.is_dir() else []:
        parsed = pem_public_key(path.read_text(encoding="utf-8", errors="replace"))
        if parsed is not None:
            point = parsed[0][len(_P256_SPKI_PREFIX) :]
            keys[hashlib.sha512(point).digest()[:16].hex()] = parsed[1]
    return keys


def _apk_verified(document: dict[str, object], keys: dict[str, tuple[int, int]]) -> bool:
    signature = document.get("signature")
    if not isinstance(signature, dict):
        return False
    point = keys.get(str(signature.get("key_id", "")))
    if point is None:
        return False
    try:
        value = base64.b64decode(str(signature.get("value", "")), validate=True)
    except ValueError:
        return False
    payload = json.dumps(document.get("packages", []), sort_keys=True, separators=(",", ":"))
    return ecdsa_verify(point, payload.encode(), value)


_VIRTUAL_NOTE = (
    "please",
    "select",
    "one",
    "of",
    "the",
    "'provided",
    "by'",
    "packages",
    "explicitly",
)
"""apk's note under a virtual name, as the words apk_print_indented_words wraps."""
_APK_STRICT = {"<": "<<", ">": ">>"}
"""apk's ``<``/``>`` are strict; :func:`version_satisfies` reads them the old opkg way."""
_APK_DEP_RE = re.compile(r"^(!?)([^<>=~!]+?)(?:(<=|>=|<|>|=|~)(.+))?$")


@dataclass
class ApkPkg:
    """A package of an apk index (stand-in), as far as resolution needs it."""

    name: str
    version: str
    depends: list[str]
    provides: dict[str, str]
    priority: int
    files: list[str]
    installed_size: int = 0

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


def _apk_pkg(raw: dict[str, object]) -> ApkPkg | None:
    name, version = raw.get("name"), raw.get("version")
    if not isinstance(name, str) or not isinstance(version, str):
        return None
    provides: dict[str, str] = {}
    for item in _str_list(raw.get("provides")):
        pname, _, pversion = item.partition("=")
        provides[pname] = pversion
    priority = raw.get("provider-priority", 0)
    size = raw.get("installed-size", 0)
    return ApkPkg(
        name=name,
        version=version,
        depends=_str_list(raw.get("depends")),
        provides=provides,
        priority=priority if isinstance(priority, int) else 0,
        files=_str_list(raw.get("files")),
        installed_size=size if isinstance(size, int) else 0,
    )


class ApkIndex:
    """Packages of every usable repository, by name and by provided name."""

    def __init__(self) -> None:
        self.by_name: dict[str, list[ApkPkg]] = {}
        self.providers: dict[str, list[ApkPkg]] = {}

    def add(self, packages: Iterable[ApkPkg]) -> None:
        for pkg in packages:
            known = self.by_name.setdefault(pkg.name, [])
            if any(p.version == pkg.version for p in known):
                continue
            known.append(pkg)
            for name in pkg.provides:
                self.providers.setdefault(name, []).append(pkg)


def _apk_open(url: str, ctx: Context) -> dict[str, object] | None:
    """Read one repository index; print apk's warning when it cannot be used."""
    parsed = urllib.parse.urlsplit(url)
    try:
        if (parsed.hostname or "") in UPSTREAM_HOSTS:
            data = (TOPDIR / "packages" / "packages.adb").read_bytes()
        elif parsed.scheme in {"http", "https", "file"}:
            data = _fetch(url)
        elif url.startswith("/"):
            data = Path(url).read_bytes()
        else:
            raise OSError("repositories file syntax error")
    except urllib.error.HTTPError as exc:
        _err(f"WARNING: opening {url}: HTTP {exc.code}: {exc.reason}")
        return None
    except OSError as exc:
        reason = exc.strerror or str(exc) or "network error"
        _err(f"WARNING: opening {url}: {reason}")
        return None
    try:
        document = json.loads(data)
    except ValueError:
        _err(f"WARNING: opening {url}: ADB header error")
        return None
    if not isinstance(document, dict):
        _err(f"WARNING: opening {url}: ADB header error")
        return None
    ctx.out(f"fetch {url}")
    return document


def load_apk_index(ctx: Context) -> ApkIndex:
    """Read every repository of ``repositories`` whose signature a key in keys/ verifies."""
    path = TOPDIR / "repositories"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    keys = _apk_keys()
    index = ApkIndex()
    for raw in lines:
        url = raw.strip()
        if not url or url.startswith("#"):
            continue
        document = _apk_open(url, ctx)
        if document is None:
            continue
        if not _apk_verified(document, keys):
            _err(f"WARNING: opening {url}: UNTRUSTED signature")
            continue
        packages = document.get("packages")
        items = packages if isinstance(packages, list) else []
        index.add(p for p in (_apk_pkg(i) for i in items if isinstance(i, dict)) if p)
    return index


@dataclass
class _Need:
    """Who asked for a name: ``world[name]`` or ``<pkg>-<ver>[dep]``."""

    by: str
    text: str

    def __str__(self) -> str:
        return f"{self.by}[{self.text}]"


class ApkResolver:
    """A small apk solver: picks a package per name, then reports like apk-tools."""

    def __init__(self, index: ApkIndex) -> None:
        self.index = index
        self.selected: dict[str, ApkPkg] = {}
        self.needs: dict[str, list[_Need]] = {}
        self.missing: dict[str, list[_Need]] = {}
        self.virtual: dict[str, list[_Need]] = {}
        self.broken: dict[str, list[_Need]] = {}
        """label of the best candidate → the version constraints it cannot meet."""

    def _pick(self, name: str, op: str | None, version: str | None) -> ApkPkg | str | None:
        op = _APK_STRICT.get(op or "", op)
        real = [
            p for p in self.index.by_name.get(name, []) if version_satisfies(p.version, op, version)
        ]
        if real:
            by_version = functools.cmp_to_key(compare_versions)
            return max(real, key=lambda p: by_version(p.version))
        providers = [
            p
            for p in self.index.providers.get(name, [])
            if version_satisfies(p.provides[name] or p.version, op, version)
        ]
        if not providers:
            return None
        chosen = [p for p in providers if p.name in self.selected]
        if chosen:
            return chosen[0]
        best = max(p.priority for p in providers)
        top = [p for p in providers if p.priority == best]
        if best > 0 or len(providers) == 1:
            return sorted(top, key=lambda p: p.name)[0]
        return "virtual"

    def want(self, text: str, need: _Need) -> None:
        match = _APK_DEP_RE.match(text.strip())
        if not match or match.group(1):
            return
        name, op, version = match.group(2), match.group(3), match.group(4)
        self.needs.setdefault(name, []).append(need)
        picked = self._pick(name, op, version)
        if picked is None and self.index.by_name.get(name):
            by_version = functools.cmp_to_key(compare_versions)
            best = max(self.index.by_name[name], key=lambda p: by_version(p.version))
            self.broken.setdefault(best.label, []).append(need)
            return
        if picked is None:
            self.missing.setdefault(name, []).append(need)
            return
        if picked == "virtual":
            self.virtual.setdefault(name, []).append(need)
            return
        assert isinstance(picked, ApkPkg)
        if picked.name in self.selected:
            return
        self.selected[picked.name] = picked
        for dep in picked.depends:
            self.want(dep, _Need(picked.label, dep))

    def _owner(self, name: str) -> list[ApkPkg]:
        return [p for p in self.selected.values() if p.name == name or name in p.provides]

    def conflicts(self) -> dict[str, list[str]]:
        """label → the ``conflicts:`` entries of every selected package in a conflict."""
        found: dict[str, list[str]] = {}
        pkgs = sorted(self.selected.values(), key=lambda p: p.name)
        for pkg in pkgs:
            for other in pkgs:
                if other is pkg:
                    continue
                for name, pversion in pkg.provides.items():
                    if pversion and (other.name == name or other.provides.get(name)):
                        found.setdefault(pkg.label, []).append(f"{other.label}[{name}={pversion}]")
                listed = any(e.startswith(other.label + "[") for e in found.get(pkg.label, []))
                for dep in pkg.depends:
                    if not listed and dep.startswith("!") and other in self._owner(dep[1:]):
                        found.setdefault(pkg.label, []).append(other.label)
                        listed = True
        return found

    def report(self) -> list[str]:
        """apk's "unable to select packages" lines, empty when the selection holds."""
        lines: list[str] = []
        for name, needs in sorted(self.missing.items()):
            lines.append(f"  {name} (no such package):")
            lines += _wrapped("    required by:", [str(n) for n in needs])
        for name, needs in sorted(self.virtual.items()):
            lines.append(f"  {name} (virtual):")
            lines += _wrapped(
                "    note:",
                [
                    "please",
                    "select",
                    "one",
                    "of",
                    "the",
                    "'provided",
                    "by'",
                    "packages",
                    "explicitly",
                ],
            )
            providers = sorted({p.name for p in self.index.providers.get(name, [])})
            lines += _wrapped("    provided by:", providers)
            lines += _wrapped("    required by:", [str(n) for n in needs])
        for label, needs in sorted(self.broken.items()):
            lines.append(f"  {label}:")
            lines += _wrapped("    breaks:", [str(n) for n in needs])
        for label, entries in sorted(self.conflicts().items()):
            pkg_name = next(p.name for p in self.selected.values() if p.label == label)
            lines.append(f"  {label}:")
            lines += _wrapped("    conflicts:", entries)
            satisfies = [str(n) for n in self.needs.get(pkg_name, [])]
            lines += _wrapped("    satisfies:", satisfies)
        return lines


def _wrapped(label: str, words: list[str], width: int = 80) -> list[str]:
    """apk_print_indented: words after ``label``, wrapped under the first word."""
    if not words:
        return []
    indent = len(label) + 1
    lines = [f"{label} {words[0]}"]
    for word in words[1:]:
        if len(lines[-1]) + 1 + len(word) + 1 >= width:
            lines.append(" " * indent + word)
        else:
            lines[-1] += " " + word
    return lines


def apk_resolve(ctx: Context, index: ApkIndex, names: list[str]) -> dict[str, ApkPkg]:
    """``apk add <names>``: the selection, or apk's error report and BuildError."""
    resolver = ApkResolver(index)
    for name in names:
        resolver.want(name, _Need("world", name))
    report = resolver.report()
    if report:
        _err("ERROR: unable to select packages:")
        for line in report:
            _err(line)
        raise BuildError
    owners: dict[str, ApkPkg] = {}
    errors = 0
    ordered = sorted(resolver.selected.values(), key=lambda p: p.name)
    for number, pkg in enumerate(ordered, start=1):
        ctx.out(f"({number}/{len(ordered)}) Installing {pkg.name} ({pkg.version})")
        for path in pkg.files:
            owner = owners.get(path)
            if owner is not None:
                _err(f"ERROR: {pkg.label}: trying to overwrite {path} owned by {owner.label}.")
                errors += 1
                continue
            owners[path] = pkg
    mib = -(-sum(p.installed_size for p in ordered) // (1 << 20))
    summary = f"{mib} MiB in {len(ordered)} packages"
    if errors:
        ctx.out(f"{errors} error{'s' if errors > 1 else ''}; {summary}")
        raise BuildError
    ctx.out(f"OK: {summary}")
    return resolver.selected


Installed = dict[str, Pkg] | dict[str, ApkPkg]
"""What an image gets: opkg's or apk's selection, by name."""


def _apk_mode(ctx: Context) -> bool:
    return ctx.setting("package_manager") == "apk"


def cmd_info(ctx: Context) -> None:
    _print(f'Current Target: "{ctx.setting("target")}"')
    _print(f'Current Architecture: "{ctx.setting("cpu_arch")}"')
    _print(f'Current Revision: "{ctx.setting("revision")}"')
    _print("Default Packages: " + " ".join(_str_list(ctx.profiles_doc.get("default_packages"))))
    _print("Available Profiles:")
    _print("")
    for pid, profile in ctx.profiles.items():
        images = profile.get("images") or []
        metadata = any(
            isinstance(i, dict)
            and i.get("type") == "sysupgrade"
            and i.get("sha256_unsigned", i.get("sha256")) != i.get("sha256")
            for i in (images if isinstance(images, list) else [])
        )
        _print(f"{pid}:")
        title = _title(profile)
        if title:
            _print(f"    {title}")
        _print("    Packages: " + " ".join(_str_list(profile.get("device_packages"))))
        _print(f"    hasImageMetadata: {1 if metadata else 0}")
        _print("    SupportedDevices: " + " ".join(_str_list(profile.get("supported_devices"))))


def cmd_manifest(ctx: Context) -> None:
    profiles = select_profiles(ctx)
    profile = next(iter(profiles.values())) if ctx.var("PROFILE") else None
    if _apk_mode(ctx):
        selected = apk_resolve(ctx, load_apk_index(ctx), build_package_list(ctx, profile))
        for pkg in sorted(selected.values(), key=lambda p: p.name):
            _print(f"{pkg.name} {pkg.version}")
        return
    index = load_index(ctx)
    installed = resolve(ctx, index, build_package_list(ctx, profile))
    strip = ctx.var("STRIP_ABI") not in {"", "0"}
    lines = sorted(
        f"{pkg.stripped_name if strip else pkg.name} - {pkg.version}" for pkg in installed.values()
    )
    for line in lines:
        _print(line)


def _sanitize(text: str) -> str:
    return text.replace(" ", "-").replace("_", "-").lower()


def image_prefix(ctx: Context, original: str, extra: str) -> str:
    """``openwrt-<version>-[<extra>-]<target>-<subtarget>-<profile>`` like the real IB
    (include/image.mk: the sanitized version number and, where the build names it in
    file names, as branch snapshots do, the version code come before ``<extra>``)."""
    if not extra:
        return original
    version = _sanitize(ctx.setting("version"))
    revision = _sanitize(ctx.setting("revision"))
    for head in (f"openwrt-{version}-{revision}-", f"openwrt-{version}-", "openwrt-"):
        if original.startswith(head):
            return f"{head}{_sanitize(extra)}-{original[len(head) :]}"
    return f"{_sanitize(extra)}-{original}"


def _files_listing(files_dir: Path | None) -> tuple[list[str], bytes]:
    """Return a listing and the concatenated contents of every entry under FILES."""
    if files_dir is None:
        return [], b""
    listing: list[str] = []
    blobs: list[bytes] = []
    for path in sorted(files_dir.rglob("*")):
        rel = path.relative_to(files_dir).as_posix()
        if path.is_symlink():
            listing.append(f"  {rel} -> {os.readlink(path)}")
        elif path.is_dir():
            listing.append(f"  {rel}/")
        elif path.is_file():
            data = path.read_bytes()
            mode = path.stat().st_mode & 0o7777
            digest = hashlib.sha256(data).hexdigest()
            listing.append(f"  {rel} mode={mode:04o} size={len(data)} sha256={digest}")
            blobs.append(f"== begin {rel} ==\n".encode() + data + f"\n== end {rel} ==\n".encode())
    return listing, b"".join(blobs)


def _image_body(
    ctx: Context,
    *,
    pid: str,
    profile: dict[str, object],
    image: dict[str, object],
    name: str,
    installed: Installed,
    files: tuple[list[str], bytes],
) -> bytes:
    lines = [
        "OpenWrt test ImageBuilder image",
        f"name: {name}",
        f"type: {image.get('type')}",
        f"filesystem: {image.get('filesystem', '')}",
        f"target: {ctx.setting('target')}",
        f"profile: {pid}",
        f"version: {ctx.setting('version')} {ctx.setting('revision')}",
        "supported_devices: " + " ".join(_str_list(profile.get("supported_devices"))),
        f"extra_image_name: {ctx.var('EXTRA_IMAGE_NAME')}",
        f"rootfs_partsize: {ctx.var('ROOTFS_PARTSIZE')}",
        f"disabled_services: {ctx.var('DISABLED_SERVICES')}",
        f"packages ({len(installed)}):",
    ]
    versions: dict[str, str] = {name: pkg.version for name, pkg in installed.items()}
    lines += [f"  {name} {versions[name]}" for name in sorted(versions)]
    lines.append(f"files ({len(files[0])}):")
    lines += files[0]
    return ("\n".join(lines) + "\n").encode() + files[1]


def _metadata_trailer(ctx: Context, profile: dict[str, object]) -> bytes:
    metadata = {
        "metadata_version": "1.1",
        "compat_version": "1.0",
        "supported_devices": _str_list(profile.get("supported_devices")),
        "version": {
            "dist": "OpenWrt",
            "version": ctx.setting("version"),
            "revision": ctx.setting("revision"),
            "target": ctx.setting("target"),
            "board": next(iter(_str_list(profile.get("supported_devices"))), ""),
        },
    }
    return b"\nFWx0" + json.dumps(metadata, sort_keys=True).encode() + b"\n"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_vars(ctx: Context) -> tuple[Path, Path | None, str]:
    extra = ctx.var("EXTRA_IMAGE_NAME")
    if "/" in extra or "\0" in extra:
        _err(f'ERROR: EXTRA_IMAGE_NAME "{extra}" is not a valid file name part')
        raise BuildError
    partsize = ctx.var("ROOTFS_PARTSIZE")
    if partsize and (not partsize.isdigit() or int(partsize) <= 0):
        _err(f'ERROR: ROOTFS_PARTSIZE "{partsize}" is not a positive number')
        raise BuildError
    files_dir: Path | None = None
    if ctx.var("FILES"):
        files_dir = Path(ctx.var("FILES"))
        if not files_dir.is_dir():
            _err(f'ERROR: FILES directory "{files_dir}" does not exist')
            raise BuildError
    bin_dir_text = ctx.var("BIN_DIR")
    target = ctx.setting("target")
    bin_dir = Path(bin_dir_text) if bin_dir_text else TOPDIR / "bin" / "targets" / target
    return bin_dir.absolute(), files_dir, extra


def cmd_image(ctx: Context) -> None:
    profiles = select_profiles(ctx)
    bin_dir, files_dir, extra = _check_vars(ctx)
    apk_index = load_apk_index(ctx) if _apk_mode(ctx) else None
    index = load_index(ctx) if apk_index is None else Index()
    files = _files_listing(files_dir)
    limit = ctx.int_setting("max_image_size", 65536)
    if ctx.var("ASU_TEST_IB_MAX_IMAGE_SIZE").isdigit():
        limit = int(ctx.var("ASU_TEST_IB_MAX_IMAGE_SIZE"))
    per_package = ctx.int_setting("bytes_per_package", 256)
    target = ctx.setting("target")
    board = target.split("/")[0]
    tmp_dir = TOPDIR / "build_dir" / f"target-{ctx.setting('arch_packages')}_musl"
    tmp_dir = tmp_dir / f"linux-{target.replace('/', '_')}" / "tmp"
    bin_dir.mkdir(parents=True, exist_ok=True)
    written_profiles: dict[str, dict[str, object]] = {}
    for pid, profile in profiles.items():
        title = _title(profile)
        names = build_package_list(ctx, profile)
        _print(f"Building images for {board}" + (f" - {title}" if title else ""))
        _print("Packages: " + " ".join(names))
        _print("")
        installed: Installed
        if apk_index is not None:
            _print("Installing packages...")
            installed = apk_resolve(ctx, apk_index, names)
        else:
            installed = resolve(ctx, index, names)
            _print("Installing packages...")
            for pkg in sorted(installed.values(), key=lambda p: p.name):
                _print(f"Installing {pkg.name} ({pkg.version}) to root...")
        original_prefix = str(profile.get("image_prefix", ""))
        prefix = image_prefix(ctx, original_prefix, extra)
        images: list[dict[str, object]] = []
        raw_images = profile.get("images") or []
        for image in raw_images if isinstance(raw_images, list) else []:
            if not isinstance(image, dict):
                continue
            upstream_name = str(image.get("name", ""))
            suffix = upstream_name[len(original_prefix) :]
            if not upstream_name.startswith(original_prefix) or not suffix:
                suffix = "-" + upstream_name
            name = prefix + suffix
            body = _image_body(
                ctx,
                pid=pid,
                profile=profile,
                image=image,
                name=name,
                installed=installed,
                files=files,
            )
            size = len(body) + per_package * len(installed)
            image_type = str(image.get("type", ""))
            if any(t in image_type for t in SIZE_CHECKED_TYPES) and size > limit:
                _err(f"WARNING: Image file {tmp_dir}/{name} is too big: {size} > {limit}")
                continue
            unsigned = body + b"\xff" * (size - len(body))
            data = unsigned
            if image_type == "sysupgrade":
                data = unsigned + _metadata_trailer(ctx, profile)
            (bin_dir / name).write_bytes(data)
            entry: dict[str, object] = {
                "name": name,
                "type": image_type,
                "sha256": hashlib.sha256(data).hexdigest(),
                "sha256_unsigned": hashlib.sha256(unsigned).hexdigest(),
            }
            if "filesystem" in image:
                entry["filesystem"] = image["filesystem"]
            images.append(entry)
        manifest = sorted(f"{p.name} - {p.version}" for p in installed.values())
        (bin_dir / f"{prefix}.manifest").write_text("\n".join(manifest) + "\n", encoding="utf-8")
        written_profiles[pid] = {
            "device_packages": _str_list(profile.get("device_packages")),
            "image_prefix": prefix,
            "images": images,
            "supported_devices": _str_list(profile.get("supported_devices")),
            "titles": profile.get("titles", []),
        }
    document = {key: value for key, value in ctx.profiles_doc.items() if key != "profiles"}
    document["profiles"] = written_profiles
    (bin_dir / "profiles.json").write_text(
        json.dumps(document, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )
    sums = [
        f"{_sha256(path)} *{path.name}"
        for path in sorted(bin_dir.iterdir())
        if path.is_file() and path.name != "sha256sums"
    ]
    (bin_dir / "sha256sums").write_text("\n".join(sums) + "\n", encoding="utf-8")


def cmd_clean(_ctx: Context) -> None:
    import shutil

    for name in ("build_dir", "bin", "tmp"):
        shutil.rmtree(TOPDIR / name, ignore_errors=True)


COMMANDS: dict[str, Callable[[Context], None]] = {
    "info": cmd_info,
    "manifest": cmd_manifest,
    "image": cmd_image,
    "clean": cmd_clean,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        _err(f"usage: {argv[0]} {'|'.join(COMMANDS)}")
        return 2
    # `make manifest` hides the package list updates like the real one (>/dev/null).
    ctx = load_context(_quiet if argv[1] == "manifest" else _print)
    try:
        COMMANDS[argv[1]](ctx)
    except BuildError:
        sys.stdout.flush()
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

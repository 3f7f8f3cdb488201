"""Package indexes of the download server: opkg ``Packages`` and apk ``index.json``.

Both become a :class:`PackageIndex` with three kinds of name:

- ``packages``: the real package names, each with its version. A library
  built with an ABI version is published as ``<name><abi>`` (opkg says so in
  its ``ABIVersion:`` field); its real name here is ``<name>``, as upstream
  ASU and the download server's own ``index.json`` list it.
- ``abi``: each ABI-suffixed full name → its real name.
- ``provides``: each provided (virtual) name that no package carries as its
  own → the real names of the packages providing it (``Provides:``), sorted.

The rendered index lists only ``packages``; the other two are names a request
may use as well (see :mod:`asu_ci.index.render`). An apk ``index.json`` has
no ABI or provides information (the download server writes it with the ABI
suffix already removed), so an apk index contributes real names only.

At full scale a render parses some twenty architectures of ~9,000 packages
each, so the opkg parser runs one regular expression over the whole text
instead of looping over lines in Python.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from typing import Any

from asu_ci.errors import UpstreamError
from asu_ci.upstream.source import load_json

#: A decompressed index larger than this is not an index (the real ones are a few MB).
MAX_INDEX_BYTES = 256 << 20

_GZIP_MAGIC = b"\x1f\x8b"
# A line starting one of the three fields we read (with its folded continuation
# lines), or a blank line, which ends a stanza. Matches begin at a newline, so
# the text is scanned with a leading one.
_FIELD = re.compile(
    rb"\n(?:(Package|Version|Provides|ABIVersion):[ \t]*"
    rb"([^\r\n]*(?:\r?\n[ \t]+[^\r\n]*)*)|[ \t]*\r?(?=\n))"
)
_PROVIDED_NAME = re.compile(rb"[^\s,=(<>]+")


@dataclass(frozen=True)
class PackageIndex:
    """Real name → version, ABI-suffixed name → real name, provided name → providers."""

    packages: dict[str, str] = field(default_factory=dict)
    abi: dict[str, str] = field(default_factory=dict)
    provides: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def merged(self, other: PackageIndex) -> PackageIndex:
        """Both indexes as one; a name in ``self`` wins over the same name in ``other``.

        A provided name that either index has as a real package stops being a
        provided one; providers of the same name are joined.
        """
        packages = other.packages | self.packages
        provides: dict[str, set[str]] = {}
        for index in (self, other):
            for virtual, providers in index.provides.items():
                provides.setdefault(virtual, set()).update(providers)
        return PackageIndex(
            packages,
            other.abi | self.abi,
            {
                v: tuple(sorted(p))
                for v, p in sorted(provides.items())
                if v not in packages and v not in self.abi and v not in other.abi
            },
        )

    def sidecar(self) -> dict[str, Any]:
        """The names a request may use beyond ``packages``, as rendered beside the index."""
        return {
            "abi": dict(sorted(self.abi.items())),
            "provides": {v: list(p) for v, p in sorted(self.provides.items())},
        }


def parse_index(filename: str, data: bytes, where: str) -> PackageIndex:
    """Parse an index by its file name: ``index.json`` is apk, anything else opkg."""
    if filename == "index.json":
        return parse_apk_index(data, where)
    return parse_opkg(data, where)


def parse_opkg(data: bytes, where: str) -> PackageIndex:
    """An opkg ``Packages`` file, plain or gzip (detected by its magic bytes).

    Stanzas are separated by blank lines; lines may be folded (a continuation
    starts with a space or tab) and end in CRLF. A stanza without both
    ``Package`` and ``Version`` is skipped; a repeated name keeps its last stanza.
    """
    if data[:2] == _GZIP_MAGIC:
        data = _gunzip(data, where)
    packages: dict[str, str] = {}
    abi: dict[str, str] = {}
    provided_by: dict[str, set[str]] = {}
    name = version = provided = abi_version = None
    for match in _FIELD.finditer(b"\n" + data + b"\n\n"):
        key = match.group(1)
        if key is None:
            if name and version:
                real = name
                if abi_version and name.endswith(abi_version) and name != abi_version:
                    real = name[: -len(abi_version)]
                    abi[name] = real
                packages[real] = version
                if provided is not None:
                    _add_provides(provided_by, real, provided)
            name = version = provided = abi_version = None
        elif key == b"Package":
            name = _word(match.group(2))
        elif key == b"Version":
            version = _word(match.group(2))
        elif key == b"ABIVersion":
            abi_version = _word(match.group(2))
        else:
            provided = match.group(2)
    provides = {
        virtual: tuple(sorted(providers))
        for virtual, providers in sorted(provided_by.items())
        if virtual not in packages and virtual not in abi
    }
    return PackageIndex(packages, abi, provides)


def parse_apk_index(data: bytes, where: str) -> PackageIndex:
    """An apk ``index.json``: ``{version: 2, architecture, packages: {name: version}}``."""
    doc = load_json(data, where)
    packages = doc.get("packages") if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or doc.get("version") != 2 or not isinstance(packages, dict):
        raise UpstreamError(
            f"{where}: not an apk index.json version 2 ({{version: 2, packages: {{…}}}}); "
            "the download server or mirror serves a broken file"
        )
    return PackageIndex({str(k): str(v) for k, v in packages.items() if isinstance(v, str)})


def _word(value: bytes) -> str | None:
    text = value.strip().decode("utf-8", "replace")
    return text or None


def _add_provides(provided_by: dict[str, set[str]], name: str, value: bytes) -> None:
    for raw in value.split(b","):
        match = _PROVIDED_NAME.search(raw)
        if match is None:
            continue
        virtual = match.group().decode("utf-8", "replace")
        if virtual != name:
            provided_by.setdefault(virtual, set()).add(name)


def _gunzip(data: bytes, where: str) -> bytes:
    """Decompress every gzip member of ``data``, refusing more than :data:`MAX_INDEX_BYTES`."""
    out: list[bytes] = []
    size = 0
    try:
        while data:
            inflater = zlib.decompressobj(wbits=31)
            chunk = inflater.decompress(data, MAX_INDEX_BYTES + 1 - size)
            size += len(chunk)
            out.append(chunk)
            if size > MAX_INDEX_BYTES or inflater.unconsumed_tail:
                raise UpstreamError(f"{where}: unpacks to more than {MAX_INDEX_BYTES} bytes")
            if not inflater.eof:
                raise UpstreamError(f"{where}: truncated gzip data; the file is incomplete")
            data = inflater.unused_data.lstrip(b"\0")
    except zlib.error as exc:
        raise UpstreamError(f"{where}: not valid gzip data ({exc})") from None
    return b"".join(out)

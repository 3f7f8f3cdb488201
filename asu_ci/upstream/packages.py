"""Package indexes of the download server: opkg ``Packages`` and apk ``index.json``.

Both become a :class:`PackageIndex`: package name → version, plus the names
packages provide (``Provides:``), which a request may ask for too. At full
scale a render parses some twenty architectures of ~9,000 packages each, so
the opkg parser runs one regular expression over the whole text instead of
looping over lines in Python.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field

from asu_ci.errors import UpstreamError
from asu_ci.upstream.source import load_json

#: A decompressed index larger than this is not an index (the real ones are a few MB).
MAX_INDEX_BYTES = 256 << 20

_GZIP_MAGIC = b"\x1f\x8b"
# A line starting one of the three fields we read (with its folded continuation
# lines), or a blank line, which ends a stanza. Matches begin at a newline, so
# the text is scanned with a leading one.
_FIELD = re.compile(
    rb"\n(?:(Package|Version|Provides):[ \t]*([^\r\n]*(?:\r?\n[ \t]+[^\r\n]*)*)|[ \t]*\r?(?=\n))"
)
_PROVIDED_NAME = re.compile(rb"[^\s,=(<>]+")


@dataclass(frozen=True)
class PackageIndex:
    """Package name → version, and provided (virtual) name → the package providing it."""

    packages: dict[str, str] = field(default_factory=dict)
    provides: dict[str, str] = field(default_factory=dict)

    def installable(self) -> dict[str, str]:
        """Every name a request may use → version: the packages, and provided names
        that no package has (with the version of the first provider by name)."""
        names = {
            virtual: self.packages[provider]
            for virtual, provider in self.provides.items()
            if virtual not in self.packages
        }
        names.update(self.packages)
        return names


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
    provides: dict[str, str] = {}
    name = version = provided = None
    for match in _FIELD.finditer(b"\n" + data + b"\n\n"):
        key = match.group(1)
        if key is None:
            if name and version:
                packages[name] = version
                if provided is not None:
                    _add_provides(provides, name, provided)
            name = version = provided = None
        elif key == b"Package":
            name = _word(match.group(2))
        elif key == b"Version":
            version = _word(match.group(2))
        else:
            provided = match.group(2)
    return PackageIndex(packages, provides)


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


def _add_provides(provides: dict[str, str], name: str, value: bytes) -> None:
    for raw in value.split(b","):
        match = _PROVIDED_NAME.search(raw)
        if match is None:
            continue
        virtual = match.group().decode("utf-8", "replace")
        if virtual != name and (virtual not in provides or name < provides[virtual]):
            provides[virtual] = name


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

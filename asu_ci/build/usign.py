"""Verification of usign (OpenWrt's Ed25519 signing tool) signatures. Never signs.

A usign file is a comment line and one base64 line::

    untrusted comment: public key 0123456789abcdef
    base64(b"Ed" + keynum[8] + public_key[32])

    untrusted comment: signed by key 0123456789abcdef
    base64(b"Ed" + keynum[8] + signature[64])

The signature is a plain Ed25519 signature over the raw bytes of the signed
file. As ``usign -V`` does, the key number of the signature must match the
key's. The comment lines are untrusted and ignored.

Errors are :class:`ValueError` with a short reason; callers turn them into the
user-facing error that fits (a bad archive signature, a bad repository key).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PKALG = b"Ed"
_KEY_LENGTH = 2 + 8 + 32
_SIGNATURE_LENGTH = 2 + 8 + 64


@dataclass(frozen=True)
class PublicKey:
    """A usign public key: its 8-byte key number and the raw Ed25519 key."""

    keynum: bytes
    key: bytes

    @property
    def fingerprint(self) -> str:
        """The key number as usign prints it; OpenWrt names key files after it."""
        return self.keynum.hex()

    def text(self) -> str:
        """The public key file, as ``usign -G -p`` writes it."""
        blob = base64.b64encode(PKALG + self.keynum + self.key).decode("ascii")
        return f"untrusted comment: public key {self.fingerprint}\n{blob}\n"


def _blob(text: str, length: int, what: str) -> bytes:
    """Decode the base64 line of a usign file (with or without its comment line)."""
    lines = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line.startswith("untrusted comment:")
    ]
    if len(lines) != 1:
        raise ValueError(f"not a usign {what}: expected one base64 line")
    try:
        blob = base64.b64decode(lines[0], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"not a usign {what}: the key line is not base64") from None
    if len(blob) != length or blob[:2] != PKALG:
        raise ValueError(f"not a usign {what}: not an Ed25519 blob of {length} bytes")
    return blob


def parse_public_key(text: str) -> PublicKey:
    """Read a public key: the text of a ``.pub`` file or only its base64 line."""
    blob = _blob(text, _KEY_LENGTH, "public key")
    return PublicKey(keynum=blob[2:10], key=blob[10:])


def verify(data: bytes, signature_text: str, public_key_text: str) -> None:
    """Check that ``signature_text`` signs ``data`` with the key; ValueError if not."""
    key = parse_public_key(public_key_text)
    blob = _blob(signature_text, _SIGNATURE_LENGTH, "signature")
    keynum = blob[2:10]
    if keynum != key.keynum:
        raise ValueError(f"signed by key {keynum.hex()}, expected key {key.fingerprint}")
    try:
        Ed25519PublicKey.from_public_bytes(key.key).verify(blob[10:], data)
    except InvalidSignature:
        raise ValueError(f"the signature does not match (key {key.fingerprint})") from None


def signature_keynum(signature_text: str) -> str:
    """The key id (hex) a signature names, before anything is verified."""
    return _blob(signature_text, _SIGNATURE_LENGTH, "signature")[2:10].hex()


def keyring(texts: Iterable[str]) -> dict[str, str]:
    """``{key id: key text}`` of public keys; ValueError naming the first that is not one."""
    keys: dict[str, str] = {}
    for text in texts:
        keys.setdefault(parse_public_key(text).fingerprint, text)
    return keys


def verify_trusted(data: bytes, signature_text: str, trusted: Mapping[str, str]) -> str:
    """Check that ``signature_text`` signs ``data`` with one of the ``trusted`` keys (by key
    id, see :func:`keyring`); returns that key id. ValueError for a signature that is not
    one, a key id that is not trusted, or a signature that does not verify."""
    keynum = signature_keynum(signature_text)
    key = trusted.get(keynum)
    if key is None:
        raise ValueError(f"signed by key {keynum}, which is not a trusted key")
    verify(data, signature_text, key)
    return keynum

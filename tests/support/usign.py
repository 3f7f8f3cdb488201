"""usign keys and signatures in the real OpenWrt file formats.

OpenWrt signs ``sha256sums`` and the opkg ``Packages`` indexes with *usign*
(an Ed25519 tool). The files look like this::

    untrusted comment: public key 0123456789abcdef
    RWQBI0VniavN7...                         base64(b"Ed" + keynum[8] + public_key[32])

    untrusted comment: signed by key 0123456789abcdef
    RWQBI0VniavN7...                         base64(b"Ed" + keynum[8] + signature[64])

The signature is a plain Ed25519 signature over the raw bytes of the signed
file. The key number is 8 bytes, printed as 16 lowercase hex digits; OpenWrt
names the files under an ImageBuilder's ``keys/`` folder after it.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PKALG = b"Ed"
"""The algorithm tag every usign blob starts with."""


@dataclass(frozen=True)
class SecretKey:
    """A usign secret key: the Ed25519 private key and its 8-byte key number."""

    private_key: Ed25519PrivateKey
    keynum: bytes

    @property
    def keynum_hex(self) -> str:
        """The key number as usign prints it (16 lowercase hex digits)."""
        return self.keynum.hex()

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def public_key_text(self) -> str:
        """The public key file (``usign -G -p``) for this secret key."""
        blob = PKALG + self.keynum + self.public_key_bytes
        return (
            f"untrusted comment: public key {self.keynum_hex}\n"
            f"{base64.b64encode(blob).decode('ascii')}\n"
        )


def generate_keypair(seed: bytes | None = None) -> tuple[SecretKey, str]:
    """Create a usign key pair.

    ``seed`` makes the pair deterministic (it is hashed into the Ed25519 seed
    and the key number); without it the pair is random. Returns the secret key
    object and the text of the public key file.
    """
    if seed is None:
        raw, keynum = os.urandom(32), os.urandom(8)
    else:
        digest = hashlib.sha512(b"usign-test-key\0" + seed).digest()
        raw, keynum = digest[:32], digest[32:40]
    secret = SecretKey(Ed25519PrivateKey.from_private_bytes(raw), keynum)
    return secret, secret.public_key_text()


def sign(secret: SecretKey, data: bytes) -> str:
    """Sign ``data`` (the raw file bytes) and return the signature file text."""
    signature = secret.private_key.sign(data)
    blob = PKALG + secret.keynum + signature
    return (
        f"untrusted comment: signed by key {secret.keynum_hex}\n"
        f"{base64.b64encode(blob).decode('ascii')}\n"
    )


def _blob(text: str, length: int) -> bytes:
    """Decode the base64 line of a usign file and check its algorithm and length."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].startswith("untrusted comment:"):
        raise ValueError("not a usign file")
    blob = base64.b64decode(lines[1], validate=True)
    if len(blob) != length or blob[:2] != PKALG:
        raise ValueError("not an Ed25519 usign blob")
    return blob


def parse_public_key(text: str) -> tuple[str, bytes]:
    """Return ``(keynum_hex, raw_public_key)`` of a usign public key file."""
    blob = _blob(text, 2 + 8 + 32)
    return blob[2:10].hex(), blob[10:]


def signature_keynum(signature_text: str) -> str:
    """Return the key number (hex) a usign signature file claims to be made with."""
    return _blob(signature_text, 2 + 8 + 64)[2:10].hex()


def verify(public_key_text: str, data: bytes, signature_text: str) -> bool:
    """Check a usign signature the way ``usign -V`` does (key number and Ed25519)."""
    keynum, raw = parse_public_key(public_key_text)
    blob = _blob(signature_text, 2 + 8 + 64)
    if blob[2:10].hex() != keynum:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(blob[10:], data)
    except InvalidSignature:
        return False
    return True

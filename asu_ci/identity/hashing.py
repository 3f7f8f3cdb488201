"""``request_hash``: the full SHA-256 of a canonical encoding of what changes the image.

Never truncated, never a concatenation of strings without separators: a short
or ambiguous hash lets one request be answered with another's images
(CVE-2024-54143 in the upstream ASU server).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from asu_ci.identity.validate import NormalizedRequest

#: Bumped whenever the encoding changes, so old and new hashes never meet.
SCHEME = "asu-ci/request/1"
HASH_PATTERN = r"^[0-9a-f]{64}$"
_HASH = re.compile(HASH_PATTERN)


def canonical(request: NormalizedRequest) -> bytes:
    """The bytes that are hashed: sorted keys, fixed separators, UTF-8."""
    fields: dict[str, Any] = {"scheme": SCHEME, **request.image_fields()}
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def request_hash(request: NormalizedRequest) -> str:
    return hashlib.sha256(canonical(request)).hexdigest()


def is_request_hash(value: str) -> bool:
    return bool(_HASH.match(value))

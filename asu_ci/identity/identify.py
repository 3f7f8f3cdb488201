"""The one way from a raw request to (normalised request, hash).

The endpoint, ``asu-ci build``, the build job (which trusts no caller) and
prebuild all call :func:`identify`, so a request gets the same canonical form,
the same hash and the same error wording wherever it comes in:

1. the raw fields are parsed into a :class:`BuildRequest` (bad fields: one
   :class:`RequestError`, ``Invalid request: …``);
2. a board name the target does not know is mapped to the target's only
   profile when that profile is ``generic`` (x86, armsr: LuCI sends the
   machine's board name, a virtual machine's for instance); the answer says so
   through :attr:`Identity.notes`;
3. on a branch whose revision moves (snapshots) a request without
   ``version_code`` is pinned to the revision the index offers now, so the
   hash names the snapshot it is built from and a moved snapshot is a new
   build. A release's revision never moves: its requests keep an empty
   ``version_code`` and their hashes. A ``version_code`` the request names is
   kept as it is (the build refuses an ImageBuilder of another revision);
4. the request is checked against the index and the server's limits
   (:func:`~asu_ci.identity.validate.normalize`) and hashed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from asu_ci.config import Server
from asu_ci.errors import RequestError
from asu_ci.identity.hashing import request_hash
from asu_ci.identity.request import VERSION_CODE, BuildRequest, describe_errors
from asu_ci.identity.validate import Index, NormalizedRequest, normalize

#: The one profile of targets whose images fit any machine (x86/64, armsr/armv8, …).
GENERIC_PROFILE = "generic"
_VERSION_CODE = re.compile(VERSION_CODE)
_NOT_JSON = "the body is not valid JSON"


@dataclass(frozen=True)
class Identity:
    """A request in its normal form, its hash, and what the client should be told."""

    request: NormalizedRequest
    hash: str
    #: Sentences for the answer (a profile that was substituted); not part of the hash.
    notes: tuple[str, ...] = ()

    @classmethod
    def unchecked(cls, request: BuildRequest) -> Identity:
        """The identity of ``request`` as given, without the index.

        Only for recording a failure under the hash a dispatcher already
        announced: the build job validates again and fails with the reason.
        """
        normalized = NormalizedRequest.from_request(request)
        return cls(normalized, request_hash(normalized))

    def check(self, expected: str | None) -> Identity:
        """``self``, or :class:`RequestError` when the hash is not ``expected``."""
        if expected is not None and expected != self.hash:
            raise RequestError(
                f"The request hashes to {self.hash}, not to the expected {expected[:64]}: the "
                "request is not in its normal form, or it and the hash do not belong together"
            )
        return self


def invalid_request(errors: Iterable[Mapping[str, Any]]) -> RequestError:
    """The one error for fields that do not parse (pydantic's or FastAPI's errors)."""
    detail = describe_errors(errors)
    if detail == _NOT_JSON:
        return RequestError("The request body is not valid JSON")
    return RequestError(f"Invalid request: {detail}")


def parse(raw: BuildRequest | Mapping[str, Any]) -> BuildRequest:
    """``raw`` as a :class:`BuildRequest`, or the one :class:`RequestError` naming the fields."""
    if isinstance(raw, BuildRequest):
        return raw
    try:
        return BuildRequest.model_validate(raw)
    except ValidationError as exc:
        raise invalid_request(exc.errors()) from None


def identify(
    raw: BuildRequest | Mapping[str, Any],
    index: Index,
    server: Server,
    *,
    expect: str | None = None,
) -> Identity:
    """Parse, resolve, check and hash ``raw``; :class:`RequestError` (400/422) on any problem.

    ``expect`` is the hash the caller was given with the request (a dispatched
    job); a request that hashes to anything else is refused.
    """
    request = parse(raw)
    notes: list[str] = []
    request = _generic_profile(request, index, notes)
    request = _pin_revision(request, index)
    normalized = normalize(request, index, server)
    return Identity(normalized, request_hash(normalized), tuple(notes)).check(expect)


def moves(index: Index, version: str) -> bool:
    """Whether the revision behind ``version`` changes over time (snapshots)."""
    if version.upper().endswith("SNAPSHOT"):
        return True
    branch = index.branch_of(version)
    return bool(branch and branch.get("snapshot"))


def _pin_revision(request: BuildRequest, index: Index) -> BuildRequest:
    if request.version_code or not moves(index, request.version):
        return request
    current = index.revision(request.version, request.target)
    if not current or not _VERSION_CODE.match(current):
        return request  # no usable revision in the index: validation says what is wrong
    return request.model_copy(update={"version_code": current})


def _generic_profile(request: BuildRequest, index: Index, notes: list[str]) -> BuildRequest:
    """The target's only profile, ``generic``, for a board name that is no profile of it."""
    if index.profile(request.version, request.target, request.profile) is not None:
        return request
    document = index.target_profiles(request.version, request.target)
    profiles = document.get("profiles") if document is not None else None
    if not isinstance(profiles, Mapping) or list(profiles) != [GENERIC_PROFILE]:
        return request  # validation refuses the profile with its usual message
    notes.append(
        f"{request.profile} is no profile of {request.target}; its only profile, "
        f"{GENERIC_PROFILE}, is used instead"
    )
    return request.model_copy(update={"profile": GENERIC_PROFILE})

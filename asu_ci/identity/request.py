"""The build request as clients send it, with every limit of PROTOCOL.md.

Every string that could reach a path, a make variable or a file name has a
strict pattern here, so the OpenAPI document is the real contract. What needs
the index (does the version exist, which profile is an alias of which) is
checked in :mod:`asu_ci.identity.validate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: A package name as opkg and apk spell them.
PACKAGE_NAME = r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,127}$"
#: A package in a request: a name, or ``-name`` to remove a default package.
PACKAGE_WORD = r"^-?[A-Za-z0-9][A-Za-z0-9+._-]{0,127}$"
PACKAGE_VERSION = r"^[A-Za-z0-9][A-Za-z0-9+.~:_-]{0,127}$"
VERSION = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$"
VERSION_CODE = r"^(r[0-9]{1,7}-[0-9a-f]{6,40})?$"
TARGET = r"^[a-z0-9][a-z0-9_-]{0,31}/[a-z0-9][a-z0-9_-]{0,31}$"
PROFILE = r"^[A-Za-z0-9][A-Za-z0-9_.,+-]{0,127}$"
FILESYSTEM = r"^[a-z0-9][a-z0-9_-]{0,15}$"
REPOSITORY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
REPOSITORY_URL = r"^https?://[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?(/[A-Za-z0-9._~%+/-]{0,512})?$"
REPOSITORY_KEY = r"^[\x20-\x7e\n]{1,4096}$"
CLIENT = r"^[\x20-\x7e]{0,128}$"

MAX_PACKAGES = 1024
#: Hard cap of the model; the server's own (smaller) limit is checked on validation.
MAX_DEFAULTS = 1 << 20

PackageWord = Annotated[str, Field(pattern=PACKAGE_WORD)]
PackageName = Annotated[str, Field(pattern=PACKAGE_NAME)]
PackageVersion = Annotated[str, Field(pattern=PACKAGE_VERSION)]
RepositoryName = Annotated[str, Field(pattern=REPOSITORY_NAME)]
RepositoryUrl = Annotated[str, Field(pattern=REPOSITORY_URL)]
RepositoryKey = Annotated[str, Field(pattern=REPOSITORY_KEY)]


class BuildRequest(BaseModel):
    """``POST /api/v1/build``: what LuCI, auc, owut and the Firmware Selector send."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)

    distro: Annotated[Literal["openwrt"], Field(description="Only `openwrt` is built here.")] = (
        "openwrt"
    )
    version: Annotated[
        str, Field(pattern=VERSION, description="Release (`23.05.4`) or `SNAPSHOT`.")
    ]
    version_code: Annotated[
        str,
        Field(
            pattern=VERSION_CODE,
            description="Expected ImageBuilder revision `rNNNNN-hash`; a mismatch fails the "
            "build. Empty: a release's; for a snapshot, the one the index offers when the "
            "request comes in.",
        ),
    ] = ""
    target: Annotated[str, Field(pattern=TARGET, description="`target/subtarget`.")]
    profile: Annotated[
        str,
        Field(
            pattern=PROFILE,
            description="Profile id or a `supported_devices` board name (commas allowed).",
        ),
    ]
    packages: Annotated[
        list[PackageWord],
        Field(
            max_length=MAX_PACKAGES,
            description="Packages to add; `-name` removes a default package. A leading `+` "
            "is dropped.",
        ),
    ] = []
    packages_versions: Annotated[
        dict[PackageName, PackageVersion],
        Field(max_length=MAX_PACKAGES, description="`{name: version}` (auc, owut)."),
    ] = {}
    diff_packages: Annotated[
        bool, Field(description="Build the exact set: drop defaults not asked for.")
    ] = False
    filesystem: Annotated[
        str | None, Field(pattern=FILESYSTEM, description="`squashfs`, `ext4`, …")
    ] = None
    defaults: Annotated[
        str | None,
        Field(
            max_length=MAX_DEFAULTS,
            description="First-boot shell script, written to `etc/uci-defaults/` in the "
            "image; the server's limit is in overview.json.",
        ),
    ] = None
    rootfs_size_mb: Annotated[
        int | None, Field(ge=1, le=1 << 20, description="Root filesystem size in MiB.")
    ] = None
    repositories: Annotated[
        dict[RepositoryName, RepositoryUrl],
        Field(max_length=16, description="Extra package feeds `{name: url}` (allow-list)."),
    ] = {}
    repository_keys: Annotated[
        list[RepositoryKey], Field(max_length=16, description="Public keys of those feeds.")
    ] = []
    repositories_mode: Annotated[
        Literal["append", "replace"],
        Field(description="Add the repositories to the defaults, or replace them."),
    ] = "append"
    client: Annotated[
        str | None,
        Field(pattern=CLIENT, description="`luci/…`, `ofs/…`, `owut/…`; not part of the hash."),
    ] = None

    @field_validator("packages", mode="before")
    @classmethod
    def _clean_packages(cls, value: Any) -> Any:
        """Strip, drop a leading ``+``, drop empty words and duplicates (first one wins)."""
        if not isinstance(value, list):
            return value
        seen: dict[str, None] = {}
        for item in value:
            if not isinstance(item, str):
                return value  # not a list of words: the type check refuses it as it is
            item = item.strip()
            if item.startswith("+"):
                item = item[1:]
            if item:
                seen.setdefault(item, None)
        return list(seen)

    @field_validator("packages_versions", mode="before")
    @classmethod
    def _clean_versions(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k.strip() if isinstance(k, str) else k: v for k, v in value.items()}

    @field_validator("defaults")
    @classmethod
    def _defaults(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL bytes")
        return value or None

    @field_validator("filesystem", mode="before")
    @classmethod
    def _filesystem(cls, value: Any) -> Any:
        return value or None


#: The longest piece of a request (a dict key in a location) an error message repeats.
ECHO_LIMIT = 64


def _short(text: str) -> str:
    return text if len(text) <= ECHO_LIMIT else text[: ECHO_LIMIT - 1] + "…"


def describe_errors(errors: Iterable[Mapping[str, Any]], limit: int = 5) -> str:
    """pydantic's (or FastAPI's) errors as one readable line, never echoing the input.

    Locations drop FastAPI's leading ``body``; an unparsable body says just that.
    """
    parts = []
    for err in list(errors)[:limit]:
        if err.get("type") == "json_invalid":
            return "the body is not valid JSON"
        loc = ".".join(_short(str(p)) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return "; ".join(parts)

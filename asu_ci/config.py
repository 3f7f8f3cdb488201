"""Configuration: one typed model, read from one YAML file plus env plus flags.

Precedence: command-line flags win over ``ASU_CI_*`` env vars, env vars over
the YAML file, the file over the defaults below. With no file at all,
``asu-ci serve`` is a complete service on embedded defaults.

Env vars name one key each: ``ASU_CI_UPSTREAM`` sets ``upstream``, a double
underscore descends into a section (``ASU_CI_SERVER__ALLOW_DEFAULTS=false``).
Values are read as YAML scalars, so ``false``, ``8`` and ``[a, b]`` work.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from asu_ci.errors import ConfigError

ENV_PREFIX = "ASU_CI_"
DEFAULT_CONFIG_FILE = "asu-ci.yaml"
DEFAULT_UPSTREAM = "https://downloads.openwrt.org"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PackageChange(_Model):
    """A package change from a revision on, as upstream ASU publishes it: ``source`` and
    ``target`` renamed; only ``source`` added; only ``target`` removed. A ``mandatory``
    addition or removal applies whatever the request says."""

    source: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,127}$")] = None
    target: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9+._-]{0,127}$")] = None
    revision: Annotated[int, Field(ge=0, description="first revision (rNNNNN) with the change")]
    mandatory: bool = False

    @model_validator(mode="after")
    def _names_something(self) -> PackageChange:
        if not self.source and not self.target:
            raise ValueError("a package change needs a source, a target or both")
        return self


class Branch(_Model):
    """One release branch of the upstream download server."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]{0,31}$")]
    enabled: bool = True
    snapshot: bool = False
    path: str = "releases/{version}"
    path_packages: str = "releases/packages-{branch}"
    versions: list[str] | None = Field(
        default=None,
        description="versions to serve; unset means every version of the branch "
        "listed in the upstream .versions.json",
    )
    git_branch: str | None = None
    branch_off_rev: int = 0
    package_changes: tuple[PackageChange, ...] = ()
    signing_key: str | None = Field(
        default=None,
        description="usign public key (the text of the .pub file) that signs sha256sums",
    )

    @field_validator("path")
    @classmethod
    def _safe_path(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError("must be a relative path without '..'")
        return value


class Server(_Model):
    """Limits announced in overview.json and enforced on every request."""

    contact: str = ""
    api_url: str = Field(
        default="",
        description="public URL of the endpoint, for a site hosted elsewhere (GitHub Pages); "
        "empty: the site and the endpoint share an origin",
    )
    allow_defaults: bool = True
    max_defaults_length: Annotated[int, Field(ge=0, le=1 << 20)] = 20480
    max_custom_rootfs_size_mb: Annotated[int, Field(ge=1)] = 1024
    repository_allow_list: tuple[str, ...] = ()
    max_pending_builds: Annotated[int, Field(ge=1)] = 200
    rate_limit_per_minute: Annotated[
        int, Field(ge=1, description="new builds one client may submit per minute")
    ] = 20
    max_body_bytes: Annotated[int, Field(ge=1024)] = 256 * 1024
    forwarded_allow_ips: tuple[str, ...] = Field(
        default=(),
        description="addresses of the proxies whose X-Forwarded-For is believed; "
        "empty: none, the peer address is the client",
    )
    access_log: bool = Field(default=False, description="log every HTTP request (serve)")
    header_timeout_seconds: Annotated[
        float, Field(gt=0, le=300, description="a request's headers must arrive within this")
    ] = 10.0


class Build(_Model):
    """How builds run."""

    timeout_seconds: Annotated[float, Field(gt=0)] = 3600.0
    failure_retry_seconds: Annotated[float, Field(ge=0)] = 3600.0
    cache_max_age_days: Annotated[float, Field(gt=0)] = 14.0
    cache_max_gb: Annotated[float, Field(gt=0)] = 20.0


class Retention(_Model):
    """Retention of the local store (``asu-ci prune`` and the serve loop)."""

    keep_days: Annotated[
        float, Field(gt=0, description="an on-demand build no one asked for this long expires")
    ] = 30.0
    keep_failed_days: Annotated[
        float, Field(gt=0, description="a failed request's answer is kept this long")
    ] = 1.0
    prune_interval_minutes: Annotated[
        float, Field(ge=0, description="serve prunes this often; 0: never")
    ] = 60.0
    defaults_minutes: Annotated[
        float,
        Field(
            gt=0,
            description="a build with a first-boot script (defaults: often Wi-Fi and root "
            "passwords) expires this long after it was built, however often it is asked for; "
            "serve prunes at least this often",
        ),
    ] = 30.0


class Signatures(_Model):
    """Which usign keys may sign a branch's ``sha256sums``. OpenWrt's own keys ship with
    asu-ci (asu_ci/data/keys); a branch's ``signing_key``, when set, is the only key
    that branch accepts."""

    trusted_keys: tuple[str, ...] = Field(
        default=(),
        description="extra usign public keys (the text of a .pub file, or its base64 line) "
        "trusted for every branch, e.g. the key of your own mirror",
    )
    allow_unsigned: bool = Field(
        default=False,
        description="build from a download tree without sha256sums.sig (warned about at "
        "start); a signature that is present must still verify",
    )

    @field_validator("trusted_keys")
    @classmethod
    def _usign_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from asu_ci.build.usign import parse_public_key

        for number, text in enumerate(value, 1):
            try:
                parse_public_key(text)
            except ValueError as exc:
                raise ValueError(f"key {number}: {exc}") from None
        return value


class Local(_Model):
    """The embedded backend: a bounded worker pool on this machine."""

    workers: Annotated[int, Field(ge=1, le=64)] = 1


class GitHub(_Model):
    """The GitHub Actions backend. The token comes from the env, never from this file."""

    repository: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")] | None = None
    ref: str = "main"
    workflow: str = "build.yml"
    token_env: str = "GITHUB_TOKEN"  # noqa: S105 - the name of the variable, not a secret
    api_url: str = "https://api.github.com"
    timeout_seconds: Annotated[float, Field(gt=0)] = 15.0
    store: Annotated[
        Literal["releases", "endpoint"],
        Field(
            description="where finished builds are kept: 'releases' (one GitHub release per "
            "build, served by GitHub; about 1,300 builds a day per repository) or 'endpoint' "
            "(the endpoint takes each run's attested output into its own store; 10,000 a day)"
        ),
    ] = "releases"


# -- index: what is served and how often it is re-rendered (issue 10) ----------


class Index(_Model):
    """The rendered index: which releases beyond the default ones, and when to re-render."""

    extra_branches: tuple[
        Annotated[str, Field(pattern=r"^[0-9]+\.[0-9]+$", description="e.g. '22.03'")], ...
    ] = Field(
        default=(),
        description="older branches served beside SNAPSHOT, upcoming, stable and oldstable; "
        "quote them in YAML ('22.03', not 22.03)",
    )
    refresh_seconds: Annotated[
        float, Field(ge=0, description="seconds between background re-renders; 0: never")
    ] = 300.0


class Settings(_Model):
    """Everything asu-ci can be told. Paths are relative to the working directory."""

    upstream: str = DEFAULT_UPSTREAM
    upstream_timeout_seconds: Annotated[
        float,
        Field(
            ge=3,
            le=3600,
            description="one read of the download server gives up after this, retries included",
        ),
    ] = 60.0
    home: Path = Path("asu-ci-data")
    public: Path | None = None
    data: Path | None = None
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8000
    workers: Annotated[int, Field(ge=1, le=64)] | None = None
    branches: tuple[Branch, ...] | None = None
    server: Server = Server()
    build: Build = Build()
    store: Retention = Retention()
    signatures: Signatures = Signatures()
    backend: Literal["local", "github"] = "local"
    local: Local = Local()
    github: GitHub = GitHub()
    index: Index = Index()

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str) -> str:
        if re.match(r"^(https?|file)://", value) or not re.match(r"^[a-z]+://", value):
            return value.rstrip("/") or value
        raise ValueError("must be an http(s):// or file:// URL or a local folder")

    @property
    def public_dir(self) -> Path:
        return self.public if self.public is not None else self.home / "public"

    @property
    def data_dir(self) -> Path:
        return self.data if self.data is not None else self.home / "data"

    @property
    def worker_count(self) -> int:
        return self.workers if self.workers is not None else self.local.workers


def load_settings(
    config: Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Read the YAML file (``config``, ``$ASU_CI_CONFIG`` or ``./asu-ci.yaml``), env and flags."""
    env = dict(os.environ if environ is None else environ)
    source = "configuration (env and flags)"
    raw: dict[str, Any] = {}
    path = config or (Path(env["ASU_CI_CONFIG"]) if env.get("ASU_CI_CONFIG") else None)
    if path is None and Path(DEFAULT_CONFIG_FILE).is_file():
        path = Path(DEFAULT_CONFIG_FILE)
    if path is not None:
        source = str(path)
        raw = _read_yaml(path)
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or key == "ASU_CI_CONFIG":
            continue
        dotted = key[len(ENV_PREFIX) :].lower().split("__")
        _set(raw, dotted, _env_value(key, dotted, value))
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(raw, key.split("."), value)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, not a list or value")
    return data


def _env_value(key: str, dotted: list[str], value: str) -> Any:
    """A string for a text or path key (``ref=24.10`` stays ``"24.10"``); YAML otherwise."""
    if _is_text(dotted) or not value.strip():
        return value
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"{key}: value is not a valid YAML scalar or list") from None


def _is_text(dotted: list[str]) -> bool:
    model: type[BaseModel] | None = Settings
    field = None
    for part in dotted:
        if model is None or (field := model.model_fields.get(part)) is None:
            return False
        model = _model_in(field.annotation)
    if field is None or model is not None:
        return False
    args = set(getattr(field.annotation, "__args__", ())) - {type(None)}
    kinds = args or {field.annotation}
    return kinds <= {str, Path}


def _set(raw: dict[str, Any], dotted: list[str], value: Any) -> None:
    node = raw
    for part in dotted[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[dotted[-1]] = value


def _describe(exc: ValidationError, source: str) -> str:
    """One line naming the first bad key, with a "did you mean" for typos."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f" (known keys: {', '.join(known)})"
        return f"{source}: unknown key '{key}'{hint}"
    return f"{source}: bad value for '{key}': {err['msg']}"


def _fields_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] = Settings
    for part in loc:
        if part.isdigit():
            continue
        field = model.model_fields.get(part)
        if field is None:
            return []
        nested = _model_in(field.annotation)
        if nested is None:
            return []
        model = nested
    return sorted(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None

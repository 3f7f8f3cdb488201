"""The one hierarchy of user-facing failures.

Every failure a user can cause or fix is an :class:`AsuCiError`. Each class
carries the exit code the CLI ends with and the HTTP status the endpoint
answers with; the message says what went wrong and what to do about it.
The CLI and the endpoint catch only these: anything else is a bug and is
allowed to surface as one (and is logged, never shown to a client).
"""

from __future__ import annotations


class AsuCiError(Exception):
    """Base of every failure that is reported to a user."""

    exit_code: int = 1
    http_status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def headers(self) -> dict[str, str]:
        """Extra HTTP headers this failure answers with."""
        return {}


class ConfigError(AsuCiError):
    """The configuration file, an env var or a flag is wrong."""

    exit_code = 2


class UsageError(AsuCiError):
    """A command line that cannot be acted on (bad file, bad argument)."""

    exit_code = 2


class RequestError(AsuCiError):
    """A build request that is not valid: unknown version, target, profile, bad field."""

    exit_code = 2
    http_status = 400


class UnknownPackagesError(RequestError):
    """The request names packages the index does not have."""

    http_status = 422

    def __init__(self, packages: list[str]) -> None:
        self.packages = sorted(packages)
        names = ", ".join(self.packages)
        super().__init__(
            f"Unsupported package(s): {names}. "
            "Check the spelling or look the package up in the index for this version."
        )

    def headers(self) -> dict[str, str]:
        return {"X-Unknown-Package": ", ".join(self.packages)}


class NotFoundError(AsuCiError):
    """Something asked for by name does not exist (an unknown request hash)."""

    exit_code = 2
    http_status = 404


class RateLimitedError(AsuCiError):
    """A client sent more requests than its share."""

    http_status = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class QueueFullError(AsuCiError):
    """Too many builds are waiting; the client should come back later."""

    http_status = 529


class UpstreamError(AsuCiError):
    """The upstream download server (or mirror) could not be read."""

    exit_code = 3
    http_status = 502


class BackendUnavailableError(AsuCiError):
    """The build backend (GitHub) cannot be reached right now; nothing was lost."""

    exit_code = 3
    http_status = 503


class BuildError(AsuCiError):
    """A build failed. Carries the tails of the ImageBuilder's output."""

    exit_code = 4
    http_status = 500

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "") -> None:
        super().__init__(message)
        self.stdout = stdout
        self.stderr = stderr


class ImageBuilderError(BuildError):
    """The ImageBuilder archive could not be found, verified or unpacked safely."""

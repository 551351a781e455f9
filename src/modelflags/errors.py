"""The exceptions of modelflags.

Every error the package raises derives from :class:`ModelFlagsError`::

    ModelFlagsError
     ├── RegistryError              a registry file or mapping is invalid (file, model, field)
     ├── ModelUnavailableError      a model cannot be served at all (unknown name, LKG unloadable)
     ├── ActuatorError              a flag could not be changed at its source (flag_key, actuator)
     ├── InvalidActionError         an operator action does not apply now (also a ValueError)
     ├── InputContractError         a call's input does not fit the model's declared input
     │                              (also a ValueError; never falls back)
     ├── MetricsUnavailableError    fleet metrics could not be read from Prometheus (url, reason)
     ├── VersionSourceError         a model's versions could not be read from their source
     │                              (MLflow's Model Registry: url, status)
     └── VersionLoadError           one version could not be made ready (model, version)
          ├── ArtifactError         its bytes could not be had or trusted (uri)
          │    ├── ArtifactNotFoundError   the file or object does not exist (404, missing path)
          │    ├── DigestMismatchError     the bytes do not match the registered sha256
          │    ├── ArtifactTooLargeError   the artifact exceeds the configured size limit
          │    ├── SizeMismatchError       fewer bytes than the registry's size says
          │    ├── UnsafeCacheError        the cache folder or an entry in it cannot be trusted
          │    └── FetchError              a remote fetch failed (HTTP status, timeout, connection)
          ├── DeserializationError  the loader could not turn the file into a model (loader)
          └── VersionRefusedError   this process may not serve it (check: "digest",
                                    "environment" or "input")

Errors on the request path are translated at one boundary (``raise Mapped(...) from exc``), so the
cause is always chained and the message names what a person needs: the file, model, version and
field. Errors from shadow work never reach the caller.
"""

from __future__ import annotations

__all__ = [
    "ActuatorError",
    "ArtifactError",
    "ArtifactNotFoundError",
    "ArtifactTooLargeError",
    "DeserializationError",
    "DigestMismatchError",
    "FetchError",
    "InputContractError",
    "InvalidActionError",
    "MetricsUnavailableError",
    "ModelFlagsError",
    "ModelUnavailableError",
    "RegistryError",
    "SizeMismatchError",
    "UnsafeCacheError",
    "VersionLoadError",
    "VersionRefusedError",
    "VersionSourceError",
    "shown",
]

_SHOWN_LIMIT = 80


def shown(value: object, *, limit: int = _SHOWN_LIMIT, quote: bool = True) -> str:
    """A value that came from outside, fit for a message: escaped and at most ``limit`` characters.

    Control and non-printable characters are escaped as Python escapes them; a longer value is cut
    and its full length given, so a 10 MB flag value cannot flood a log line, an event or a status.
    ``quote=False`` leaves out the surrounding quotes of a string.
    """
    text = repr(value) if quote or not isinstance(value, str) else repr(value)[1:-1]
    if len(text) <= limit:
        return text
    size = len(value) if isinstance(value, str | bytes) else len(text)
    return f"{text[:limit]}... ({size} characters)"


class ModelFlagsError(Exception):
    """Base class of every error raised by modelflags."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RegistryError(ModelFlagsError):
    """A registry is invalid. ``file``, ``model`` and ``field`` say where, when known."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        model: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.file = file
        self.model = model
        self.field = field


class ModelUnavailableError(ModelFlagsError):
    """A model cannot be served: its name is unknown, or even its last known good version fails."""

    def __init__(self, message: str, *, model: str, version: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.version = version


class MetricsUnavailableError(ModelFlagsError):
    """Fleet metrics could not be read: nothing to decide on.

    ``reason`` is ``"unreachable"`` (no answer, a timeout, an HTTP error status),
    ``"query"`` (Prometheus refused the PromQL: ``errorType`` and ``error`` are in the message)
    or ``"no_series"`` (the query answered, without the series a decision needs); ``url`` is the
    server asked.
    """

    def __init__(self, message: str, *, url: str, reason: str) -> None:
        super().__init__(message)
        self.url = url
        self.reason = reason


class VersionSourceError(ModelFlagsError):
    """The versions of a model could not be read from where they come from (MLflow).

    ``url`` is the request that failed (without credentials); ``status`` its HTTP status, or
    None when nothing answered (``unreachable`` is then True).
    """

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status

    @property
    def unreachable(self) -> bool:
        """True when the server did not answer (or answered with a server error)."""
        return self.status is None or self.status >= 500


class VersionLoadError(ModelFlagsError):
    """One version of a model could not be made ready to serve."""

    def __init__(self, message: str, *, model: str, version: str) -> None:
        super().__init__(message)
        self.model = model
        self.version = version


class ArtifactError(VersionLoadError):
    """The artifact of a version could not be obtained or trusted."""

    def __init__(self, message: str, *, model: str, version: str, uri: str) -> None:
        super().__init__(message, model=model, version=version)
        self.uri = uri


class ArtifactNotFoundError(ArtifactError):
    """The artifact does not exist at its URI."""


class DigestMismatchError(ArtifactError):
    """The artifact's bytes do not have the registered sha256; they were not deserialized."""

    def __init__(
        self, message: str, *, model: str, version: str, uri: str, expected: str, actual: str
    ) -> None:
        super().__init__(message, model=model, version=version, uri=uri)
        self.expected = expected
        self.actual = actual


class ArtifactTooLargeError(ArtifactError):
    """The artifact is larger than the configured limit."""


class SizeMismatchError(ArtifactError):
    """The artifact has fewer bytes than the registry's ``size`` (more is ArtifactTooLargeError).

    ``expected`` is the registered size, ``actual`` the number of bytes found.
    """

    def __init__(
        self, message: str, *, model: str, version: str, uri: str, expected: int, actual: int
    ) -> None:
        super().__init__(message, model=model, version=version, uri=uri)
        self.expected = expected
        self.actual = actual


class UnsafeCacheError(ArtifactError):
    """The cache folder could be written by someone else, or holds an entry it did not make.

    ``path`` is the folder or entry at fault.
    """

    def __init__(self, message: str, *, model: str, version: str, uri: str, path: str) -> None:
        super().__init__(message, model=model, version=version, uri=uri)
        self.path = path


class FetchError(ArtifactError):
    """A remote fetch failed after its retries (``status`` is the last HTTP status, if any)."""

    def __init__(
        self, message: str, *, model: str, version: str, uri: str, status: int | None = None
    ) -> None:
        super().__init__(message, model=model, version=version, uri=uri)
        self.status = status


class DeserializationError(VersionLoadError):
    """The loader could not turn the verified file into a model object."""

    def __init__(self, message: str, *, model: str, version: str, loader: str) -> None:
        super().__init__(message, model=model, version=version)
        self.loader = loader


class ActuatorError(ModelFlagsError):
    """An actuator could not change flag ``flag_key``.

    ``actuator`` names the kind (``"flagd-file"``, ``"unleash"``); ``status`` is the HTTP status
    of a refused request, when there was one.
    """

    def __init__(
        self, message: str, *, flag_key: str, actuator: str, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.flag_key = flag_key
        self.actuator = actuator
        self.status = status


class InvalidActionError(ModelFlagsError, ValueError):
    """An action that does not apply to the version now: confirming a rollback nobody proposed,
    rolling back the only proven version. ``model`` and ``version`` say which."""

    def __init__(self, message: str, *, model: str, version: str | None = None) -> None:
        super().__init__(message)
        self.model = model
        self.version = version


class VersionRefusedError(VersionLoadError):
    """A version this process refuses to serve, whatever its bytes would do.

    ``check`` says which check refused it: ``"digest"`` (its id now names other bytes than the
    ones first seen), ``"environment"`` (the libraries it was made with differ from the running
    ones beyond the model's ``compat`` policy) or ``"input"`` (what it expects does not match the
    model's declared input). The message names both sides.
    """

    def __init__(self, message: str, *, model: str, version: str, check: str) -> None:
        super().__init__(message, model=model, version=version)
        self.check = check


class InputContractError(ModelFlagsError, ValueError):
    """A call's input does not fit the model's declared input; the model never saw it.

    ``missing`` and ``extra`` name the features the input lacks or has beyond the declared ones
    (empty for arrays, which are judged by their shape). Bad input is the caller's: it is never
    answered by another version.
    """

    def __init__(
        self,
        message: str,
        *,
        model: str,
        version: str,
        missing: tuple[str, ...] = (),
        extra: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message)
        self.model = model
        self.version = version
        self.missing = missing
        self.extra = extra

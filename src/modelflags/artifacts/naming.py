"""How artifacts are named in messages: URIs without their secrets, and whom an error is about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict
from urllib.parse import urlsplit, urlunsplit

__all__ = ["ErrorArgs", "Subject", "redact_uri"]

_REMOTE = frozenset({"http", "https", "s3"})


def redact_uri(uri: str) -> str:
    """A remote URI without its user info and query string, which may carry credentials.

    The query is shown as ``?...`` so that a reader knows there was one. Local paths are
    returned unchanged.
    """
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<a URI that cannot be parsed>"
    if parts.scheme.lower() not in _REMOTE:
        return uri
    netloc = parts.netloc.rpartition("@")[2]
    query = "..." if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


class ErrorArgs(TypedDict):
    """The keyword arguments every :class:`~modelflags.errors.ArtifactError` takes."""

    model: str
    version: str
    uri: str


@dataclass(frozen=True)
class Subject:
    """The version an operation is about: ``uri`` is already free of secrets.

    Immutable: safe to share between threads.
    """

    model: str
    version: str
    uri: str

    @classmethod
    def of(cls, model: str, version: str, uri: str) -> Subject:
        """The subject of ``uri``, redacted."""
        return cls(model, version, redact_uri(uri))

    def where(self) -> str:
        """``model 'm' version 'v1'``: how messages begin."""
        return f"model {self.model!r} version {self.version!r}"

    def error_args(self) -> ErrorArgs:
        """``model=``, ``version=`` and ``uri=`` (redacted) for an ArtifactError."""
        return {"model": self.model, "version": self.version, "uri": self.uri}

"""Errors of the artifact layer that refine :class:`~modelflags.errors.ArtifactError`.

::

    ArtifactError
     ├── SizeMismatchError   the bytes are not as many as the registry's ``size`` says
     └── UnsafeCacheError    the cache folder, or an entry in it, cannot be trusted

Both name the model, the version and the URI (without user info or query string).
"""

from __future__ import annotations

from modelflags.errors import ArtifactError

__all__ = ["SizeMismatchError", "UnsafeCacheError"]


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

"""Errors of the artifact layer, kept importable here; they live in :mod:`modelflags.errors`."""

from modelflags.errors import SizeMismatchError, UnsafeCacheError

__all__ = ["SizeMismatchError", "UnsafeCacheError"]

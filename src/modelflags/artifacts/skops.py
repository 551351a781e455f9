"""Loading ``.skops`` files: scikit-learn models without running arbitrary pickle code.

skops stores an object as a tree of typed nodes and only instantiates types it trusts. Its own
defaults cover scikit-learn, NumPy and SciPy building blocks; any other type found in a file (a
custom estimator class, a function such as ``operator.neg``) must be trusted by name. The loader
refuses a file that needs a type you did not list, naming the types, before building anything.
It reads the verified bytes in memory, never the file again.

Needs the ``skops`` extra: ``pip install 'modelflags[skops]'``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from modelflags.artifacts.folders import VerifiedFolder
from modelflags.artifacts.loaders import VerifiedLoader
from modelflags.artifacts.verified import VerifiedArtifact

__all__ = ["make_skops_loader"]


def _skops_io(what: object) -> Any:
    try:
        import skops.io as sio
    except ImportError as exc:
        raise ImportError(f"loading {what} needs skops: pip install 'modelflags[skops]'") from exc
    return sio


class _SkopsLoader(VerifiedLoader):
    def __call__(self, source: VerifiedArtifact | VerifiedFolder | str | os.PathLike[str]) -> Any:
        _skops_io(source.uri if isinstance(source, VerifiedArtifact | VerifiedFolder) else source)
        return super().__call__(source)


def make_skops_loader(trusted: Sequence[str] | None = None) -> VerifiedLoader:
    """A loader for ``.skops`` files that trusts skops' defaults plus the ``trusted`` type names.

    Type names are fully qualified, as skops reports them (``"mypackage.models.MyScaler"``,
    ``"_operator.neg"``). The returned loader raises ``ValueError`` naming the untrusted types of
    a file, and ``ImportError`` when skops is not installed. It keeps no state: safe to share
    between threads.
    """
    if isinstance(trusted, str):
        raise TypeError("trusted must be a sequence of type names, not one string")
    allowed = frozenset(trusted or ())

    def load_skops(artifact: VerifiedArtifact) -> Any:
        sio = _skops_io(artifact.uri)
        found = [str(name) for name in sio.get_untrusted_types(file=artifact.open())]
        refused = sorted(set(found) - allowed)
        if refused:
            raise ValueError(
                f"{artifact.uri}: refusing to load types that are not trusted: "
                f"{', '.join(refused)}. If you trust this file, list them in "
                "make_skops_loader(trusted=[...])"
            )
        return sio.load(artifact.open(), trusted=found)

    return _SkopsLoader(load_skops, name="skops")

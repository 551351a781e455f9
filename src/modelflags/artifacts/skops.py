"""Loading ``.skops`` files: scikit-learn models without running arbitrary pickle code.

skops stores an object as a tree of typed nodes and only instantiates types it trusts. Its own
defaults cover scikit-learn, NumPy and SciPy building blocks; any other type found in a file (a
custom estimator class, a function such as ``operator.neg``) must be trusted by name. The loader
refuses a file that needs a type you did not list, naming the types, before building anything.

Needs the ``skops`` extra: ``pip install 'modelflags[skops]'``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["make_skops_loader"]


def make_skops_loader(trusted: Sequence[str] | None = None) -> Callable[[Path], Any]:
    """A loader for ``.skops`` files that trusts skops' defaults plus the ``trusted`` type names.

    Type names are fully qualified, as skops reports them (``"mypackage.models.MyScaler"``,
    ``"_operator.neg"``). The returned loader raises ``ValueError`` naming the untrusted types of
    a file, and ``ImportError`` when skops is not installed. It keeps no state: safe to share
    between threads.
    """
    if isinstance(trusted, str):
        raise TypeError("trusted must be a sequence of type names, not one string")
    allowed = frozenset(trusted or ())

    def load_skops(path: Path) -> Any:
        try:
            import skops.io as sio
        except ImportError as exc:
            raise ImportError(
                f"loading {path} needs skops: pip install 'modelflags[skops]'"
            ) from exc
        found = [str(name) for name in sio.get_untrusted_types(file=path)]
        refused = sorted(set(found) - allowed)
        if refused:
            raise ValueError(
                f"{path}: refusing to load types that are not trusted: {', '.join(refused)}. "
                "If you trust this file, list them in make_skops_loader(trusted=[...])"
            )
        return sio.load(path, trusted=found)

    return load_skops

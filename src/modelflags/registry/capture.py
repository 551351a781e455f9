"""Lineage read from the machine at registration: file digests, git, libraries, estimator, DVC.

Nothing here deserializes an artifact: the libraries a pickle needs are read from its opcodes
(:func:`pickle_globals`, the way ``pickletools`` lists them), never by loading it.
"""

from __future__ import annotations

import bz2
import functools
import hashlib
import importlib.metadata
import io
import logging
import lzma
import math
import os
import pickletools
import platform
import re
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from modelflags.errors import RegistryError
from modelflags.registry.records import (
    DataFile,
    DvcEntry,
    Environment,
    GitState,
    Lineage,
    canonical_name,
)

__all__ = [
    "collect_lineage",
    "dvc_entries",
    "estimator_class",
    "estimator_params",
    "file_digest",
    "git_state",
    "libraries_for",
    "pickle_globals",
    "running_environment",
]

logger = logging.getLogger(__name__)

#: How much of a (decompressed) pickle is scanned for the classes it names.
_SCAN_BYTES = 8 << 20
_GIT_TIMEOUT = 10.0
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
#: Libraries each loader needs whatever the artifact holds.
_LOADER_LIBRARIES = {"joblib": ("joblib",), "skops": ("skops",)}
_LOADER_BY_SUFFIX = {".joblib": "joblib", ".skops": "skops"}


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """The sha256 (hex) and size of the bytes read from ``path`` (one open file, one pass)."""
    with open(path, "rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
        return digest, os.fstat(stream.fileno()).st_size


def git_state(folder: str | os.PathLike[str]) -> GitState | None:
    """The commit checked out in the git working tree around ``folder`` and whether tracked
    files have changes not committed; None outside a repository or without ``git``."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", os.fspath(folder), *args],
                capture_output=True,
                text=True,
                timeout=_GIT_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            logger.debug("git %s in %s failed: %s", args[0], folder, exc)
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "--verify", "HEAD")
    if not commit:
        return None
    status = git("status", "--porcelain", "--untracked-files=no")
    branch = git("symbolic-ref", "--short", "-q", "HEAD")
    return GitState(commit=commit, dirty=bool(status), branch=branch or None)


@functools.lru_cache(maxsize=1024)
def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def running_environment(libraries: Iterable[str] = ()) -> Environment:
    """This interpreter's version and platform, and the installed versions of ``libraries``
    (distribution names; those not installed are left out). Versions are read once per process.
    """
    found = {}
    for name in libraries:
        version = _installed_version(canonical_name(name))
        if version is not None:
            found[canonical_name(name)] = version
    return Environment(
        python=platform.python_version(),
        platform=f"{sys.platform}-{platform.machine()}",
        libraries=found,
    )


def libraries_for(
    modules: Iterable[str], *, loader: str | None = None, extra: Iterable[str] = ()
) -> list[str]:
    """The installed distributions that provide ``modules`` (import names such as
    ``sklearn.linear_model``), those they require directly, the ``loader``'s, and ``extra``."""
    providers = _providers()
    found: dict[str, None] = {}
    for module in modules:
        for distribution in providers.get(module.split(".")[0], ()):
            found[canonical_name(distribution)] = None
    for requirement in [r for name in list(found) for r in _requirements(name)]:
        found[requirement] = None
    for name in [*_LOADER_LIBRARIES.get(loader or "", ()), *extra]:
        found[canonical_name(name)] = None
    return sorted(name for name in found if _installed_version(name) is not None)


@functools.lru_cache(maxsize=1)
def _providers() -> Mapping[str, list[str]]:
    """Top-level import name -> distributions (a scan of every installed one: done once)."""
    return importlib.metadata.packages_distributions()


def _requirements(distribution: str) -> Iterator[str]:
    """The distributions ``distribution`` needs at run time (its extras left out)."""
    for requirement in importlib.metadata.requires(distribution) or ():
        if "extra" in requirement.partition(";")[2]:
            continue
        match = _REQUIREMENT.match(requirement)
        if match:
            yield canonical_name(match.group(1))


def pickle_globals(path: str | os.PathLike[str]) -> list[str]:
    """The ``module.name`` of each class or function a pickle (or joblib file) refers to, in order.

    The opcodes are read, never executed. A joblib file is scanned up to its first array (joblib
    writes array bytes between opcodes), which comes after the estimator's classes; zlib, gzip,
    bz2 and xz compression are undone for the first 8 MiB. Unreadable files give an empty list.
    """
    try:
        data = _pickle_prefix(Path(path))
    except OSError as exc:
        logger.debug("%s: cannot read as a pickle: %s", path, exc)
        return []
    found: list[str] = []
    memo: dict[int, Any] = {}
    pushed: list[Any] = []  # what the last opcodes pushed (None: not a string)
    try:
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data)):
            name = opcode.name
            if name == "GLOBAL" or name == "INST":
                module, _, attribute = str(argument).partition(" ")
                found.append(f"{module}.{attribute}")
                pushed.append(None)
            elif name == "STACK_GLOBAL":
                if len(pushed) == 2 and isinstance(pushed[0], str) and isinstance(pushed[1], str):
                    found.append(f"{pushed[0]}.{pushed[1]}")
                pushed.append(None)
            elif name == "MEMOIZE":
                memo[len(memo)] = pushed[-1] if pushed else None
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(str(argument))] = pushed[-1] if pushed else None
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                pushed.append(memo.get(int(str(argument))))
            elif name in ("FRAME", "PROTO"):
                continue
            elif name == "STOP":
                break
            else:
                pushed.append(argument if isinstance(argument, str) else None)
            del pushed[:-2]
    except (ValueError, EOFError):
        pass  # joblib's raw array bytes, or a truncated prefix: keep what was found
    return list(dict.fromkeys(found))


def _pickle_prefix(path: Path) -> bytes:
    with path.open("rb") as stream:
        head = stream.read(_SCAN_BYTES)
    decompress: Callable[[bytes], bytes] | None = None
    if head[:2] == b"\x1f\x8b":
        decompress = zlib.decompressobj(wbits=31).decompress
    elif head[:1] == b"x":
        decompress = zlib.decompressobj().decompress
    elif head[:3] == b"BZh":
        decompress = bz2.BZ2Decompressor().decompress
    elif head[:6] == b"\xfd7zXZ\x00" or head[:1] == b"\x5d":
        decompress = lzma.LZMADecompressor().decompress
    if decompress is None:
        return head
    try:
        return decompress(head)[:_SCAN_BYTES]
    except (OSError, ValueError, EOFError, zlib.error, lzma.LZMAError):
        return head  # not compressed after all (a protocol-1 pickle may start with "]")


def estimator_class(value: object) -> str:
    """``module.Class`` of ``value``, by its shortest public path when the package exports it
    (``sklearn.linear_model.LogisticRegression``, not ``sklearn.linear_model._logistic...``)."""
    cls = type(value)
    return public_path(cls.__module__, cls.__qualname__)


def public_path(module: str, name: str) -> str:
    """The shortest already-imported module path that exports ``name`` as the same object."""
    full = sys.modules.get(module)
    target = getattr(full, name, None) if full is not None else None
    parts = module.split(".")
    if target is not None:
        for end in range(1, len(parts)):
            prefix = ".".join(parts[:end])
            if any(part.startswith("_") for part in parts[1:end]):
                break
            candidate = sys.modules.get(prefix)
            if candidate is not None and getattr(candidate, name, None) is target:
                return f"{prefix}.{name}"
    return f"{module}.{name}"


def estimator_params(value: object) -> dict[str, Any]:
    """``value.get_params()`` (scikit-learn's API) as TOML- and JSON-safe values: numbers,
    strings and booleans as they are, anything else (None, arrays, nested estimators) as its
    ``repr`` (at most 200 characters). Empty for objects without ``get_params``."""
    get_params = getattr(value, "get_params", None)
    if not callable(get_params):
        return {}
    try:
        params = get_params()
    except Exception as exc:  # a third-party estimator's own bug must not stop a registration
        logger.warning("get_params() of %s failed: %s", type(value).__name__, exc)
        return {}
    return {str(key): plain_value(item) for key, item in sorted(dict(params).items())}


def plain_value(value: Any) -> Any:
    """``value`` if TOML and JSON both write it as it is, else its ``repr`` (<= 200 characters)."""
    if isinstance(value, bool | int | str):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def dvc_entries(lock_file: Path) -> tuple[DvcEntry, ...]:
    """The dependencies and outputs of every stage of a ``dvc.lock`` (YAML: needs PyYAML)."""
    import yaml

    document = yaml.safe_load(lock_file.read_text(encoding="utf-8")) or {}
    stages = document.get("stages") if isinstance(document, Mapping) else None
    entries = []
    for stage, body in (stages or {}).items():
        if not isinstance(body, Mapping):
            continue
        kinds: tuple[tuple[Literal["dep", "out"], str], ...] = (("dep", "deps"), ("out", "outs"))
        for kind, key in kinds:
            for item in body.get(key) or ():
                if isinstance(item, Mapping) and "path" in item:
                    size = item.get("size")
                    entries.append(
                        DvcEntry(
                            stage=str(stage),
                            kind=kind,
                            path=str(item["path"]),
                            md5=str(item["md5"]) if item.get("md5") else None,
                            size=size if isinstance(size, int) else None,
                        )
                    )
    return tuple(entries)


# -- lineage -----------------------------------------------------------------------------------


def collect_lineage(
    artifact: Path,
    *,
    estimator: object,
    loader: str | None,
    metrics: Mapping[str, float],
    params: Mapping[str, Any],
    data: list[Path],
    libraries: Iterable[str],
    folder: Path,
    user: str,
    at: datetime,
    where: str,
    model: str,
) -> Lineage:
    """The lineage of ``artifact`` read from this machine (see ``modelflags.register``).

    Raises :class:`RegistryError` for a metric that is not a number or a missing data file.
    """
    for name, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise RegistryError(
                f"{where}: metric {name!r} must be a number, not {value!r}",
                file=where,
                model=model,
                field=f"lineage.metrics.{name}",
            )
    files = []
    for item in data:
        if not item.is_file():
            raise RegistryError(
                f"{where}: data file not found: {item}",
                file=where,
                model=model,
                field="lineage.data",
            )
        digest, size = file_digest(item)
        files.append(DataFile(path=item.as_posix(), sha256=digest, size=size))
    modules = [name.rpartition(".")[0] for name in pickle_globals(artifact)]
    recorded_params: dict[str, Any] = {}
    estimator_name = None
    if estimator is not None:
        estimator_name = estimator_class(estimator)
        modules.append(type(estimator).__module__)
        recorded_params = estimator_params(estimator)
        modules += [_module_of(value) for value in _nested(estimator)]
    recorded_params.update({str(k): plain_value(v) for k, v in params.items()})
    loader_name = loader or _LOADER_BY_SUFFIX.get(artifact.suffix.lower())
    names = libraries_for([m for m in modules if m], loader=loader_name, extra=libraries)
    dvc = _dvc(folder / "dvc.lock")
    return Lineage(
        registered_at=at,
        registered_by=user,
        git=git_state(folder),
        environment=running_environment(names),
        estimator=estimator_name,
        params=recorded_params,
        metrics={str(k): float(v) for k, v in metrics.items()},
        data=tuple(files),
        dvc=dvc,
    )


def _nested(estimator: object) -> list[object]:
    """Objects among ``get_params(deep=True)`` (a pipeline's steps), for their libraries."""
    get_params = getattr(estimator, "get_params", None)
    try:
        values = get_params(deep=True).values() if callable(get_params) else ()
    except Exception:  # a third-party estimator's own bug must not stop a registration
        return []
    return [value for value in values if hasattr(value, "get_params")]


def _module_of(value: object) -> str:
    return type(value).__module__


def _dvc(lock_file: Path) -> tuple[Any, ...]:
    if not lock_file.is_file():
        return ()
    try:
        return dvc_entries(lock_file)
    except ImportError:
        logger.warning(
            "%s: not recorded, reading it needs PyYAML (pip install 'modelflags[yaml]')", lock_file
        )
    except Exception as exc:  # a dvc.lock we cannot read must not stop a registration
        logger.warning("%s: not recorded, cannot read it: %s", lock_file, exc)
    return ()

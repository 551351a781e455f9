"""Which MLflow versions may serve: their pinned digest, where it came from, and the default.

MLflow stores no digest of a version's files, so :class:`VersionTrust` decides each version's
digest from, in order:

1. the local pin file (:mod:`modelflags.registry.mlflow_pins`), which wins: whoever can change
   MLflow cannot change it (a tag that disagrees is logged once);
2. the version's MLflow tag ``modelflags.sha256`` (a value that is not a digest is logged and
   ignored);
3. with ``trust_on_first_use``, the digest of the version's first download, written to the pin
   file (kept in memory when it cannot be written) and logged as a warning.

A version with none of them is listed but never served. :func:`resolve_default` picks the
default version at start: an id, an alias (``"@champion"``), or the newest pinned version; it
must be pinned.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from modelflags.artifacts.folder_cache import FolderFetcher
from modelflags.artifacts.mlflow import folder_source_for
from modelflags.errors import ModelFlagsError, ModelUnavailableError
from modelflags.registry.mlflow import PIN_FILE, PIN_TAG, model_version_uri
from modelflags.registry.mlflow_pins import PinFile
from modelflags.registry.schema import VersionSpec

__all__ = ["VersionTrust", "order", "resolve_default"]

logger = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


class VersionTrust:
    """The pinned digests of one model's MLflow versions (see the module).

    ``model`` is the registry's model name, ``name`` the registered model's in MLflow. Used by
    one thread at a time (the source's); not safe to share between threads.
    """

    def __init__(
        self,
        model: str,
        name: str,
        *,
        pins: PinFile,
        folders: FolderFetcher,
        tracking_uri: str,
    ) -> None:
        self.model = model
        self.name = name
        self.pins = pins
        self._folders = folders
        self._tracking_uri = tracking_uri
        self._first_use: dict[str, str] = {}
        self._warned: set[tuple[str, str]] = set()

    def local(self) -> dict[str, str]:
        """Version -> digest from the pin file (re-read when it changed)."""
        return self.pins.read().get(self.name, {})

    def digest(
        self, version: str, local: str | None, tag: str | None
    ) -> tuple[str | None, str | None]:
        """The pinned digest of ``version`` and where it came from (``"pin file"``, ``"tag"``,
        ``"first use"``), or ``(None, None)``."""
        if tag is not None:
            tag = tag.strip().lower()
            if not _SHA256.fullmatch(tag):
                if self.warn_once("bad tag", version):
                    logger.warning(
                        "model %r version %r: its MLflow tag %s is not a sha256 digest; ignored",
                        self.model,
                        version,
                        PIN_TAG,
                    )
                tag = None
        if local is not None:
            if tag is not None and tag != local and self.warn_once("disagree", version):
                logger.warning(
                    "model %r version %r: the MLflow tag %s says %s, the pin file %s says %s; "
                    "the pin file wins",
                    self.model,
                    version,
                    PIN_TAG,
                    tag,
                    self.pins.path,
                    local,
                )
            return local, "pin file"
        if tag is not None:
            return tag, "tag"
        if version in self._first_use:
            return self._first_use[version], "first use"
        return None, None

    def first_use(self, version: str, location: str) -> str | None:
        """Download ``version`` from ``location``, pin the digest found and say so in the log;
        None (logged) when it cannot be downloaded."""
        uri = model_version_uri(self.name, version)
        try:
            folder = self._folders.pin(
                model=self.model,
                version=version,
                uri=uri,
                location=location,
                source=folder_source_for(location, self._tracking_uri),
            )
        except ModelFlagsError as exc:
            logger.error(
                "model %r version %r: cannot download it to trust it on first use: %s",
                self.model,
                version,
                exc,
            )
            return None
        digest = folder.sha256
        where = str(self.pins.path) if self.pins.path is not None else "memory (no pin file)"
        try:
            self.pins.add(self.name, version, digest)
        except ModelFlagsError as exc:
            logger.error("model %r version %r: cannot write its pin: %s", self.model, version, exc)
            where = "memory (the pin file could not be written)"
        self._first_use[version] = digest
        logger.warning(
            "model %r version %r: trusting %s on first use (trust_on_first_use = true): its "
            "folder digest %s is now pinned in %s",
            self.model,
            version,
            uri,
            digest,
            where,
        )
        return digest

    def warn_once(self, what: str, version: str) -> bool:
        """True the first time ``what`` is said of ``version``."""
        key = (what, version)
        if key in self._warned:
            return False
        self._warned.add(key)
        return True


def resolve_default(
    model: str,
    name: str,
    wanted: str,
    aliases: Mapping[str, str],
    versions: Mapping[str, VersionSpec],
) -> str:
    """The default version of ``model`` (MLflow model ``name``): ``wanted`` (an id, an
    ``@alias``, or empty for the newest pinned version), which must be pinned.

    Raises :class:`~modelflags.errors.ModelUnavailableError` saying what is missing.
    """

    def unavailable(message: str) -> ModelUnavailableError:
        return ModelUnavailableError(f"model {model!r}: {message}", model=model)

    if wanted.startswith("@"):
        version = aliases.get(wanted[1:])
        if version is None:
            known = ", ".join(f"@{alias}" for alias in sorted(aliases)) or "none"
            raise unavailable(
                f"default_version {wanted!r}: MLflow model {name!r} has no alias "
                f"{wanted[1:]!r} (aliases: {known})"
            )
        if version not in versions:
            raise unavailable(
                f"default_version {wanted!r} names version {version}, which is not READY"
            )
    elif wanted:
        version = wanted
        if version not in versions:
            raise unavailable(
                f"default_version {wanted!r} is not a READY version of MLflow model {name!r} "
                f"({', '.join(versions) or 'none'})"
            )
    else:
        pinned = [
            vid
            for vid, spec in versions.items()
            if spec.sha256 is not None and spec.stage != "archived"
        ]
        if not pinned:
            raise unavailable(
                f"no version of MLflow model {name!r} is pinned, so none can be the default: "
                f"run 'modelflags mlflow pin {name} VERSION', or name one in {PIN_FILE}"
            )
        version = max(pinned, key=order)
    if versions[version].sha256 is None:
        raise unavailable(
            f"its default version {version} is not pinned, and an unpinned version never "
            f"serves: run 'modelflags mlflow pin {name} {version}' (sets the tag {PIN_TAG}) "
            f"or add it to {PIN_FILE}"
        )
    return version


def order(version: str) -> tuple[int, int, str]:
    """MLflow's numeric version ids in numeric order (others after them, by text)."""
    return (0, int(version), "") if version.isdigit() else (1, 0, version)

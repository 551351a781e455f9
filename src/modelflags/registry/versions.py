"""A version's life in the registry file: :func:`register` it with its lineage, :func:`promote` it.

Both edit the file through :func:`~modelflags.registry.editing.edit_registry` (locked, validated,
atomic; TOML comments kept). Ids are immutable: registering an id again with the same bytes
changes nothing (except to add examples to a version that has none), with other bytes is
refused. Every refusal is a :class:`~modelflags.errors.RegistryError` (an
:class:`~modelflags.errors.ArtifactNotFoundError` for a missing artifact) raised before anything
is written.
"""

from __future__ import annotations

import getpass
import hashlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from modelflags.errors import ArtifactNotFoundError, RegistryError
from modelflags.registry.capture import collect_lineage, file_digest
from modelflags.registry.contracts import (
    InputContract,
    capture_input,
    input_mismatch,
    plain_contract,
    selects_by_name,
)
from modelflags.registry.editing import (
    Edit,
    add_version,
    edit_registry,
    plain,
    set_stage,
    set_version_field,
)
from modelflags.registry.examples import ExamplesRef, store_examples
from modelflags.registry.messages import suggest
from modelflags.registry.records import STAGES, HistoryEntry, Lineage, Stage
from modelflags.registry.reference import ReferenceStats
from modelflags.registry.replay import Load, record_examples
from modelflags.registry.schema import VersionSpec, check_id

__all__ = ["Load", "Promoted", "Registered", "current_user", "promote", "register"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Registered:
    """The outcome of :func:`register`. ``created`` is False when the same bytes were already
    registered under this id (nothing written but, with ``examples_added``, the examples);
    ``same_bytes_as`` lists the model's other versions with this digest (usually a copy-paste
    mistake); ``examples`` says where the version's examples are. Immutable: safe to share."""

    registry: str
    model: str
    version: str
    uri: str
    sha256: str
    size: int
    stage: Stage
    created: bool
    lineage: Lineage
    same_bytes_as: tuple[str, ...] = ()
    examples: ExamplesRef | None = None
    examples_added: bool = False
    input: InputContract | None = None
    reference: ReferenceStats | None = None


@dataclass(frozen=True)
class Promoted:
    """The outcome of :func:`promote`: ``version`` moved from ``previous`` to ``stage``.
    Immutable: safe to share between threads."""

    registry: str
    model: str
    version: str
    previous: Stage
    stage: Stage
    by: str
    at: datetime
    reason: str


def current_user() -> str:
    """The login name of this process's user (``unknown`` when the system cannot say)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError, ImportError):
        return "unknown"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def register(
    registry: str | os.PathLike[str],
    model: str,
    version: str,
    artifact: str | os.PathLike[str],
    *,
    estimator: object = None,
    reference: object = None,
    uri: str | None = None,
    loader: str | None = None,
    stage: str = "candidate",
    metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    data: Iterable[str | os.PathLike[str]] = (),
    libraries: Iterable[str] = (),
    source_dir: str | os.PathLike[str] | None = None,
    user: str | None = None,
    examples: object = None,
    load: Load | None = None,
    clock: Callable[[], datetime] = _utc_now,
    lock_timeout: float = 10.0,
) -> Registered:
    """Add ``version`` of ``model`` to the registry file, with its sha256, size and lineage.

    The file is created when missing; a new model gets ``default_version = version``. Recorded
    without being asked: the git commit of ``source_dir`` (default: the working directory) and
    whether tracked files were changed, Python's version and those of the libraries the artifact
    needs (read from the pickle's opcodes and, with ``estimator``, from the object), the
    estimator's class and ``get_params()``, the sha256 and size of each ``data`` file, the
    entries of a ``dvc.lock`` in ``source_dir`` (with PyYAML), ``metrics``, ``params``, the time
    and the ``user`` (default: the login name). ``libraries`` adds distributions to record;
    ``uri`` is written instead of the artifact's path (for an artifact to be uploaded: its
    digest is still computed from the local file).

    ``examples`` (a ``.npy``, ``.csv`` or ``.parquet`` file, a DataFrame or an array: a small
    sample of inputs) are run through the version, ``estimator`` when given, else the artifact
    loaded with ``load`` (:func:`modelflags.register` passes the package's loaders); the inputs
    and what ``predict`` (and ``predict_proba``) answered are stored as
    ``examples/<sha256>.npz`` beside the registry and referenced from the version (see
    :mod:`modelflags.registry.examples`). Given for a version already registered with the same
    bytes and no examples, they are added to it.

    With ``estimator``, the input it was fitted on (``feature_names_in_``, ``n_features_in_``)
    is recorded as the version's ``input``; a new model declares the same input. With
    ``reference`` (the training sample: a DataFrame, a mapping of columns or a 2-D array),
    statistics of each feature are recorded for drift watching
    (:mod:`modelflags.registry.reference`).

    Raises :class:`ArtifactNotFoundError` for a missing artifact and :class:`RegistryError` for
    an invalid name, id or stage, an id already registered with other bytes, a missing data file,
    examples that cannot be read or do not fit the model (or differ from those the version
    has), a reference sample that does not fit the estimator, a production stage that needs an
    approver, a locked or concurrently changed file.
    """
    where = os.fspath(registry)
    _check_name(model, "model name", where, model=None)
    _check_name(version, "version id", where, model=model)
    chosen = _check_stage(stage, where, model)
    path = Path(artifact)
    if not path.is_file():
        raise ArtifactNotFoundError(
            f"{where}: model {model!r} version {version!r}: artifact file not found: {path}",
            model=model,
            version=version,
            uri=str(path),
        )
    sha256, size = file_digest(path)
    folder = Path(source_dir) if source_dir is not None else Path.cwd()
    who = user or current_user()
    at = clock().astimezone(UTC).replace(microsecond=0)
    lineage = collect_lineage(
        path,
        estimator=estimator,
        loader=loader,
        metrics=metrics or {},
        params=params or {},
        data=[Path(item) for item in data],
        libraries=libraries,
        folder=folder,
        user=who,
        at=at,
        where=where,
        model=model,
    )
    contract, stats = capture_input(estimator, reference, where=where, model=model, version=version)
    sample = None
    if examples is not None:
        being_registered = VersionSpec(
            uri=str(path.absolute()), sha256=sha256, size=size, loader=loader
        )
        sample = record_examples(
            examples, estimator=estimator, load=load, spec=being_registered, where=where,
            model=model, version=version,
        )  # fmt: skip
    written_uri = uri if uri is not None else _relative_uri(path, Path(where))
    first = HistoryEntry(stage=chosen, at=at, by=who, reason="registered")
    entry: dict[str, Any] = {"uri": written_uri, "sha256": sha256, "size": size}
    if loader is not None:
        entry["loader"] = loader
    entry["stage"] = chosen
    if contract is not None:
        entry["input"] = plain(plain_contract(contract))
    if stats is not None:
        entry["reference"] = plain(stats.model_dump(exclude_none=True))
    entry["lineage"] = plain(lineage.model_dump(exclude_none=True))
    entry["history"] = [plain(first.model_dump(exclude_none=True))]
    written: list[Path] = []

    def keep_examples(sample: tuple[bytes, int]) -> tuple[ExamplesRef, dict[str, Any]]:
        data, rows = sample
        ref_uri, digest, file, created = store_examples(data, Path(where))
        if created:
            written.append(file)
        ref = {"uri": ref_uri, "sha256": digest, "rows": rows}
        base = Path(where).absolute().parent
        return ExamplesRef.model_validate(ref, context={"base_dir": base}), ref

    def change(edit: Edit) -> Registered:
        spec = edit.registry.models.get(model)
        known_versions = spec.versions if spec is not None else {}
        same = tuple(
            other
            for other, known in known_versions.items()
            if known.sha256 == sha256 and other != version
        )
        outcome = Registered(
            registry=where,
            model=model,
            version=version,
            uri=written_uri,
            sha256=sha256,
            size=size,
            stage=chosen,
            created=True,
            lineage=lineage,
            same_bytes_as=same,
            input=contract,
            reference=stats,
        )
        if version in known_versions:
            known = known_versions[version]
            if known.sha256 == sha256:
                unchanged = replace(
                    outcome,
                    uri=known.uri,
                    stage=known.stage,
                    created=False,
                    lineage=known.lineage or lineage,
                    examples=known.examples,
                    input=known.input,
                    reference=known.reference,
                )
                if sample is None or _same_examples(known.examples, sample[0]):
                    edit.changed = False
                    return unchanged
                if known.examples is not None:
                    raise RegistryError(
                        f"{where}: model {model!r} version {version!r} already has examples "
                        f"({known.examples.uri}, sha256 {known.examples.sha256}); they record "
                        "what the version answered when they were added and are not replaced: "
                        "nothing was written",
                        file=where,
                        model=model,
                        field=f"versions.{version}.examples",
                    )
                ref, plain_ref = keep_examples(sample)
                set_version_field(edit, model, version, "examples", plain_ref)
                return replace(unchanged, examples=ref, examples_added=True)
            raise RegistryError(
                f"{where}: model {model!r} version {version!r} is already registered with "
                f"{'sha256 ' + known.sha256 if known.sha256 else 'no sha256'}; a version id "
                f"always names the same bytes: register these ({sha256}) under a new id",
                file=where,
                model=model,
                field=f"versions.{version}",
            )
        if chosen == "production" and spec is not None and spec.require_approval:
            raise RegistryError(
                f"{where}: model {model!r} requires an approver for production: register "
                f"{version!r} as a candidate, then promote it with --by someone other than {who}",
                file=where,
                model=model,
                field=f"versions.{version}.stage",
            )
        if sample is not None:
            ref, entry["examples"] = keep_examples(sample)
            outcome = replace(outcome, examples=ref)
        add_version(
            edit,
            model,
            version,
            entry,
            new_model=spec is None,
            model_input=plain(plain_contract(contract)) if spec is None and contract else None,
        )
        if spec is not None and spec.input is not None:
            _warn_about_input(where, model, version, spec.input, contract, stats, estimator)
        if same:
            logger.warning(
                "%s: model %r version %r has the same bytes as %s",
                where,
                model,
                version,
                ", ".join(same),
            )
        return outcome

    try:
        return edit_registry(registry, change, create=True, lock_timeout=lock_timeout)
    except BaseException:
        for file in written:  # examples stored for an edit that was not written
            file.unlink(missing_ok=True)
        raise


def _same_examples(known: ExamplesRef | None, data: bytes) -> bool:
    return known is not None and known.sha256 == hashlib.sha256(data).hexdigest()


def promote(
    registry: str | os.PathLike[str],
    model: str,
    version: str,
    *,
    to: str,
    by: str | None = None,
    reason: str = "",
    clock: Callable[[], datetime] = _utc_now,
    lock_timeout: float = 10.0,
) -> Promoted:
    """Move ``version`` of ``model`` to stage ``to``, recording who (``by``, default: the login
    name), when and why in the version's ``history``.

    When the model has ``require_approval = true``, a move to ``production`` needs ``by``, a
    person other than the one who registered the version. Raises :class:`RegistryError` for an
    unknown model, version or stage, a version already in that stage, a missing or
    self-approval, a locked or concurrently changed file; nothing is written then.
    """
    where = os.fspath(registry)
    target = _check_stage(to, where, model)

    def change(edit: Edit) -> Promoted:
        spec = edit.registry.models.get(model)
        if spec is None:
            known = ", ".join(sorted(edit.registry.models)) or "none"
            raise RegistryError(
                f"{where}: no model {model!r} (known: {known})", file=where, model=model
            )
        current = spec.versions.get(version)
        field = f"versions.{version}.stage"
        if current is None:
            raise RegistryError(
                f"{where}: model {model!r} has no version {version!r} "
                f"(known: {', '.join(spec.versions)})",
                file=where,
                model=model,
                field=f"versions.{version}",
            )
        if current.stage == target:
            raise RegistryError(
                f"{where}: model {model!r} version {version!r} is already {target}",
                file=where,
                model=model,
                field=field,
            )
        approver = by
        if target == "production" and spec.require_approval:
            registrant = current.lineage.registered_by if current.lineage else None
            if not approver:
                raise RegistryError(
                    f"{where}: model {model!r} requires an approver for production: name one "
                    "with --by (someone other than the person who registered the version)",
                    file=where,
                    model=model,
                    field=field,
                )
            if registrant is not None and approver == registrant:
                raise RegistryError(
                    f"{where}: model {model!r} version {version!r} was registered by "
                    f"{registrant}, who cannot approve it for production too",
                    file=where,
                    model=model,
                    field=field,
                )
        who = approver or current_user()
        at = clock().astimezone(UTC).replace(microsecond=0)
        record = HistoryEntry(stage=target, previous=current.stage, at=at, by=who, reason=reason)
        set_stage(edit, model, version, target, plain(record.model_dump(exclude_none=True)))
        return Promoted(where, model, version, current.stage, target, who, at, reason)

    return edit_registry(registry, change, lock_timeout=lock_timeout)


# -- checks ------------------------------------------------------------------------------------


def _warn_about_input(
    where: str,
    model: str,
    version: str,
    declared: InputContract,
    contract: InputContract | None,
    stats: ReferenceStats | None,
    estimator: object,
) -> None:
    """Say at registration what serving will refuse or cannot watch (nothing is refused here:
    a version trained on an older feature set is still a version)."""
    if contract is not None:
        problem = input_mismatch(declared, contract, by_name=selects_by_name(estimator))
        if problem:
            logger.warning(
                "%s: model %r version %r does not take the model's declared input (%s): it will "
                "be refused at load until the declared input changes",
                where,
                model,
                version,
                problem,
            )
    if stats is not None and declared.features is not None:
        unwatched = [name for name in declared.features if name not in stats.features]
        if unwatched:
            logger.warning(
                "%s: model %r version %r: the reference sample lacks declared features %s; "
                "their drift is not watched for this version",
                where,
                model,
                version,
                ", ".join(repr(name) for name in unwatched),
            )


def _check_name(value: str, what: str, where: str, *, model: str | None) -> None:
    try:
        check_id(value, what)
    except ValueError as exc:
        raise RegistryError(
            f"{where}: {exc}", file=where, model=model, field="versions" if model else None
        ) from None


def _check_stage(stage: str, where: str, model: str) -> Stage:
    for known in STAGES:
        if stage == known:
            return known
    guess = suggest(stage, STAGES)
    hint = f" (did you mean {guess!r}?)" if guess else ""
    raise RegistryError(
        f"{where}: unknown stage {stage!r}{hint}: use {', '.join(STAGES)}",
        file=where,
        model=model,
        field="stage",
    )


def _relative_uri(artifact: Path, registry: Path) -> str:
    """The artifact's path relative to the registry's folder when inside it, else absolute."""
    folder = registry.parent.resolve()
    resolved = artifact.resolve()
    try:
        return resolved.relative_to(folder).as_posix()
    except ValueError:
        return resolved.as_posix()

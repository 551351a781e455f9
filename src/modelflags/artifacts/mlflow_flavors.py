"""Loading an MLflow model folder: its ``MLmodel`` read here, its flavor deserialized here.

The loader ``mlflow`` (registered by default) takes the
:class:`~modelflags.artifacts.folders.VerifiedFolder` of a model version, already checked
against its pinned digest, and reads everything from those verified bytes:

- ``MLmodel`` (YAML, parsed with ``yaml.safe_load``) says which flavors the folder has;
- **sklearn** flavor: the file ``pickled_model`` names is deserialized by its
  ``serialization_format``: ``skops`` in one pass of ``skops.io.load``, trusting skops' defaults
  plus the types the ``MLmodel`` records (``skops_trusted_types``: part of the pinned folder, so
  as trusted as its bytes) and those the registry's ``mlflow`` table lists; ``pickle`` with
  :mod:`pickle`; ``cloudpickle`` with ``cloudpickle``. The result is the scikit-learn estimator
  itself, so ``predict_proba`` and the rest are there;
- anything else with a **python_function** flavor (or an sklearn flavor that ships its own
  ``code``): MLflow's ``mlflow.pyfunc.load_model`` on a private copy of the verified files,
  which lives as long as the loaded model (MLflow's loader refuses to deserialize unless
  ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=true``; that is MLflow's switch and left to you).

pickle and cloudpickle run code from the file while loading: the pinned digest is what makes
that acceptable. ``PyYAML`` and, for pyfunc, ``mlflow`` come with the ``mlflow`` extra.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from modelflags.artifacts.folders import VerifiedFolder, check_relative_path
from modelflags.artifacts.verified import VerifiedArtifact

__all__ = ["MLMODEL", "load_mlflow_folder", "read_mlmodel"]

logger = logging.getLogger(__name__)

MLMODEL = "MLmodel"
"""The file of an MLflow model folder that describes it."""

_FORMATS = ("pickle", "cloudpickle", "skops")


def read_mlmodel(data: bytes, where: str) -> dict[str, Any]:
    """Parse the text of an ``MLmodel`` file; ``ValueError`` naming ``where`` when it is not a
    YAML mapping."""
    try:
        import yaml
    except ImportError as exc:
        raise ImportError(
            f"reading {where} needs PyYAML: pip install 'modelflags[mlflow]'"
        ) from exc
    try:
        parsed = yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{where} is not valid YAML: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ValueError(f"{where} is not a YAML mapping")
    return parsed


def load_mlflow_folder(
    folder: VerifiedFolder | VerifiedArtifact, trusted: Sequence[str] = ()
) -> Any:
    """Load an MLflow model folder's sklearn flavor, else its pyfunc flavor (see the module).

    ``trusted`` adds skops type names to those the ``MLmodel`` records. Raises ``ValueError``
    when the folder has no flavor this can load, ``ImportError`` for a missing library.
    """
    if not isinstance(folder, VerifiedFolder):
        raise ValueError(
            f"{folder.uri}: the 'mlflow' loader loads MLflow model folders, not single files"
        )
    where = f"{folder.uri}/{MLMODEL}"
    mlmodel = read_mlmodel(folder.read_bytes(MLMODEL), where)
    flavors = mlmodel.get("flavors")
    if not isinstance(flavors, Mapping):
        raise ValueError(f"{where} has no flavors")
    sklearn = flavors.get("sklearn")
    if isinstance(sklearn, Mapping) and not sklearn.get("code"):
        return _load_sklearn(folder, sklearn, [*folder.trusted_types, *trusted], where)
    if "python_function" in flavors:
        return _load_pyfunc(folder)
    raise ValueError(
        f"{where} has flavors {', '.join(sorted(map(str, flavors))) or 'none'}; modelflags "
        "loads the sklearn flavor, and any model with a python_function flavor through MLflow"
    )


def _load_sklearn(
    folder: VerifiedFolder, flavor: Mapping[str, Any], trusted: Sequence[str], where: str
) -> Any:
    path = flavor.get("pickled_model")
    if not isinstance(path, str) or check_relative_path(path) is not None:
        raise ValueError(f"{where}: the sklearn flavor names no model file ({path!r})")
    serialization = flavor.get("serialization_format") or "pickle"
    if serialization not in _FORMATS:
        raise ValueError(
            f"{where}: unknown serialization_format {serialization!r} (known: "
            f"{', '.join(_FORMATS)})"
        )
    artifact = folder.file(path)
    if serialization == "skops":
        recorded = flavor.get("skops_trusted_types") or ()
        if not isinstance(recorded, list | tuple):
            raise ValueError(f"{where}: skops_trusted_types is not a list")
        return _load_skops(artifact, sorted({*map(str, recorded), *trusted}))
    if serialization == "cloudpickle":
        try:
            import cloudpickle
        except ImportError as exc:
            raise ImportError(
                f"{artifact.uri} was saved with cloudpickle: pip install cloudpickle"
            ) from exc
        return cloudpickle.load(artifact.consume())
    return pickle.load(artifact.consume())


def _load_skops(artifact: VerifiedArtifact, allowed: list[str]) -> Any:
    """One pass of skops over the verified bytes, trusting skops' defaults and ``allowed``; a
    file that needs more is refused naming the types (found only then: the scan costs about half
    a load)."""
    try:
        import skops.io as sio
        from skops.io.exceptions import UntrustedTypesFoundException
    except ImportError as exc:
        raise ImportError(f"loading {artifact.uri} needs skops: pip install skops") from exc
    try:
        return sio.load(artifact.open(), trusted=allowed)
    except UntrustedTypesFoundException as exc:
        found = sorted(set(map(str, sio.get_untrusted_types(file=artifact.open()))) - set(allowed))
        raise ValueError(
            f"{artifact.uri}: refusing to load types that are not trusted: "
            f"{', '.join(found) or exc}. If you trust this version, list them in the model's "
            "mlflow table: skops_trusted_types = [...]"
        ) from exc


def _load_pyfunc(folder: VerifiedFolder) -> Any:
    from modelflags.artifacts.mlflow import mlflow_module

    pyfunc = mlflow_module("mlflow.pyfunc", f"loading the pyfunc model {folder.uri}")
    copy = folder.detached_copy()
    try:
        model = pyfunc.load_model(str(copy))
    except BaseException:
        shutil.rmtree(copy, ignore_errors=True)
        raise
    try:
        weakref.finalize(model, shutil.rmtree, copy, True)
    except TypeError:  # not weakly referable: the copy stays until the process ends
        logger.debug("%s: its private copy %s stays until the process ends", folder.uri, copy)
    return model

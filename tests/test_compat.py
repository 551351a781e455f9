"""Environment compatibility: a recorded environment judged against the running one, by policy."""

from __future__ import annotations

import pickle
import warnings
from typing import Any

import numpy as np
import pytest
import sklearn
from sklearn.exceptions import InconsistentVersionWarning
from sklearn.linear_model import LogisticRegression

from modelflags import Registry, RegistryError
from modelflags.registry import (
    Environment,
    check_compatibility,
    check_sklearn_warning,
    running_environment,
)

RECORDED = Environment(
    python="3.11.7", libraries={"scikit-learn": "1.5.2", "numpy": "2.1.3", "joblib": "1.4.2"}
)


def running(**libraries: str) -> Environment:
    versions = {"scikit-learn": "1.5.2", "numpy": "2.1.3", "joblib": "1.4.2"}
    versions.update({name.replace("_", "-"): version for name, version in libraries.items()})
    return Environment(python="3.11.9", libraries=versions)


def test_the_same_versions_are_ok_and_say_so() -> None:
    """Identical libraries (a Python patch apart) are compatible; the message lists them."""
    verdict = check_compatibility(RECORDED, running())
    assert (verdict.action, verdict.differences) == ("ok", ())
    assert "same versions as at registration" in verdict.message
    assert "scikit-learn 1.5.2" in verdict.message


@pytest.mark.parametrize(
    ("here", "action", "words"),
    [
        ({"scikit_learn": "1.6.1"}, "refuse", "scikit-learn 1.5.2 at registration, 1.6.1 here"),
        ({"scikit_learn": "2.0.0"}, "refuse", "(another major version)"),
        ({"scikit_learn": "1.5.1"}, "warn", "(another patch version)"),
        ({"scikit_learn": "1.5.2rc1"}, "warn", "(another patch version)"),
        ({"numpy": "2.2.0"}, "warn", "numpy 2.1.3 at registration, 2.2.0 here"),
        ({"numpy": "1.26.4"}, "warn", "(another major version)"),
    ],
)
def test_the_default_policy_refuses_another_sklearn_minor_and_warns_on_the_rest(
    here: dict[str, str], action: str, words: str
) -> None:
    """Default: scikit-learn major/minor -> refuse; its patch, other libraries -> warn."""
    verdict = check_compatibility(RECORDED, running(**here), "default")
    assert verdict.action == action
    assert words in verdict.message
    assert "compat = 'default'" in verdict.message


def test_a_recorded_library_that_is_missing_is_refused() -> None:
    """A pickle needing joblib cannot load without it: refused, saying it is not installed."""
    here = Environment(libraries={"scikit-learn": "1.5.2", "numpy": "2.1.3"})
    verdict = check_compatibility(RECORDED, here)
    assert verdict.refused
    assert "joblib 1.4.2 at registration, not installed here" in verdict.message


@pytest.mark.parametrize(
    ("policy", "numpy_patch", "sklearn_minor"),
    [("refuse", "refuse", "refuse"), ("warn", "warn", "warn"), ("ignore", "ok", "ok")],
)
def test_explicit_policies_apply_to_every_difference(
    policy: str, numpy_patch: str, sklearn_minor: str
) -> None:
    """refuse, warn and ignore decide every difference alike."""
    chosen: Any = policy
    assert check_compatibility(RECORDED, running(numpy="2.1.4"), chosen).action == numpy_patch
    verdict = check_compatibility(RECORDED, running(scikit_learn="1.7.0"), chosen)
    assert verdict.action == sklearn_minor
    assert "scikit-learn 1.5.2 at registration, 1.7.0 here" in verdict.message


def test_another_python_minor_version_is_a_warning() -> None:
    """Python 3.11 -> 3.12 warns by default and is refused under ``refuse``."""
    here = Environment(python="3.12.1", libraries=dict(RECORDED.libraries))
    assert check_compatibility(RECORDED, here).action == "warn"
    assert check_compatibility(RECORDED, here, "refuse").action == "refuse"
    message = check_compatibility(RECORDED, here).message
    assert "python 3.11.7 at registration, 3.12.1 here" in message


def test_nothing_recorded_is_ok_and_not_checked() -> None:
    """A version written by hand has no environment: nothing compared, and the verdict says so."""
    for recorded in (None, Environment(), {}):
        verdict = check_compatibility(recorded, running())
        assert verdict.action == "ok"
        assert "no environment recorded" in verdict.message


def test_mappings_are_accepted_and_names_are_canonical() -> None:
    """Plain mappings work, and ``Scikit_Learn`` is ``scikit-learn``."""
    verdict = check_compatibility(
        {"libraries": {"Scikit_Learn": "1.4.0"}}, {"libraries": {"scikit-learn": "1.5.0"}}
    )
    assert verdict.refused
    assert "scikit-learn 1.4.0" in verdict.message


def test_an_unknown_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown compat policy 'strict'"):
        check_compatibility(RECORDED, running(), "strict")  # type: ignore[arg-type]


def test_running_environment_reads_the_installed_versions() -> None:
    """The running environment has the real versions; libraries not installed are left out."""
    here = running_environment(["scikit-learn", "numpy", "surely-not-installed-here"])
    assert here.libraries == {"scikit-learn": sklearn.__version__, "numpy": np.__version__}
    assert here.python is not None and here.platform is not None


def test_sklearn_inconsistent_version_warning_becomes_the_same_verdict() -> None:
    """A model pickled by a recorded "other" scikit-learn warns on load; the warning is judged."""
    other = "0.0.1".ljust(len(sklearn.__version__), "0")  # same length: the pickle stays valid
    data = pickle.dumps(LogisticRegression()).replace(sklearn.__version__.encode(), other.encode())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pickle.loads(data)
    (warning,) = [w.message for w in caught if isinstance(w.message, InconsistentVersionWarning)]
    verdict = check_sklearn_warning(warning)
    assert verdict is not None and verdict.refused
    assert f"scikit-learn {other} at registration, {sklearn.__version__} here" in verdict.message
    assert check_sklearn_warning(UserWarning("other")) is None


def test_compat_and_require_approval_are_model_fields() -> None:
    """``compat`` defaults to "default"; an unknown value is a RegistryError naming the field."""
    model = {"default_version": "v1", "versions": {"v1": {"uri": "a"}}}
    registry = Registry.from_mapping({"models": {"m": model}})
    assert registry.models["m"].compat == "default"
    assert registry.models["m"].require_approval is False
    with pytest.raises(RegistryError, match="field 'compat'"):
        Registry.from_mapping({"models": {"m": {**model, "compat": "strict"}}}, source="r.toml")

"""The handle and its vocabulary: serving reasons, what the flag said, events by type, and a
handle that scikit-learn treats as the model it serves."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import get_scorer
from sklearn.utils.validation import check_is_fitted

import modelflags
from modelflags import (
    Event,
    FallbackServed,
    ModelFlags,
    ServedModel,
    ServingReason,
    VersionLoaded,
    VersionQuarantined,
)
from modelflags.telemetry import events as events_module

from models import Broken, Constant
from support import Workspace, wait_until

X = np.zeros((3, 2))


# -- events by type ----------------------------------------------------------------------------


def test_a_listener_subscribed_to_some_types_receives_only_those(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """``add_listener(fn, types=(FallbackServed,))`` sees the fallback, not the loads around it."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"not a pickle", suffix=".pkl")
    set_flags(m="v2")
    only_fallbacks: list[Event] = []
    everything: list[Event] = []
    with ModelFlags(workspace.write()) as flags:
        flags.add_listener(only_fallbacks.append, types=(FallbackServed,))
        flags.add_listener(everything.append)
        assert flags.get_model("m", "u1").version == "v1"
        assert flags.flush(5)
    assert {type(event) for event in everything} >= {
        VersionLoaded,
        FallbackServed,
        VersionQuarantined,
    }
    assert [type(event) for event in only_fallbacks] == [FallbackServed]
    assert only_fallbacks[0].requested == "v2" and only_fallbacks[0].served == "v1"


@pytest.mark.parametrize("kind", [str, dict, Exception])
def test_subscribing_to_a_type_that_is_not_an_event_raises_type_error(
    workspace: Workspace, kind: type
) -> None:
    """A type outside the event union is refused at once, naming it."""
    workspace.add("m", "v1", Constant(1))
    with ModelFlags(workspace.write()) as flags, pytest.raises(TypeError, match=kind.__name__):
        flags.add_listener(lambda event: None, types=(FallbackServed, kind))


def test_the_event_names_of_earlier_releases_are_the_same_classes() -> None:
    """Old names are aliases, so ``isinstance`` checks written against them keep working."""
    pairs = {
        "Loaded": "VersionLoaded",
        "LoadFailed": "VersionLoadFailed",
        "FellBack": "FallbackServed",
        "Quarantined": "VersionQuarantined",
        "BecameLKG": "LastKnownGoodChanged",
        "Prewarmed": "PrewarmCompleted",
        "ShadowResult": "ShadowCompared",
        "Breach": "GuardrailBreached",
        "RolledBack": "VersionRolledBack",
        "GuardrailAlert": "GuardrailAlerted",
    }
    for old, new in pairs.items():
        assert getattr(modelflags, old) is getattr(events_module, new), old
        assert getattr(modelflags, old) in events_module.EVENT_TYPES


def test_a_listener_subscribed_by_an_old_name_receives_the_event(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """``types=(FellBack,)`` is the same subscription as ``types=(FallbackServed,)``."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"not a pickle", suffix=".pkl")
    set_flags(m="v2")
    seen: list[Event] = []
    with ModelFlags(workspace.write()) as flags:
        flags.add_listener(seen.append, types=(modelflags.FellBack,))
        flags.get_model("m", "u1")
        assert flags.flush(5)
    assert [type(event) for event in seen] == [FallbackServed]


# -- serving reasons and what the flag said ----------------------------------------------------


def test_serving_reasons_are_a_str_enum_of_openfeature_and_modelflags_reasons() -> None:
    """Each reason equals its string; a reason a provider invents is UNKNOWN."""
    assert {reason.value for reason in ServingReason} == {
        "STATIC",
        "DEFAULT",
        "TARGETING_MATCH",
        "SPLIT",
        "CACHED",
        "DISABLED",
        "STALE",
        "UNKNOWN",
        "ERROR",
        "OVERRIDE",
        "FALLBACK",
        "ROLLED_BACK",
        "PREWARMING",
        "POLICY",
    }
    assert ServingReason.FALLBACK == "FALLBACK" and str(ServingReason.FALLBACK) == "FALLBACK"
    assert ServingReason.of("TARGETING_MATCH") is ServingReason.TARGETING_MATCH
    assert ServingReason.of("VENDOR_SPECIFIC") is ServingReason.UNKNOWN
    assert ServingReason.of(None) is ServingReason.UNKNOWN
    assert modelflags.FALLBACK is ServingReason.FALLBACK
    assert modelflags.OVERRIDE is ServingReason.OVERRIDE


FLAG_FILE = {
    "metadata": {"team": "ml"},
    "flags": {
        "m": {
            "state": "ENABLED",
            "variants": {"v1": "v1", "v2": "v2", "v9": "v9"},
            "defaultVariant": "v1",
            "metadata": {"owner": "ranking"},
            "targeting": {
                "if": [
                    {"==": [{"var": "plan"}, "beta"]},
                    "v2",
                    {"if": [{"==": [{"var": "plan"}, "typo"]}, "v9", None]},
                ]
            },
        }
    },
}


@pytest.fixture
def flagd_file(tmp_path: Path) -> Iterator[Path]:
    """flagd's provider in FILE mode on a real flag file (targeting on ``plan``)."""
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(FLAG_FILE))
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE, offline_flag_source_path=str(path), deadline_ms=50
        )
    )
    yield path
    api.shutdown()


def test_a_handle_served_as_flagged_carries_the_flags_reason_and_metadata(
    workspace: Workspace, flagd_file: Path
) -> None:
    """flagd's TARGETING_MATCH and flag metadata reach the handle."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    with ModelFlags(workspace.write()) as flags:
        for _ in range(2):  # the load path, then the cached fast path
            handle = flags.get_model("m", {"id": "u1", "plan": "beta"})
            assert (handle.version, handle.reason, handle.fell_back) == (
                "v2",
                ServingReason.TARGETING_MATCH,
                False,
            )
            assert handle.flag_reason == "TARGETING_MATCH"
            assert handle.flag_error_code is None
            assert dict(handle.flag_metadata) == {"team": "ml", "owner": "ranking"}


def test_a_fallback_after_a_load_failure_keeps_what_the_flag_said(
    workspace: Workspace, flagd_file: Path
) -> None:
    """The handle says FALLBACK, and still says the flag matched its targeting, with metadata."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", raw=b"not a pickle", suffix=".pkl")
    with ModelFlags(workspace.write()) as flags:
        handle = flags.get_model("m", {"id": "u1", "plan": "beta"})
    assert (handle.version, handle.requested_version, handle.reason) == (
        "v1",
        "v2",
        ServingReason.FALLBACK,
    )
    assert handle.flag_reason == "TARGETING_MATCH"
    assert handle.flag_error_code is None
    assert dict(handle.flag_metadata) == {"team": "ml", "owner": "ranking"}


def test_an_unknown_version_keeps_the_flags_reason_and_metadata(
    workspace: Workspace, flagd_file: Path
) -> None:
    """A variant naming no registered version serves the LKG with reason ERROR; the flag's own
    reason and metadata stay on the handle."""
    workspace.add("m", "v1", Constant(1))
    with ModelFlags(workspace.write()) as flags:
        handle = flags.get_model("m", {"id": "u1", "plan": "typo"})
    assert (handle.version, handle.requested_version, handle.fell_back) == ("v1", "v9", True)
    assert handle.reason == ServingReason.ERROR
    assert handle.flag_reason == "TARGETING_MATCH"
    assert dict(handle.flag_metadata) == {"team": "ml", "owner": "ranking"}


def test_a_missing_flag_keeps_the_flags_error_code(workspace: Workspace, flagd_file: Path) -> None:
    """A flag the provider does not have: reason ERROR, error code FLAG_NOT_FOUND on the handle."""
    workspace.add("m", "v1", Constant(1))
    workspace.set("m", flag="absent")
    with ModelFlags(workspace.write()) as flags:
        handle = flags.get_model("m", "u1")
    assert (handle.version, handle.reason) == ("v1", ServingReason.ERROR)
    assert handle.flag_reason == "ERROR"
    assert handle.flag_error_code == "FLAG_NOT_FOUND"


# -- scikit-learn's view of a handle -----------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.RandomState(3)
    features = rng.rand(120, 3)
    return features, (features[:, 0] > 0.5).astype(int)


@pytest.fixture
def classifier_flags(
    workspace: Workspace, set_flags: Callable[..., None], data: tuple[np.ndarray, np.ndarray]
) -> Iterator[ModelFlags]:
    features, labels = data
    workspace.add("clf", "v1", LogisticRegression(C=0.5).fit(features, labels))
    workspace.add("reg", "v1", LinearRegression().fit(features, labels.astype(float)))
    workspace.add("unfitted", "v1", LogisticRegression())
    set_flags(clf="v1", reg="v1", unfitted="v1")
    with ModelFlags(workspace.write()) as flags:
        yield flags


def test_scikit_learn_sees_a_handles_estimator_type(classifier_flags: ModelFlags) -> None:
    """``is_classifier`` and ``is_regressor`` answer for the served model."""
    classifier = classifier_flags.get_model("clf", "u1")
    regressor = classifier_flags.get_model("reg", "u1")
    assert isinstance(classifier, ServedModel)
    assert is_classifier(classifier) and not is_regressor(classifier)
    assert is_regressor(regressor) and not is_classifier(regressor)


def test_check_is_fitted_sees_whether_the_served_model_is_fitted(
    classifier_flags: ModelFlags,
) -> None:
    """A fitted served model passes ``check_is_fitted``; an unfitted one raises NotFittedError."""
    check_is_fitted(classifier_flags.get_model("clf", "u1"))
    with pytest.raises(NotFittedError):
        check_is_fitted(classifier_flags.get_model("unfitted", "u1"))


def test_a_scorer_scores_a_handle_as_it_scores_the_model(
    classifier_flags: ModelFlags, data: tuple[np.ndarray, np.ndarray]
) -> None:
    """``get_scorer("accuracy")``, ``"roc_auc"`` and ``"neg_log_loss"`` give the model's scores."""
    features, labels = data
    handle = classifier_flags.get_model("clf", "u1")
    for name in ("accuracy", "roc_auc", "neg_log_loss"):
        scorer = get_scorer(name)
        assert scorer(handle, features, labels) == pytest.approx(
            scorer(handle.model, features, labels)
        ), name


def test_clone_of_a_handle_is_an_unfitted_copy_of_the_served_model(
    classifier_flags: ModelFlags,
) -> None:
    """``clone(handle)`` is a new estimator of the same class and parameters, not fitted."""
    handle = classifier_flags.get_model("clf", "u1")
    copy = clone(handle)
    assert type(copy) is LogisticRegression and copy is not handle.model
    assert copy.get_params() == handle.model.get_params()
    with pytest.raises(NotFittedError):
        check_is_fitted(copy)


# -- async inference ---------------------------------------------------------------------------


class ThreadNoting(Constant):
    """Records the thread each predict ran on."""

    threads: list[int] = []  # noqa: RUF012 - shared by the test's instances on purpose

    def predict(self, X: Any) -> np.ndarray:
        ThreadNoting.threads.append(threading.get_ident())
        return super().predict(X)


def test_apredict_runs_inference_off_the_event_loop(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """``await handle.apredict(X)`` runs on a worker thread and returns the model's answer."""
    workspace.add("m", "v1", ThreadNoting(1))
    set_flags(m="v1")
    ThreadNoting.threads = []

    async def scenario(flags: ModelFlags) -> tuple[int, Any]:
        handle = await flags.get_model_async("m", "u1")
        return threading.get_ident(), await handle.apredict(X)

    with ModelFlags(workspace.write()) as flags:
        loop_thread, result = asyncio.run(asyncio.wait_for(scenario(flags), 10))
    assert result.tolist() == [1, 1, 1]
    assert len(ThreadNoting.threads) == 1 and ThreadNoting.threads[0] != loop_thread


def test_apredict_falls_back_like_predict(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """A version that raises under ``apredict`` is answered by the LKG and quarantined."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Broken(2))
    set_flags(m="v2")
    seen: list[Event] = []

    async def scenario(flags: ModelFlags) -> tuple[ServedModel, Any, Any]:
        handle = await flags.get_model_async("m", "u1")
        return handle, await handle.apredict(X), await handle.apredict_proba(X)

    with ModelFlags(workspace.write(), listeners=[seen.append]) as flags:
        handle, labels, probabilities = asyncio.run(asyncio.wait_for(scenario(flags), 10))
        assert handle.version == "v2"
        assert labels.tolist() == [1, 1, 1]
        assert probabilities.tolist() == [[0.0, 1.0]] * 3
        assert [q.version for q in flags.status()["m"].quarantined] == ["v2"]
        wait_until(lambda: any(isinstance(event, FallbackServed) for event in seen), 5, "fallback")
    fallback = next(event for event in seen if isinstance(event, FallbackServed))
    assert (fallback.stage, fallback.method) == ("inference", "predict")


def test_a_mutating_method_cannot_be_run_off_loop_with_fallback(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """``ainvoke("fit", ...)`` is refused: methods that change the model never fall back."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m="v1")
    with ModelFlags(workspace.write()) as flags:
        handle = flags.get_model("m", "u1")
        with pytest.raises(ValueError, match="changes the model"):
            asyncio.run(handle.ainvoke("fit", X))


def test_a_handle_is_made_with_the_context_of_its_decision(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The handle keeps the evaluation context the flag was evaluated with."""
    workspace.add("m", "v1", Constant(1))
    set_flags(m="v1")
    with ModelFlags(workspace.write()) as flags:
        handle = flags.get_model("m", {"user_id": "u7", "plan": "beta"})
    assert isinstance(handle.context, EvaluationContext)
    assert handle.context.targeting_key == "u7"
    assert handle.context.attributes["plan"] == "beta"

"""Serving: the flag's value picks the version; flag trouble serves the LKG and never raises."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider import AbstractProvider, Metadata
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider
from pydantic import BaseModel

import modelflags
from modelflags import ModelFlags, ModelUnavailableError

from support import Workspace


@pytest.fixture
def two_versions(workspace: Workspace, trained: dict[str, object]) -> Workspace:
    workspace.add("recommender", "v1", trained["v1"], default=True)
    workspace.add("recommender", "v2", trained["v2"])
    return workspace


def test_flag_value_picks_the_version(
    two_versions: Workspace, set_flags: Callable[..., None], features: np.ndarray, trained: dict
) -> None:
    """The string the flag returns is the version served, with its metadata and reason."""
    two_versions.models["recommender"]["versions"]["v2"]["metadata"] = {"git_commit": "abc"}
    set_flags(recommender="v2")
    with ModelFlags(two_versions.write()) as flags:
        model = flags.get_model("recommender", "user-1")
        assert model.version == "v2"
        assert model.requested_version == "v2"
        assert model.fell_back is False
        assert model.reason == "STATIC"
        assert model.variant == "v2"
        assert model.metadata == {"git_commit": "abc"}
        assert model.model is not trained["v2"]  # loaded from disk, not the object in memory
        np.testing.assert_array_equal(model.predict(features), trained["v2"].predict(features))
        np.testing.assert_allclose(
            model.predict_proba(features), trained["v2"].predict_proba(features)
        )
        np.testing.assert_allclose(
            model.decision_function(features), trained["v2"].decision_function(features)
        )


def test_flag_key_can_be_set_per_model(
    two_versions: Workspace, set_flags: Callable[..., None]
) -> None:
    """``flag = ...`` in the registry names the flag; the model name is then not evaluated."""
    two_versions.set("recommender", flag="rec-version")
    set_flags(**{"rec-version": "v2", "recommender": "v1"})
    with ModelFlags(two_versions.write()) as flags:
        assert flags.get_model("recommender").version == "v2"


def test_targeting_picks_versions_per_user(two_versions: Workspace) -> None:
    """A context-dependent flag serves different versions to different users."""

    def beta(flag: InMemoryFlag, ctx: EvaluationContext | None) -> FlagResolutionDetails:
        plan = (ctx.attributes if ctx else {}).get("plan")
        variant = "v2" if plan == "beta" else "v1"
        return FlagResolutionDetails(value=variant, variant=variant, reason="TARGETING_MATCH")

    flag = InMemoryFlag("v1", {"v1": "v1", "v2": "v2"}, context_evaluator=beta)
    api.set_provider_and_wait(InMemoryProvider({"recommender": flag}))
    with ModelFlags(two_versions.write()) as flags:
        assert flags.get_model("recommender", {"id": 1, "plan": "beta"}).version == "v2"
        assert flags.get_model("recommender", {"id": 2, "plan": "free"}).version == "v1"


@pytest.mark.parametrize(
    ("flags_installed", "cause"),
    [
        ({}, "FLAG_NOT_FOUND"),
        ({"recommender": 3}, "TYPE_MISMATCH"),
        ({"recommender": "v9"}, "'v9', which the registry does not know"),
    ],
)
def test_flag_trouble_serves_the_lkg_and_logs_once(
    two_versions: Workspace,
    set_flags: Callable[..., None],
    caplog: pytest.LogCaptureFixture,
    flags_installed: dict[str, object],
    cause: str,
) -> None:
    """Missing flags, wrong types and unknown versions serve the LKG, logged once per cause."""
    set_flags(**flags_installed)
    with ModelFlags(two_versions.write()) as flags, caplog.at_level(logging.WARNING):
        for _ in range(5):
            model = flags.get_model("recommender", "u")
            assert model.version == "v1"
            assert model.reason == "ERROR"
        warnings = [r for r in caplog.records if r.name == "modelflags.serving.resolution"]
        assert len(warnings) == 1
        assert cause in warnings[0].getMessage()
        status = flags.status()["recommender"]
        assert status.flag_errors == 5
        assert status.last_flag_error is not None and cause in status.last_flag_error


def test_unknown_version_reports_what_the_flag_asked(
    two_versions: Workspace, set_flags: Callable[..., None]
) -> None:
    """A version the registry does not know is visible as requested_version, served by the LKG."""
    set_flags(recommender="v9")
    with ModelFlags(two_versions.write()) as flags:
        model = flags.get_model("recommender")
        assert (model.version, model.requested_version, model.fell_back) == ("v1", "v9", True)


class ExplodingProvider(AbstractProvider):
    """A provider whose every evaluation raises, as a crashed flag service client would."""

    def get_metadata(self) -> Metadata:
        return Metadata(name="exploding")

    def get_provider_hooks(self) -> list:
        return []

    def _boom(self, *args: object, **kwargs: object) -> FlagResolutionDetails:
        raise ConnectionError("flag service down")

    resolve_boolean_details = _boom
    resolve_string_details = _boom
    resolve_integer_details = _boom
    resolve_float_details = _boom
    resolve_object_details = _boom


def test_provider_errors_serve_the_lkg(
    two_versions: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    """A provider that raises never reaches the caller: the LKG serves."""
    api.set_provider_and_wait(ExplodingProvider())
    with ModelFlags(two_versions.write()) as flags, caplog.at_level(logging.WARNING):
        model = flags.get_model("recommender", "u1")
        assert model.version == "v1"
        assert model.reason == "ERROR"
        assert any("flag service down" in r.getMessage() for r in caplog.records)


def test_no_provider_at_all_serves_the_default_version(two_versions: Workspace) -> None:
    """With OpenFeature's no-op provider the default version serves."""
    with ModelFlags(two_versions.write()) as flags:
        model = flags.get_model("recommender", "u1")
        assert model.version == "v1"


def test_domain_selects_the_provider(two_versions: Workspace) -> None:
    """``domain=`` evaluates with the provider bound to that domain."""
    api.set_provider_and_wait(
        InMemoryProvider({"recommender": InMemoryFlag("v2", {"v2": "v2"})}), domain="models"
    )
    with ModelFlags(two_versions.write(), domain="models") as flags:
        assert flags.get_model("recommender").version == "v2"
    with ModelFlags(two_versions.write()) as flags:
        assert flags.get_model("recommender").version == "v1"


def test_unknown_model_raises_model_unavailable(two_versions: Workspace) -> None:
    """Asking for a model the registry does not have is the caller's error."""
    with ModelFlags(two_versions.write()) as flags:
        with pytest.raises(ModelUnavailableError, match="unknown model 'ranker'") as caught:
            flags.get_model("ranker")
        assert caught.value.model == "ranker"


@dataclass
class DataclassUser:
    user_id: int
    country: str


class PydanticUser(BaseModel):
    targetingKey: str
    beta: bool


def test_every_kind_of_user_reaches_the_flag(two_versions: Workspace) -> None:
    """Each accepted user form arrives at the provider as the expected evaluation context."""
    seen: list[EvaluationContext | None] = []

    def record(flag: InMemoryFlag, ctx: EvaluationContext | None) -> FlagResolutionDetails:
        seen.append(ctx)
        return FlagResolutionDetails(value="v1", variant="v1")

    flag = InMemoryFlag("v1", {"v1": "v1"}, context_evaluator=record)
    api.set_provider_and_wait(InMemoryProvider({"recommender": flag}))
    users: list[object] = [
        None,
        "alice",
        42,
        EvaluationContext("bob", {"a": 1}),
        {"id": "carol", "country": "DE", "nested": {"x": 1}},
        DataclassUser(user_id=7, country="FR"),
        PydanticUser(targetingKey="dave", beta=True),
    ]
    with ModelFlags(two_versions.write()) as flags:
        for user in users:
            flags.get_model("recommender", user)
    keys = [(c.targeting_key, dict(c.attributes)) if c else None for c in seen]
    assert keys == [
        (None, {}),
        ("alice", {}),
        ("42", {}),
        ("bob", {"a": 1}),
        ("carol", {"country": "DE"}),
        ("7", {"country": "FR"}),
        ("dave", {"beta": True}),
    ]


def test_module_level_configure_and_get_model(
    two_versions: Workspace, set_flags: Callable[..., None]
) -> None:
    """configure() makes a process-wide instance that get_model() uses; shutdown() closes it."""
    set_flags(recommender="v2")
    modelflags.shutdown()
    with pytest.raises(modelflags.ModelFlagsError, match="not configured"):
        modelflags.get_model("recommender")
    flags = modelflags.configure(two_versions.write())
    try:
        assert modelflags.get_model("recommender", "u1").version == "v2"
        replacement = modelflags.configure(two_versions.write())
        assert replacement is not flags
        assert flags._closed
    finally:
        modelflags.shutdown()
    with pytest.raises(modelflags.ModelFlagsError):
        modelflags.get_model("recommender")


def test_provider_error_code_is_recorded_in_status(two_versions: Workspace) -> None:
    """status() shows how many evaluations erred and the last cause."""

    def fail(flag: InMemoryFlag, ctx: EvaluationContext | None) -> FlagResolutionDetails:
        return FlagResolutionDetails(
            value="v2", error_code=ErrorCode.PARSE_ERROR, error_message="bad rule"
        )

    flag = InMemoryFlag("v2", {"v2": "v2"}, context_evaluator=fail)
    api.set_provider_and_wait(InMemoryProvider({"recommender": flag}))
    with ModelFlags(two_versions.write()) as flags:
        assert flags.get_model("recommender").version == "v1"
        status = flags.status()["recommender"]
        assert status.flag_errors == 1
        assert "PARSE_ERROR" in (status.last_flag_error or "")

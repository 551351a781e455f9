"""Resolving flags: overrides, fall-through to the delegate, errors and types."""

from __future__ import annotations

import asyncio

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags_provider_overrides import OVERRIDE_REASON, OverridesError, OverridesProvider


def in_memory() -> InMemoryProvider:
    return InMemoryProvider(
        {
            "recommender": InMemoryFlag("v1", {"v1": "rec-v1", "v2": "rec-v2"}),
            "ranker": InMemoryFlag("old", {"old": "ranker-old"}),
            "enabled": InMemoryFlag("on", {"on": True, "off": False}),
            "limit": InMemoryFlag("ten", {"ten": 10}),
            "ratio": InMemoryFlag("half", {"half": 0.5}),
            "config": InMemoryFlag("base", {"base": {"depth": 1}}),
        }
    )


def test_string_override_answers_with_reason_override_and_variant_override() -> None:
    provider = OverridesProvider(in_memory(), flags={"recommender": "rec-v9"})

    details = provider.resolve_string_details("recommender", "fallback")

    assert details.value == "rec-v9"
    assert details.reason == OVERRIDE_REASON == "OVERRIDE"
    assert details.variant == "override"
    assert details.error_code is None
    assert details.flag_metadata == {"override_source": "programmatic"}


def test_every_flag_type_is_answered_from_overrides() -> None:
    provider = OverridesProvider(
        flags={"b": False, "i": 42, "f": 0.25, "o": {"k": [1, 2]}, "l": ["x", "y"]}
    )

    assert provider.resolve_boolean_details("b", True).value is False
    assert provider.resolve_integer_details("i", 0).value == 42
    assert provider.resolve_float_details("f", 0.0).value == 0.25
    assert provider.resolve_object_details("o", {}).value == {"k": [1, 2]}
    assert provider.resolve_object_details("l", []).value == ["x", "y"]
    for details in (
        provider.resolve_boolean_details("b", True),
        provider.resolve_integer_details("i", 0),
        provider.resolve_float_details("f", 0.0),
        provider.resolve_object_details("o", {}),
    ):
        assert details.reason == OVERRIDE_REASON


def test_flags_without_override_fall_through_to_the_in_memory_delegate() -> None:
    provider = OverridesProvider(in_memory(), flags={"recommender": "rec-v9"})

    details = provider.resolve_string_details("ranker", "fallback")

    assert details.value == "ranker-old"
    assert details.reason == Reason.STATIC
    assert details.variant == "old"
    assert provider.resolve_boolean_details("enabled", False).value is True
    assert provider.resolve_integer_details("limit", 0).value == 10
    assert provider.resolve_float_details("ratio", 0.0).value == 0.5
    assert provider.resolve_object_details("config", {}).value == {"depth": 1}


def test_unknown_flag_without_delegate_returns_default_with_flag_not_found() -> None:
    provider = OverridesProvider(flags={"other": "x"})

    details = provider.resolve_string_details("missing", "the-default")

    assert details.value == "the-default"
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND
    assert details.reason == Reason.ERROR
    assert details.error_message is not None and "missing" in details.error_message


def test_unknown_flag_with_delegate_reports_the_delegates_flag_not_found() -> None:
    provider = OverridesProvider(in_memory())

    details = provider.resolve_integer_details("missing", 7)

    assert details.value == 7
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND


@pytest.mark.parametrize(
    ("value", "method", "default"),
    [
        (3, "resolve_string_details", "d"),
        ("3", "resolve_integer_details", 0),
        (True, "resolve_integer_details", 0),
        (True, "resolve_float_details", 0.0),
        ("yes", "resolve_boolean_details", False),
        (1, "resolve_boolean_details", False),
        ("x", "resolve_object_details", {}),
        (1.5, "resolve_integer_details", 0),
    ],
)
def test_override_of_the_wrong_type_returns_default_with_type_mismatch(
    value: object, method: str, default: object
) -> None:
    provider = OverridesProvider(in_memory(), flags={"flag": value})

    details = getattr(provider, method)("flag", default)

    assert details.value == default
    assert details.error_code == ErrorCode.TYPE_MISMATCH
    assert details.reason == Reason.ERROR
    assert "flag" in details.error_message


def test_integer_override_is_accepted_and_converted_for_float_flags() -> None:
    provider = OverridesProvider(flags={"ratio": 2})

    details = provider.resolve_float_details("ratio", 0.0)

    assert details.value == 2.0
    assert isinstance(details.value, float)
    assert details.error_code is None


def test_object_values_are_copies_that_callers_cannot_use_to_change_the_override() -> None:
    provider = OverridesProvider(flags={"config": {"layers": [1, 2]}})

    first = provider.resolve_object_details("config", {}).value
    assert isinstance(first, dict)
    first["layers"].append(3)

    assert provider.resolve_object_details("config", {}).value == {"layers": [1, 2]}
    assert provider.overrides == {"config": {"layers": [1, 2]}}


def test_async_resolution_answers_overrides_and_awaits_the_delegates_async_methods() -> None:
    calls: list[str] = []

    class RecordingAsync(InMemoryProvider):
        async def resolve_string_details_async(
            self,
            flag_key: str,
            default_value: str,
            evaluation_context: EvaluationContext | None = None,
        ) -> FlagResolutionDetails[str]:
            calls.append(flag_key)
            return await super().resolve_string_details_async(
                flag_key, default_value, evaluation_context
            )

    delegate = RecordingAsync({"ranker": InMemoryFlag("a", {"a": "ranker-a"})})
    provider = OverridesProvider(delegate, flags={"recommender": "rec-v9", "limit": 5})

    async def run() -> None:
        override = await provider.resolve_string_details_async("recommender", "d")
        assert (override.value, override.reason) == ("rec-v9", OVERRIDE_REASON)
        delegated = await provider.resolve_string_details_async("ranker", "d")
        assert delegated.value == "ranker-a"
        assert (await provider.resolve_integer_details_async("limit", 0)).value == 5
        assert (await provider.resolve_float_details_async("limit", 0.0)).value == 5.0
        missing = await provider.resolve_boolean_details_async("nope", True)
        assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
        missing_obj = await provider.resolve_object_details_async("nope", {"x": 1})
        assert missing_obj.value == {"x": 1}

    asyncio.run(run())

    assert calls == ["ranker"]


def test_async_resolution_without_delegate_reports_flag_not_found() -> None:
    provider = OverridesProvider()

    details = asyncio.run(provider.resolve_string_details_async("missing", "d"))

    assert details.value == "d"
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND


def test_metadata_names_the_delegate() -> None:
    assert OverridesProvider(in_memory()).get_metadata().name == (
        "OverridesProvider(In-Memory Provider)"
    )
    assert OverridesProvider().get_metadata().name == "OverridesProvider"


def test_openfeature_client_sees_overrides_and_delegate_answers() -> None:
    api.set_provider_and_wait(OverridesProvider(in_memory(), flags={"recommender": "rec-v9"}))
    client = api.get_client()

    overridden = client.get_string_details("recommender", "d")
    delegated = client.get_string_details("ranker", "d")
    mismatch = client.get_integer_details("recommender", 3)

    assert (overridden.value, overridden.reason) == ("rec-v9", "OVERRIDE")
    assert (delegated.value, delegated.reason) == ("ranker-old", Reason.STATIC)
    assert (mismatch.value, mismatch.error_code) == (3, ErrorCode.TYPE_MISMATCH)
    assert api.get_provider_metadata().name == "OverridesProvider(In-Memory Provider)"


def test_provider_is_a_real_openfeature_abstract_provider() -> None:
    assert isinstance(OverridesProvider(), AbstractProvider)


@pytest.mark.parametrize("interval", [0, -1, 1.5])
def test_poll_interval_outside_the_bounds_is_rejected(interval: float) -> None:
    with pytest.raises(ValueError, match="poll_interval"):
        OverridesProvider(poll_interval=interval)


def test_invalid_initial_flags_raise_an_error_naming_the_key_and_field() -> None:
    with pytest.raises(OverridesError) as info:
        OverridesProvider(flags={"model": {"weights": [1, None]}})

    assert info.value.flag_key == "model"
    assert info.value.field == "value.weights[1]"
    assert "flag 'model'" in str(info.value)
    assert "null" in str(info.value)


def test_async_openfeature_client_gets_overrides_and_delegate_answers() -> None:
    api.set_provider_and_wait(OverridesProvider(in_memory(), flags={"recommender": "rec-v9"}))
    client = api.get_client()

    async def run() -> tuple[str, str]:
        overridden = await client.get_string_details_async("recommender", "d")
        delegated = await client.get_string_details_async("ranker", "d")
        return overridden.value, delegated.value

    assert asyncio.run(run()) == ("rec-v9", "ranker-old")

"""Rule lists: matching on context attributes and the targeting key."""

from __future__ import annotations

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider.in_memory_provider import InMemoryFlag, InMemoryProvider

from modelflags_provider_overrides import OVERRIDE_REASON, OverridesError, OverridesProvider


def ctx(targeting_key: str | None = None, **attributes: object) -> EvaluationContext:
    return EvaluationContext(targeting_key=targeting_key, attributes=attributes)  # type: ignore[arg-type]


def delegate() -> InMemoryProvider:
    return InMemoryProvider({"recommender": InMemoryFlag("v1", {"v1": "from-delegate"})})


def test_rule_matches_on_a_context_attribute_and_reports_its_index_as_variant() -> None:
    provider = OverridesProvider(
        delegate(),
        flags={"recommender": [{"value": "v3", "when": {"country": "DE"}}, {"value": "v2"}]},
    )

    german = provider.resolve_string_details("recommender", "d", ctx(country="DE"))
    french = provider.resolve_string_details("recommender", "d", ctx(country="FR"))

    assert (german.value, german.variant, german.reason) == ("v3", "rule-0", OVERRIDE_REASON)
    assert (french.value, french.variant, french.reason) == ("v2", "rule-1", OVERRIDE_REASON)


def test_rule_matches_on_the_targeting_key() -> None:
    provider = OverridesProvider(
        delegate(),
        flags={"recommender": [{"value": "beta", "when": {"targeting_key": "user-42"}}]},
    )

    assert provider.resolve_string_details("recommender", "d", ctx("user-42")).value == "beta"
    assert provider.resolve_string_details("recommender", "d", ctx("user-7")).value == (
        "from-delegate"
    )


def test_list_in_when_means_membership() -> None:
    provider = OverridesProvider(
        flags={
            "recommender": [
                {"value": "dach", "when": {"country": ["DE", "AT", "CH"]}},
                {"value": "vip", "when": {"targeting_key": ["u1", "u2"]}},
            ]
        }
    )

    assert provider.resolve_string_details("recommender", "d", ctx(country="AT")).value == "dach"
    assert provider.resolve_string_details("recommender", "d", ctx("u2")).value == "vip"
    miss = provider.resolve_string_details("recommender", "d", ctx("u3", country="FR"))
    assert miss.error_code == ErrorCode.FLAG_NOT_FOUND


def test_rules_are_tried_in_order_and_the_first_match_wins() -> None:
    provider = OverridesProvider(
        flags={
            "recommender": [
                {"value": "first", "when": {"tier": "gold"}},
                {"value": "second", "when": {"country": "DE"}},
                {"value": "catch-all"},
            ]
        }
    )

    both = provider.resolve_string_details("recommender", "d", ctx(tier="gold", country="DE"))
    only_country = provider.resolve_string_details("recommender", "d", ctx(country="DE"))
    neither = provider.resolve_string_details("recommender", "d", ctx())

    assert (both.value, both.variant) == ("first", "rule-0")
    assert (only_country.value, only_country.variant) == ("second", "rule-1")
    assert (neither.value, neither.variant) == ("catch-all", "rule-2")


def test_all_conditions_of_one_rule_must_hold() -> None:
    provider = OverridesProvider(
        flags={"f": [{"value": "yes", "when": {"country": "DE", "tier": ["gold", "silver"]}}]}
    )

    assert provider.resolve_string_details("f", "no", ctx(country="DE", tier="gold")).value == "yes"
    assert provider.resolve_string_details("f", "no", ctx(country="DE", tier="bronze")).value == (
        "no"
    )
    assert provider.resolve_string_details("f", "no", ctx(country="DE")).value == "no"


def test_when_no_rule_matches_the_flag_falls_through_to_the_delegate() -> None:
    provider = OverridesProvider(
        delegate(), flags={"recommender": [{"value": "v3", "when": {"country": "DE"}}]}
    )

    details = provider.resolve_string_details("recommender", "d", ctx(country="FR"))
    without_context = provider.resolve_string_details("recommender", "d")

    assert (details.value, details.reason) == ("from-delegate", Reason.STATIC)
    assert without_context.value == "from-delegate"


def test_booleans_never_match_numbers_and_numbers_compare_numerically() -> None:
    provider = OverridesProvider(
        flags={
            "f": [
                {"value": "bool", "when": {"beta": True}},
                {"value": "num", "when": {"level": 2}},
            ]
        }
    )

    assert provider.resolve_string_details("f", "d", ctx(beta=1)).value == "d"
    assert provider.resolve_string_details("f", "d", ctx(beta=True)).value == "bool"
    assert provider.resolve_string_details("f", "d", ctx(level=2.0)).value == "num"
    assert provider.resolve_string_details("f", "d", ctx(level="2")).value == "d"
    assert provider.resolve_string_details("f", "d", ctx(level=True)).value == "d"


def test_a_list_of_plain_values_is_a_value_not_rules() -> None:
    provider = OverridesProvider(flags={"models": ["v2", "v1"], "mixed": [{"value": 1}, 2]})

    assert provider.resolve_object_details("models", []).value == ["v2", "v1"]
    assert provider.resolve_object_details("mixed", []).value == [{"value": 1}, 2]
    assert provider.resolve_object_details("models", []).variant == "override"


def test_a_list_of_tables_as_a_value_is_written_as_a_single_rule() -> None:
    weights = [{"name": "a", "w": 0.7}, {"name": "b", "w": 0.3}]
    provider = OverridesProvider(flags={"weights": [{"value": weights}]})

    details = provider.resolve_object_details("weights", [])

    assert details.value == weights
    assert details.variant == "rule-0"


@pytest.mark.parametrize(
    ("rules", "field", "fragment"),
    [
        ([{"vlaue": "x"}], "rules[0].value", "Field required"),
        ([{"value": "x"}, {"value": "y", "when": {"c": {"nested": 1}}}], "rules[1].when.c", "dict"),
        ([{"value": "x", "when": {"c": []}}], "rules[0].when.c", "empty array"),
        ([{"value": "x", "when": ["c"]}], "rules[0].when", "dictionary"),
        ([{"value": None}], "rules[0].value", "null"),
    ],
)
def test_badly_shaped_rules_are_rejected_naming_the_key_and_field(
    rules: object, field: str, fragment: str
) -> None:
    provider = OverridesProvider()

    with pytest.raises(OverridesError) as info:
        provider.set("recommender", rules)

    assert info.value.flag_key == "recommender"
    assert info.value.field == field
    assert fragment in str(info.value)
    assert "flag 'recommender'" in str(info.value)
    assert provider.overrides == {}

"""User objects become OpenFeature evaluation contexts; bad input is a clear error."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import pytest
from openfeature.evaluation_context import EvaluationContext

from modelflags.serving.context import to_context


def test_targeting_key_is_the_first_present_field() -> None:
    """targeting_key, targetingKey, user_id, id, key: the first present wins."""
    assert to_context({"key": "k", "id": 3, "user_id": "u"}).targeting_key == "u"
    assert to_context({"key": "k", "targetingKey": "t"}).targeting_key == "t"
    assert to_context({"key": "k"}).targeting_key == "k"
    assert to_context({"name": "x"}).targeting_key is None


def test_scalar_fields_become_attributes_and_others_are_left_out() -> None:
    """Strings, numbers, booleans and datetimes are kept; nested values and None are not."""
    when = datetime.datetime(2026, 1, 1)
    context = to_context(
        {"id": "a", "n": 1, "x": 1.5, "b": False, "t": when, "tags": ["a"], "none": None}
    )
    assert dict(context.attributes) == {"n": 1, "x": 1.5, "b": False, "t": when}


def test_a_bool_id_is_not_a_targeting_key() -> None:
    """A boolean ``id`` is an attribute, not the targeting key."""
    context = to_context({"id": True, "key": "k"})
    assert context.targeting_key == "k"


@dataclass
class Frozen:
    key: str
    level: int


def test_contexts_and_dataclasses_pass_through() -> None:
    """An EvaluationContext is used as is; a dataclass is read field by field."""
    given = EvaluationContext("x", {"a": 1})
    assert to_context(given) is given
    assert to_context(Frozen("f", 2)) == EvaluationContext("f", {"level": 2})


@pytest.mark.parametrize("user", [True, 1.5, ["u"], object(), Frozen])
def test_unsupported_users_raise_a_type_error_naming_the_type(user: object) -> None:
    """Anything else is refused with a message that lists what is accepted."""
    with pytest.raises(TypeError, match=r"EvaluationContext|not a user"):
        to_context(user)

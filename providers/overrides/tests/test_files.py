"""Loading override files (TOML and JSON) and rejecting invalid ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode

from modelflags_provider_overrides import OVERRIDE_REASON, OverridesFileError, OverridesProvider

TOML_OVERRIDES = """
ranker = "ranker-v5"
enabled = true
batch-size = 64
threshold = 0.35
model-config = { temperature = 0.2, top_k = 40 }
fallback-models = ["v2", "v1"]
"model.version" = "v9"
recommender = [{value = "v3", when = {country = "DE"}}, {value = "v2"}]

[[search]]
value = "s2"
when = { country = ["DE", "AT"], tier = "gold" }
"""


def test_toml_file_overrides_values_and_rules(tmp_path: Path) -> None:
    path = tmp_path / "overrides.toml"
    path.write_text(TOML_OVERRIDES)

    provider = OverridesProvider(path=path)
    german_gold = EvaluationContext(attributes={"country": "AT", "tier": "gold"})

    assert provider.resolve_string_details("ranker", "d").value == "ranker-v5"
    assert provider.resolve_boolean_details("enabled", False).value is True
    assert provider.resolve_integer_details("batch-size", 0).value == 64
    assert provider.resolve_float_details("threshold", 0.0).value == 0.35
    assert provider.resolve_object_details("model-config", {}).value == {
        "temperature": 0.2,
        "top_k": 40,
    }
    assert provider.resolve_object_details("fallback-models", []).value == ["v2", "v1"]
    assert provider.resolve_string_details("model.version", "d").value == "v9"
    de = provider.resolve_string_details(
        "recommender", "d", EvaluationContext(attributes={"country": "DE"})
    )
    assert (de.value, de.variant, de.reason) == ("v3", "rule-0", OVERRIDE_REASON)
    assert de.flag_metadata == {"override_source": "file"}
    assert provider.resolve_string_details("recommender", "d").value == "v2"
    assert provider.resolve_string_details("search", "d", german_gold).value == "s2"
    assert provider.resolve_string_details("search", "d").error_code == ErrorCode.FLAG_NOT_FOUND


def test_json_file_overrides_values_and_rules(tmp_path: Path) -> None:
    path = tmp_path / "overrides.json"
    path.write_text(
        json.dumps(
            {
                "ranker": "ranker-v5",
                "limit": 3,
                "recommender": [
                    {"value": "v3", "when": {"targeting_key": "user-1"}},
                    {"value": "v2"},
                ],
            }
        )
    )

    provider = OverridesProvider(path=str(path))

    assert provider.resolve_string_details("ranker", "d").value == "ranker-v5"
    assert provider.resolve_integer_details("limit", 0).value == 3
    user1 = EvaluationContext(targeting_key="user-1")
    assert provider.resolve_string_details("recommender", "d", user1).value == "v3"
    assert provider.resolve_string_details("recommender", "d").value == "v2"
    assert provider.path == path
    assert provider.overrides["recommender"] == [
        {"value": "v3", "when": {"targeting_key": "user-1"}},
        {"value": "v2"},
    ]


def test_file_is_loaded_synchronously_at_construction(tmp_path: Path) -> None:
    path = tmp_path / "o.toml"
    path.write_text('ranker = "now"\n')

    provider = OverridesProvider(path=path)  # no initialize(), no watcher thread

    assert provider.resolve_string_details("ranker", "d").value == "now"


@pytest.mark.parametrize(
    ("name", "content", "fragment"),
    [
        ("bad.toml", 'ranker = "unterminated\n', "invalid TOML"),
        ("bad.json", '{"ranker": "v1",}', "invalid JSON"),
        ("bad.json", '["ranker"]', "top level must be an object"),
        ("bad.json", "", "invalid JSON"),
    ],
)
def test_file_with_bad_syntax_raises_an_error_naming_the_file(
    tmp_path: Path, name: str, content: str, fragment: str
) -> None:
    path = tmp_path / name
    path.write_text(content)

    with pytest.raises(OverridesFileError) as info:
        OverridesProvider(path=path)

    message = str(info.value)
    assert message.startswith(f"overrides file '{path}'")
    assert fragment in message
    assert info.value.path == str(path)
    assert "pydantic" not in message.lower()


@pytest.mark.parametrize(
    ("content", "key", "field", "fragment"),
    [
        (
            'recommender = [{value = "v3", when = {country = {a = 1}}}]',
            "recommender",
            "rules[0].when.country",
            "must be a string",
        ),
        ('recommender = [{value = "v3"}, {vlaue = "v2"}]', "recommender", "rules[1].value", ""),
        ('recommender = [{value = "v3", unless = {a = 1}}]', "recommender", "rules[0].unless", ""),
        ("started = 1979-05-27T07:32:00Z", "started", "value", "datetime"),
        ("cfg = { weights = [1, 2020-01-01] }", "cfg", "value.weights[1]", "date"),
    ],
)
def test_file_with_a_bad_override_raises_an_error_naming_file_key_and_field(
    tmp_path: Path, content: str, key: str, field: str, fragment: str
) -> None:
    path = tmp_path / "overrides.toml"
    path.write_text(f'fine = "ok"\n{content}\n')

    with pytest.raises(OverridesFileError) as info:
        OverridesProvider(path=path)

    message = str(info.value)
    assert f"overrides file '{path}'" in message
    assert f"flag '{key}'" in message
    assert f"field '{field}'" in message
    assert fragment in message
    assert (info.value.flag_key, info.value.field) == (key, field)
    assert isinstance(info.value, ValueError)


def test_bad_rule_in_json_names_the_file_key_and_field(tmp_path: Path) -> None:
    path = tmp_path / "overrides.json"
    path.write_text(json.dumps({"ranker": [{"value": "x", "when": {"tier": [None]}}]}))

    with pytest.raises(OverridesFileError, match=r"flag 'ranker': field 'rules\[0\]\.when\.tier'"):
        OverridesProvider(path=path)


def test_missing_file_at_construction_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"

    with pytest.raises(OverridesFileError, match="does not exist") as info:
        OverridesProvider(path=path)

    assert str(path) in str(info.value)


def test_unsupported_suffix_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "overrides.yaml"
    path.write_text("ranker: v1\n")

    with pytest.raises(OverridesFileError, match=r"\.toml or \.json"):
        OverridesProvider(path=path)

"""The registry file: formats, validation errors that name file, model and field, URI resolution."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelflags import ModelFlags, ModelFlagsError, Registry, RegistryError, load_registry

DIGEST = "ab" * 32


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_toml_registry_loads_with_defaults_and_relative_uris(tmp_path: Path) -> None:
    """A TOML registry loads; the flag defaults to the model name; paths resolve to its folder."""
    path = write(
        tmp_path,
        "registry.toml",
        """
        [models.recommender]
        default_version = "v1"
        [models.recommender.versions.v1]
        uri = "artifacts/v1.joblib"
        [models.recommender.versions.v1.metadata]
        git_commit = "4e1d0c2"
        """,
    )
    registry = load_registry(path)
    model = registry.models["recommender"]
    assert model.flag_key == "recommender"
    assert model.shadow_flag is None
    assert model.shadow_rate == 1.0
    version = model.versions["v1"]
    assert version.location == str(tmp_path / "artifacts" / "v1.joblib")
    assert version.metadata == {"git_commit": "4e1d0c2"}
    assert registry.source == str(path)


def test_json_registry_loads_with_explicit_flag_and_file_uri(tmp_path: Path) -> None:
    """A JSON registry loads; ``flag`` overrides the key; file:// URIs become paths."""
    data = {
        "models": {
            "ranker": {
                "flag": "ranker-version",
                "default_version": "a",
                "versions": {"a": {"uri": f"file://{tmp_path}/a.pkl", "sha256": DIGEST.upper()}},
            }
        }
    }
    registry = load_registry(write(tmp_path, "r.json", json.dumps(data)))
    model = registry.models["ranker"]
    assert model.flag_key == "ranker-version"
    assert model.versions["a"].location == str(tmp_path / "a.pkl")
    assert model.versions["a"].sha256 == DIGEST  # normalised to lower case


def test_default_version_must_be_registered(tmp_path: Path) -> None:
    """A default_version missing from versions names the file, the model and the field."""
    path = write(
        tmp_path,
        "registry.toml",
        """
        [models.recommender]
        default_version = "v9"
        [models.recommender.versions.v1]
        uri = "v1.joblib"
        """,
    )
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    message = str(caught.value)
    assert str(path) in message
    assert "'recommender'" in message
    assert "v9" in message and "default_version" in message
    assert caught.value.model == "recommender"
    assert isinstance(caught.value, ModelFlagsError)


def test_duplicate_json_keys_are_rejected(tmp_path: Path) -> None:
    """JSON silently keeps the last duplicate key; the registry refuses it instead."""
    text = (
        '{"models": {"m": {"default_version": "v1", "versions": '
        '{"v1": {"uri": "a.joblib"}, "v1": {"uri": "b.joblib"}}}}}'
    )
    with pytest.raises(RegistryError, match=r"r\.json: duplicate key 'v1'") as caught:
        load_registry(write(tmp_path, "r.json", text))
    assert str(caught.value).endswith("duplicate key 'v1' in models.m.versions")
    assert caught.value.model == "m"
    assert caught.value.field == "versions.v1"


def test_duplicate_json_keys_at_the_top_are_named_too(tmp_path: Path) -> None:
    """A key repeated in the top-level object is reported as such."""
    text = '{"models": {}, "models": {}}'
    with pytest.raises(RegistryError, match="duplicate key 'models' in the top-level object"):
        load_registry(write(tmp_path, "r.json", text))


def test_a_registry_that_is_not_utf8_names_the_file_and_the_byte(tmp_path: Path) -> None:
    """Latin-1 bytes are a RegistryError with the byte offset and line, not a UnicodeDecodeError."""
    path = tmp_path / "registry.toml"
    path.write_bytes(b'[models.m]\ndefault_version = "v1"\n# caf\xe9\n')
    with pytest.raises(RegistryError) as caught:
        load_registry(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid UTF-8 at byte 39 (line 3)")
    assert "\\xe9" in message
    assert caught.value.file == str(path)
    assert not isinstance(caught.value.__cause__, RegistryError)


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("../../api/admin/projects/default", "invalid flag key '../../api"),
        ("rec\n", "invalid flag key 'rec\\n'"),
        ("a b", "invalid flag key 'a b'"),
        ("..", "invalid flag key '..'"),
        ("team/recommender", "invalid flag key 'team/recommender'"),
    ],
)
def test_flag_keys_follow_the_id_rules(key: str, needle: str) -> None:
    """flag and shadow_flag are checked like ids: no slashes, dots-only, spaces or newlines."""
    for field in ("flag", "shadow_flag"):
        data = {
            "models": {"m": {field: key, "default_version": "v1", "versions": {"v1": {"uri": "a"}}}}
        }
        with pytest.raises(RegistryError) as caught:
            Registry.from_mapping(data, source="reg.toml")
        assert needle in str(caught.value)
        assert caught.value.field == field


def test_names_with_a_trailing_newline_are_rejected() -> None:
    """Ids are matched whole: a trailing newline is not silently accepted."""
    data = {"models": {"m\n": {"default_version": "v1", "versions": {"v1": {"uri": "a"}}}}}
    with pytest.raises(RegistryError, match="invalid model name"):
        Registry.from_mapping(data, source="reg.toml")


@pytest.mark.parametrize(
    ("model", "needle"),
    [
        (
            {"default_version": "v1", "versions": {"v1": {"url": "a.joblib"}}},
            "field 'versions.v1.url': unknown field 'url' (did you mean 'uri'?)",
        ),
        (
            {"defualt_version": "v1", "versions": {"v1": {"uri": "a"}}},
            "field 'defualt_version': unknown field 'defualt_version' "
            "(did you mean 'default_version'?)",
        ),
        (
            {
                "default_version": "v1",
                "versions": {"v1": {"uri": "a"}},
                "guardrails": {"max_eror_rate": 0.1},
            },
            "unknown field 'max_eror_rate' (did you mean 'max_error_rate'?)",
        ),
        (
            {
                "default_version": "v1",
                "versions": {"v1": {"uri": "a", "lineage": {"metrix": {"auc": 0.9}}}},
            },
            "unknown field 'metrix' (did you mean 'metrics'?)",
        ),
    ],
)
def test_unknown_fields_suggest_the_closest_known_one(
    model: dict[str, object], needle: str
) -> None:
    """A misspelt field is reported with the field that was probably meant."""
    with pytest.raises(RegistryError) as caught:
        Registry.from_mapping({"models": {"m": model}}, source="reg.toml")
    assert needle in str(caught.value)


def test_an_unknown_top_level_key_suggests_models() -> None:
    """The registry's own table gets suggestions too."""
    with pytest.raises(RegistryError, match=r"unknown field 'model' \(did you mean 'models'\?\)"):
        Registry.from_mapping({"model": {}}, source="reg.toml")


def test_a_misspelt_field_in_a_file_is_reported_by_load_registry(tmp_path: Path) -> None:
    """The suggestion reaches users of the library (and the command) from a real file."""
    path = write(
        tmp_path,
        "registry.toml",
        """
        [models.m]
        default_version = "v1"
        [models.m.versions.v1]
        url = "a.joblib"
        """,
    )
    with pytest.raises(RegistryError, match=r"did you mean 'uri'\?"):
        load_registry(path)


def test_duplicate_toml_tables_are_rejected(tmp_path: Path) -> None:
    """TOML redefining a version table is an error naming the file."""
    text = """
    [models.m]
    default_version = "v1"
    [models.m.versions.v1]
    uri = "a.joblib"
    [models.m.versions.v1]
    uri = "b.joblib"
    """
    with pytest.raises(RegistryError, match=r"registry\.toml: invalid TOML"):
        load_registry(write(tmp_path, "registry.toml", text))


@pytest.mark.parametrize(
    ("versions", "field", "needle"),
    [
        ({"": {"uri": "a.joblib"}}, "versions", "empty version id"),
        ({" bad id": {"uri": "a.joblib"}}, "versions", "invalid version id"),
        ({"v1": {"uri": ""}}, "versions.v1.uri", "at least 1 character"),
        ({"v1": {"uri": "ftp://host/a.joblib"}}, "versions.v1", "unsupported URI scheme 'ftp'"),
        ({"v1": {"uri": "https://host/a.joblib"}}, "versions.v1", "needs a sha256"),
        ({"v1": {"uri": "https:///a.joblib", "sha256": DIGEST}}, "versions.v1", "no host"),
        ({"v1": {"uri": "a.joblib", "sha256": "xyz"}}, "versions.v1.sha256", "64 hexadecimal"),
        ({"v1": {"uri": "a.joblib", "colour": "red"}}, "versions.v1.colour", "unknown field"),
        ({"v1\n": {"uri": "a.joblib"}}, "versions", "invalid version id 'v1\\n'"),
        ({"v1": {"uri": "a.joblib", "stage": "prod"}}, "versions.v1.stage", "'production'"),
        ({}, "versions", "at least one version"),
    ],
)
def test_invalid_versions_name_model_and_field(
    versions: dict[str, object], field: str, needle: str
) -> None:
    """Each invalid version entry is reported with the model and the field path."""
    data = {"models": {"m": {"default_version": "v1", "versions": versions}}}
    with pytest.raises(RegistryError) as caught:
        Registry.from_mapping(data, source="reg.toml")
    message = str(caught.value)
    assert message.startswith("reg.toml: invalid registry: model 'm', field ")
    assert needle in message
    assert caught.value.file == "reg.toml"
    assert caught.value.model == "m"
    assert caught.value.field is not None and caught.value.field.startswith(field)


def test_empty_model_name_is_rejected() -> None:
    """A model needs a non-empty name."""
    data = {"models": {"": {"default_version": "v1", "versions": {"v1": {"uri": "a"}}}}}
    with pytest.raises(RegistryError, match="empty model name"):
        Registry.from_mapping(data, source="reg.toml")


def test_shadow_rate_out_of_range_is_rejected() -> None:
    """shadow_rate is a share between 0 and 1."""
    data = {
        "models": {
            "m": {"default_version": "v1", "shadow_rate": 2, "versions": {"v1": {"uri": "a"}}}
        }
    }
    with pytest.raises(RegistryError, match="field 'shadow_rate'"):
        Registry.from_mapping(data, source="reg.toml")


def test_missing_and_unparsable_files_name_the_file(tmp_path: Path) -> None:
    """Missing files, broken syntax and unknown suffixes are RegistryErrors naming the file."""
    with pytest.raises(RegistryError, match="registry file not found"):
        load_registry(tmp_path / "nope.toml")
    with pytest.raises(RegistryError, match=r"bad\.toml: invalid TOML"):
        load_registry(write(tmp_path, "bad.toml", "[models\n"))
    with pytest.raises(RegistryError, match=r"bad\.json: invalid JSON"):
        load_registry(write(tmp_path, "bad.json", "{"))
    with pytest.raises(RegistryError, match=r"unknown registry format '\.ini'"):
        load_registry(write(tmp_path, "r.ini", "x"))
    with pytest.raises(RegistryError, match="table/object at top level"):
        load_registry(write(tmp_path, "list.json", "[]"))


def test_model_flags_accepts_a_mapping_and_rejects_client_with_domain() -> None:
    """A registry may be given as a mapping; client= and domain= exclude each other."""
    data = {"models": {"m": {"default_version": "v1", "versions": {"v1": {"uri": "/x.joblib"}}}}}
    with ModelFlags(data) as flags:
        assert list(flags.registry.models) == ["m"]
    from openfeature import api

    with pytest.raises(ValueError, match="not both"):
        ModelFlags(data, client=api.get_client(), domain="d")

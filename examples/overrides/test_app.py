"""The app's own tests pin model versions three ways: fixture, marker and override file."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import make_flags, recommend

ROWS = [[0.0, 1.0], [1.0, 0.0]]
HERE = Path(__file__).parent


def test_serves_what_the_flag_service_says(registry: Path) -> None:
    """Without pins, the flag service's choice (v1) answers."""
    with make_flags(registry) as flags:
        assert recommend(flags, "ada", ROWS) == {"version": "v1", "labels": [1, 1]}


def test_fixture_pins_a_version_for_one_test(registry: Path, model_overrides) -> None:
    """The model_overrides fixture pins v2 for this test only."""
    model_overrides.set(recommender="v2")
    with make_flags(registry) as flags:
        assert recommend(flags, "ada", ROWS) == {"version": "v2", "labels": [2, 2]}


@pytest.mark.model_versions(recommender="v3")
def test_marker_pins_a_version(registry: Path) -> None:
    """The model_versions marker pins v3 for the test."""
    with make_flags(registry) as flags:
        assert recommend(flags, "ada", ROWS)["version"] == "v3"


def test_override_file_targets_beta_testers(registry: Path) -> None:
    """The checked-in override file sends German beta testers to v3, others to the flags."""
    with make_flags(registry, overrides=HERE / "overrides.toml") as flags:
        beta = flags.get_model("recommender", {"id": "u1", "country": "DE", "plan": "beta"})
        other = flags.get_model("recommender", {"id": "u2", "country": "FR", "plan": "beta"})
        assert (beta.version, beta.reason) == ("v3", "OVERRIDE")
        assert other.version == "v1"


def test_pins_do_not_leak_between_tests(registry: Path) -> None:
    """After the pinned tests, the flag service's choice is back."""
    with make_flags(registry) as flags:
        assert recommend(flags, "ada", ROWS)["version"] == "v1"

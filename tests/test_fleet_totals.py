"""Fleet totals from raw Prometheus samples: baselines, resets, new instances, persistence;
the PromQL read; the split an actuator reads back; the fleet's rules on totals."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from modelflags.errors import MetricsUnavailableError
from modelflags.registry.guardrails import GuardrailRules, OutcomeDrop
from modelflags.rollout.actuators.flagd import FlagdFileActuator
from modelflags.rollout.fleet_rules import FleetJudge
from modelflags.rollout.fleet_totals import FleetTotals, VersionTotals
from modelflags.rollout.promql import PrometheusSource, SeriesSamples, selector

from fleet_fixtures import flag_file


def series(name: str, points: list[tuple[float, float]], **labels: str) -> SeriesSamples:
    every = {"__name__": f"modelflags_{name}", "model": "m", "version": "v2", **labels}
    every.setdefault("instance", "a")
    return SeriesSamples(tuple(sorted(every.items())), tuple(points))


def test_totals_start_from_the_values_at_the_first_read() -> None:
    """What an instance counted before the rollout is not counted."""
    totals = FleetTotals()
    totals.absorb([series("latency_seconds_count", [(1, 500), (2, 510)])])
    totals.absorb([series("latency_seconds_count", [(2, 510), (3, 530), (4, 560)])])
    assert totals.version("v2").ran == 50


def test_a_reset_counts_what_the_instance_counted_since_it_restarted() -> None:
    """A counter that drops is an instance that restarted: its new value is all new."""
    totals = FleetTotals()
    totals.absorb([series("latency_seconds_count", [(1, 500)])])
    totals.absorb([series("latency_seconds_count", [(2, 520), (3, 4), (4, 9)])])
    assert totals.version("v2").ran == 29


def test_a_reset_seen_on_one_counter_applies_to_the_whole_instance() -> None:
    """An outcome sum may fall on its own; the group's count says whether it was a reset."""
    totals = FleetTotals()
    first = [
        series("outcome_count", [(1, 100)], outcome="revenue"),
        series("outcome_sum", [(1, 50.0)], outcome="revenue"),
    ]
    totals.absorb(first)
    totals.absorb(
        [
            series("outcome_count", [(2, 110), (3, 2)], outcome="revenue"),
            series("outcome_sum", [(2, 45.0), (3, 7.0)], outcome="revenue"),
        ]
    )
    moments = totals.version("v2", "revenue").outcome
    assert moments is not None
    assert moments.count == 12 and moments.total == pytest.approx(-5.0 + 7.0)


def test_instances_first_seen_later_count_from_zero_and_add_up() -> None:
    """A new instance's counts since it started are all new; instances are summed."""
    totals = FleetTotals()
    totals.absorb([series("latency_seconds_count", [(1, 10)])])
    totals.absorb(
        [
            series("latency_seconds_count", [(2, 30)]),
            series("latency_seconds_count", [(2, 7)], instance="b"),
        ]
    )
    got = totals.version("v2")
    assert got.ran == 27 and got.instances == 2


def test_totals_survive_a_round_trip_through_json() -> None:
    """The state file carries the totals across a restart of the controller."""
    totals = FleetTotals()
    totals.absorb([series("latency_seconds_count", [(1, 10)])])
    totals.absorb([series("latency_seconds_count", [(2, 30)])])
    again = FleetTotals.from_json(json.loads(json.dumps(totals.to_json())))
    again.absorb([series("latency_seconds_count", [(2, 30), (3, 35)])])
    assert again.version("v2").ran == 25
    with pytest.raises(ValueError, match="not the totals of a rollout"):
        FleetTotals.from_json({"prefix": "x"})


def test_calls_surely_slower_than_a_limit_use_the_buckets_above_it() -> None:
    """Only buckets wholly above the limit count: a lower bound of the slow calls."""
    got = VersionTotals(100, 0, ((0.01, 60), (0.05, 90), (float("inf"), 100)), None, 1)
    assert got.slower_than(0.05) == 10
    assert got.slower_than(0.02) == 10
    assert got.slower_than(0.005) == 40


def test_the_selector_escapes_names_and_asks_for_raw_samples() -> None:
    """Versions become an anchored regex; the window is whole seconds."""
    text = selector('rec"x', ["v1.2", "v3"], outcome="click", window_s=4.2)
    assert 'model="rec\\"x"' in text
    assert 'version=~"v1\\\\.2|v3"' in text
    assert 'outcome=~"|click"' in text and text.endswith("[5s]")


def test_a_malformed_or_non_matrix_answer_is_a_query_error() -> None:
    """Anything but a matrix of numbers is refused, naming the server."""

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"status": "success", "data": {"resultType": "vector"}})

    source = PrometheusSource("http://prom", transport=httpx.MockTransport(answer))
    with pytest.raises(MetricsUnavailableError, match="not a matrix") as caught:
        source.read("m", ["v1"], outcome=None, window_s=10)
    assert caught.value.reason == "query" and caught.value.url == "http://prom"


def test_the_flagd_actuator_reads_back_the_split_it_wrote(tmp_path: Path) -> None:
    """set_split and rollback read back as written; other targeting is not a split."""
    flags = FlagdFileActuator(flag_file(tmp_path / "flags.json"))
    assert flags.current_split("recommender") == {"v1": 100}
    flags.set_split("recommender", {"v1": 90, "v2": 10})
    assert flags.current_split("recommender") == {"v1": 90, "v2": 10}
    flags.rollback("recommender", to_version="v1", from_version="v2")
    assert flags.current_split("recommender") == {"v1": 100}
    document = json.loads((tmp_path / "flags.json").read_text())
    document["flags"]["recommender"]["targeting"] = {"if": [True, "v2", "v1"]}
    (tmp_path / "flags.json").write_text(json.dumps(document))
    assert flags.current_split("recommender") is None


def test_the_fleet_judge_shares_alpha_and_gates_on_min_requests() -> None:
    """Each rule gets its share of alpha; a breach on too few calls is no verdict yet."""
    rules = GuardrailRules(
        max_outcome_drop=OutcomeDrop(name="click", relative=0.05),
        max_error_rate=0.01,
        max_p95_latency_ms=50,
        min_requests=1000,
        alpha=0.06,
    )
    judge = FleetJudge.for_rules(rules)
    assert dict(judge.alphas.shares) == pytest.approx(
        {"max_outcome_drop": 0.02, "max_error_rate": 0.02, "max_p95_latency_ms": 0.02}
    )
    buckets = ((0.05, 100), (float("inf"), 500))
    candidate = VersionTotals(500, 400, buckets, None, 1)
    baseline = VersionTotals(5000, 0, ((0.05, 5000), (float("inf"), 5000)), None, 1)
    found = {e.rule: e for e in judge.evaluate(candidate, baseline)}
    assert not found["max_error_rate"].breached and not found["max_error_rate"].decided
    assert "waiting for min_requests 1000 (have 500)" in found["max_error_rate"].note
    assert not found["max_outcome_drop"].decided

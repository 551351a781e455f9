"""Per-version metrics over a sliding window: exact counts, expiry, quantiles, threads."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from modelflags.rollout.metrics import Metrics, MetricsRecorder, OutcomeStats, VersionMetrics

from support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def metrics(clock: FakeClock) -> Metrics:
    """A 60 s window in 12 slices of 5 s."""
    return Metrics(window_s=60.0, clock=clock, buckets=12)


def test_counts_requests_errors_and_fallbacks_exactly(metrics: Metrics) -> None:
    """Every call counts once; errors and fallbacks count where flagged; the rate is exact."""
    for index in range(1000):
        metrics.record_call("m", "v2", 0.01, error=index % 10 == 0, fell_back=index % 20 == 0)
    metrics.record_call("m", "v1", 0.02, error=False, fell_back=False)

    snapshot = metrics.snapshot("m")

    assert set(snapshot) == {"v1", "v2"}
    v2 = snapshot["v2"]
    assert (v2.version, v2.requests, v2.errors, v2.fallbacks) == ("v2", 1000, 100, 50)
    assert v2.error_rate == 0.1
    assert v2.window_s == 60.0
    assert snapshot["v1"].requests == 1
    assert snapshot["v1"].error_rate == 0.0


def test_keeps_models_apart(metrics: Metrics) -> None:
    """A snapshot holds only the versions of the model asked for."""
    metrics.record_call("a", "v1", 0.01, error=False, fell_back=False)
    metrics.record_call("b", "v1", 0.01, error=True, fell_back=False)

    assert metrics.snapshot("a")["v1"].errors == 0
    assert metrics.snapshot("b")["v1"].errors == 1
    assert metrics.snapshot("c") == {}


def test_old_slices_leave_the_window_as_time_passes(metrics: Metrics, clock: FakeClock) -> None:
    """Calls older than the window stop counting; newer ones still count."""
    metrics.record_call("m", "v1", 0.01, error=True, fell_back=False)
    clock.advance(30.0)
    for _ in range(3):
        metrics.record_call("m", "v1", 0.01, error=False, fell_back=False)

    clock.advance(29.0)
    assert metrics.snapshot("m")["v1"].requests == 4

    clock.advance(1.0)  # the first call is 60 s old: its slice is out
    snapshot = metrics.snapshot("m")["v1"]
    assert (snapshot.requests, snapshot.errors) == (3, 0)

    clock.advance(30.0)
    assert metrics.snapshot("m") == {}


def test_an_expired_slice_is_reset_when_its_place_is_reused(
    metrics: Metrics, clock: FakeClock
) -> None:
    """Recording into a ring slot whose time has passed starts it afresh."""
    for _ in range(5):
        metrics.record_call("m", "v1", 0.5, error=True, fell_back=True)
        metrics.record_outcome("m", "v1", "click", 1.0)
    clock.advance(60.0)  # same ring slot, one window later
    metrics.record_call("m", "v1", 0.001, error=False, fell_back=False)

    snapshot = metrics.snapshot("m")["v1"]

    assert (snapshot.requests, snapshot.errors, snapshot.fallbacks) == (1, 0, 0)
    assert snapshot.latency_p99 == pytest.approx(0.001, rel=0.01)
    assert dict(snapshot.outcomes) == {}


def test_memory_stays_bounded_however_long_it_runs(metrics: Metrics, clock: FakeClock) -> None:
    """An hour of traffic keeps one ring of slices per version and the last window's counts.

    The clock ends on a slice boundary, so the window holds 11 whole slices of 5 s.
    """
    for _ in range(3600):
        metrics.record_call("m", "v1", 0.01, error=False, fell_back=False)
        clock.advance(1.0)

    series = metrics._series[("m", "v1")]
    assert len(series.slices) == 12
    assert metrics.snapshot("m")["v1"].requests == 55


def test_latency_quantiles_are_within_one_percent(metrics: Metrics, clock: FakeClock) -> None:
    """p50, p95 and p99 over several slices are within 1% of the exact nearest-rank values."""
    rng = np.random.default_rng(7)
    samples = rng.lognormal(mean=np.log(2e-3), sigma=0.7, size=12_000)
    for index, value in enumerate(samples.tolist()):
        metrics.record_call("m", "v1", value, error=False, fell_back=False)
        if index % 1000 == 999:
            clock.advance(4.0)

    snapshot = metrics.snapshot("m")["v1"]

    assert snapshot.requests == 12_000
    for q, got in ((0.5, snapshot.latency_p50), (0.95, snapshot.latency_p95)):
        exact = float(np.quantile(samples, q, method="inverted_cdf"))
        assert got == pytest.approx(exact, rel=0.01)
    exact = float(np.quantile(samples, 0.99, method="inverted_cdf"))
    assert snapshot.latency_p99 == pytest.approx(exact, rel=0.01)


def test_outcomes_report_count_total_and_mean(metrics: Metrics, clock: FakeClock) -> None:
    """Outcome values are summed and averaged per name, across slices of the window."""
    for value in (1.0, 0.0, 0.0, 1.0):
        metrics.record_outcome("m", "v1", "click", value)
    clock.advance(10.0)
    metrics.record_outcome("m", "v1", "click", 1.0)
    metrics.record_outcome("m", "v1", "revenue", 2.5)

    outcomes = metrics.snapshot("m")["v1"].outcomes

    assert outcomes["click"] == OutcomeStats(count=5, total=3.0, mean=0.6)
    assert outcomes["revenue"] == OutcomeStats(count=1, total=2.5, mean=2.5)


def test_a_version_with_outcomes_only_has_no_latency(metrics: Metrics) -> None:
    """Outcomes alone put a version in the snapshot, with no requests and no quantiles."""
    metrics.record_outcome("m", "v1", "click", 1.0)

    snapshot = metrics.snapshot("m")["v1"]

    assert snapshot.requests == 0
    assert snapshot.error_rate == 0.0
    assert (snapshot.latency_p50, snapshot.latency_p95, snapshot.latency_p99) == (None,) * 3


def test_a_shorter_window_covers_only_the_newest_slices(metrics: Metrics, clock: FakeClock) -> None:
    """``snapshot(window_s=...)`` merges the newest slices only, rounded up to whole slices."""
    metrics.record_call("m", "v1", 0.01, error=True, fell_back=False)
    clock.advance(20.0)
    metrics.record_call("m", "v1", 0.01, error=False, fell_back=False)

    assert metrics.snapshot("m", window_s=10.0)["v1"].requests == 1
    assert metrics.snapshot("m", window_s=12.0)["v1"].window_s == 15.0
    assert metrics.snapshot("m", window_s=25.0)["v1"].requests == 2


def test_rejects_a_window_longer_than_the_one_kept(metrics: Metrics) -> None:
    """Asking for more history than the ring keeps is a mistake, not a silent truncation."""
    with pytest.raises(ValueError, match="at most 60"):
        metrics.snapshot("m", window_s=61.0)
    with pytest.raises(ValueError, match="positive"):
        Metrics(window_s=0)


def test_reset_forgets_a_version(metrics: Metrics) -> None:
    """After ``reset`` a version starts from nothing; the others keep their counts."""
    metrics.record_call("m", "v1", 0.01, error=True, fell_back=False)
    metrics.record_call("m", "v2", 0.01, error=True, fell_back=False)

    metrics.reset("m", "v2")
    assert set(metrics.snapshot("m")) == {"v1"}
    metrics.record_call("m", "v2", 0.01, error=False, fell_back=False)
    assert metrics.snapshot("m")["v2"].errors == 0

    metrics.reset("m")
    assert metrics.snapshot("m") == {}


@pytest.mark.slow
def test_recording_from_eight_threads_loses_nothing(metrics: Metrics, clock: FakeClock) -> None:
    """Concurrent calls and outcomes on shared and separate versions are all counted."""
    calls = 5_000
    barrier = threading.Barrier(8)

    def work(worker: int) -> None:
        barrier.wait()
        for index in range(calls):
            version = "shared" if index % 2 else f"own-{worker}"
            metrics.record_call("m", version, 0.001, error=index % 4 == 1, fell_back=False)
            metrics.record_outcome("m", "shared", "click", 1.0)
            if worker == 0 and index % 1000 == 0:
                clock.advance(0.5)  # slices roll over while others record

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    snapshot = metrics.snapshot("m")
    assert snapshot["shared"].requests == 8 * calls // 2
    assert snapshot["shared"].errors == 8 * calls // 4
    assert snapshot["shared"].outcomes["click"].count == 8 * calls
    for worker in range(8):
        assert snapshot[f"own-{worker}"].requests == calls // 2


def test_fits_the_recorder_protocol(metrics: Metrics) -> None:
    """``Metrics`` is a ``MetricsRecorder``, and its snapshot values are frozen."""
    recorder: MetricsRecorder = metrics
    recorder.record_call("m", "v1", 0.01, error=False, fell_back=False)
    snapshot = metrics.snapshot("m")["v1"]
    assert isinstance(snapshot, VersionMetrics)
    with pytest.raises(AttributeError):
        snapshot.requests = 3  # type: ignore[misc]


# -- running totals (the guardrails' sequential tests read them) --------------------------------


def test_running_totals_keep_everything_since_the_series_started(
    metrics: Metrics, clock: FakeClock
) -> None:
    """Unlike the window, the totals forget nothing: calls, errors, skipped calls, latency
    buckets and sums, and each outcome's count, sum, sum of squares and whether it is 0/1."""
    for index in range(100):
        metrics.record_call("m", "v2", 0.01 * (1 + index % 2), index < 5, index >= 90)
        metrics.record_outcome("m", "v2", "click", float(index % 4 == 0))
    metrics.record_outcome("m", "v2", "revenue", 2.5)
    clock.advance(3600.0)

    totals = metrics.totals("m", "v2")

    assert totals is not None and metrics.snapshot("m") == {}
    assert (totals.requests, totals.errors, totals.skipped, totals.fallbacks) == (100, 5, 10, 10)
    assert totals.ran == 90 and totals.errors_counts.rate == pytest.approx(5 / 90)
    assert sum(totals.latency.values()) == totals.latency_moments.count == 90
    assert totals.latency_moments.total == pytest.approx(45 * 0.01 + 45 * 0.02)
    click = totals.outcomes["click"]
    assert (click.moments.count, click.moments.total, click.binary) == (100, 25.0, True)
    revenue = totals.outcomes["revenue"]
    assert (revenue.moments.total_sq, revenue.binary) == (6.25, False)
    assert totals.started == 1000.0
    assert metrics.totals("m", "v9") is None


def test_a_comparison_covers_the_same_period_on_both_sides(
    metrics: Metrics, clock: FakeClock
) -> None:
    """The LKG's calls before the candidate's first one are left out of the comparison; a
    version reset since starts over on its side."""
    for _ in range(500):
        metrics.record_call("m", "v1", 0.01, False, False)
    clock.advance(10.0)
    for _ in range(30):
        metrics.record_call("m", "v2", 0.01, False, False)
        metrics.record_call("m", "v1", 0.01, True, False)

    candidate, baseline = metrics.comparison("m", "v2", "v1")

    assert (candidate.requests, baseline.requests, baseline.errors) == (30, 30, 30)
    assert candidate.started == 1010.0
    metrics.reset("m", "v1")
    metrics.record_call("m", "v1", 0.01, False, False)
    assert metrics.comparison("m", "v2", "v1")[1].requests == 1
    assert metrics.comparison("m", "v3", "v1")[0].requests == 0


def test_the_baseline_counts_alongside_only_while_the_candidate_runs(metrics: Metrics) -> None:
    """Calls the LKG runs while the candidate's last call was answered by the LKG (quarantine)
    are not in its ``alongside`` counts: the error-rate comparison weighs both over the same
    time."""
    metrics.record_call("m", "v2", 0.01, False, False)  # the candidate runs
    for _ in range(10):
        metrics.record_call("m", "v1", 0.01, False, False)
    metrics.record_call("m", "v2", 0.01, True, True)  # it fails: the LKG answers
    metrics.record_call("m", "v2", 0.0, False, True)  # quarantined: skipped
    for _ in range(5):
        metrics.record_call("m", "v1", 0.01, True, False)
    metrics.record_call("m", "v2", 0.01, False, False)  # running again
    metrics.record_call("m", "v1", 0.01, True, False)

    _, baseline = metrics.comparison("m", "v2", "v1")

    assert (baseline.requests, baseline.errors) == (16, 6)
    assert baseline.alongside is not None
    assert (baseline.alongside.trials, baseline.alongside.events) == (11, 1)

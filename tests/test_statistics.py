"""Sequential guardrail statistics: boundaries, intervals, tolerance semantics, alpha, bad input,
and small seeded simulations of false alarms (the benchmark runs the large ones)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np
import pytest

from modelflags.rollout.sequential import (
    SHIFTS,
    binomial_log_evalue,
    binomial_lower,
    binomial_upper,
    exceedance_threshold,
    mixture_threshold,
)
from modelflags.rollout.statistics import (
    AlphaSplit,
    Counts,
    Evidence,
    MeanComparison,
    Moments,
    QuantileComparison,
    QuantileLimit,
    RateComparison,
    RateLimit,
    latency_bucket_bounds,
    latency_bucket_index,
    split_alpha,
)
from modelflags.telemetry.histogram import LatencyHistogram

# -- the boundaries -----------------------------------------------------------------------------


@pytest.mark.parametrize("alpha", [0.05, 0.01])
@pytest.mark.parametrize("information", [10.0, 1e3, 1e6])
def test_mixture_threshold_is_where_the_half_normal_mixture_reaches_one_over_alpha(
    alpha: float, information: float
) -> None:
    """The mixture of exp(theta S - theta^2 V / 2) over a half-normal, integrated numerically,
    equals 1 / alpha at the boundary the closed form gives."""
    scale = 0.1
    threshold = mixture_threshold(information, alpha, scale)
    total = threshold * math.sqrt(information)  # S at the boundary
    theta = np.linspace(0.0, 12.0 * scale, 200_001)
    density = 2.0 * np.exp(-0.5 * (theta / scale) ** 2) / (scale * math.sqrt(2.0 * math.pi))
    log_terms = theta * total - 0.5 * theta**2 * information
    top = log_terms.max()
    values = density * np.exp(log_terms - top)
    integral = float(np.sum((values[1:] + values[:-1]) * np.diff(theta)) / 2.0)
    assert math.log(integral) + top == pytest.approx(math.log(1.0 / alpha), abs=1e-4)


def test_mixture_threshold_grows_as_alpha_shrinks_and_is_infinite_without_information() -> None:
    """A smaller alpha asks for more evidence; no information gives no boundary at all."""
    assert mixture_threshold(100.0, 0.01, 0.1) > mixture_threshold(100.0, 0.05, 0.1)
    assert mixture_threshold(0.0, 0.05, 0.1) == math.inf


def test_binomial_evalue_is_the_mean_of_likelihood_ratios_of_shifted_log_odds() -> None:
    """Each term is the likelihood ratio of logit(p0) + shift against p0."""
    events, trials, p0 = 7, 400, 0.01

    def ratio(shift: float) -> float:
        odds = p0 / (1 - p0) * math.exp(shift)
        p1 = odds / (1 + odds)
        return (p1 / p0) ** events * ((1 - p1) / (1 - p0)) ** (trials - events)

    for upward, sign in ((True, 1.0), (False, -1.0)):
        expected = sum(ratio(sign * shift) for shift in SHIFTS) / len(SHIFTS)
        value = binomial_log_evalue(events, trials, p0, upward=upward)
        assert math.exp(value) == pytest.approx(expected, rel=1e-9)


def test_binomial_bounds_are_wider_than_the_exact_fixed_sample_bounds() -> None:
    """With no event in n draws the one-sided exact bound is 1 - alpha^(1/n); a bound valid at
    every n at once must be wider, yet within a small factor of it."""
    for trials in (10, 1_000, 100_000):
        exact = 1.0 - 0.05 ** (1.0 / trials)
        upper = binomial_upper(0, trials, 0.05)
        assert exact < upper < 4.0 * exact
        assert binomial_lower(trials, trials, 0.05) < 0.05 ** (1.0 / trials)


def test_binomial_bounds_sit_where_the_evalue_crosses_one_over_alpha() -> None:
    """The lower bound is rejected and a point just above it is not; likewise the upper."""
    events, trials, alpha = 30, 20_000, 0.05
    lower, upper = binomial_lower(events, trials, alpha), binomial_upper(events, trials, alpha)
    assert lower < events / trials < upper
    level = math.log(1 / alpha)
    assert binomial_log_evalue(events, trials, lower, upward=True) >= level
    assert binomial_log_evalue(events, trials, lower * 1.001, upward=True) < level
    assert binomial_log_evalue(events, trials, upper, upward=False) >= level
    assert binomial_log_evalue(events, trials, upper / 1.001, upward=False) < level


def test_binomial_bounds_shrink_monotonically_as_data_grow() -> None:
    """At a fixed rate, every quadrupling of the data narrows the interval."""
    widths = [
        binomial_upper(n // 100, n, 0.05) - binomial_lower(n // 100, n, 0.05)
        for n in (1_000, 4_000, 16_000, 64_000, 256_000)
    ]
    assert all(later < earlier for earlier, later in itertools.pairwise(widths))
    assert widths[-1] < 0.25 * widths[0]


def test_binomial_bounds_know_nothing_without_data() -> None:
    """No events: the lower bound is 0; no trials: the upper bound is 1."""
    assert binomial_lower(0, 500, 0.05) == 0.0
    assert binomial_upper(0, 0, 0.05) == 1.0


@pytest.mark.parametrize("upward", [True, False])
def test_exceedance_threshold_is_the_first_count_the_evalue_rejects(upward: bool) -> None:
    """Against a brute-force scan of every count, for small and moderate trials."""
    level = math.log(1 / 0.025)
    for trials in (0, 5, 60, 200, 1_500):
        rejected = [
            count
            for count in range(trials + 1)
            if binomial_log_evalue(count, trials, 0.05, upward=upward) >= level
        ]
        if upward:
            expected = min(rejected) if rejected else trials + 1
        else:
            expected = max(rejected) if rejected else -1
        assert exceedance_threshold(trials, 0.05, 0.025, upward=upward) == expected


# -- means --------------------------------------------------------------------------------------


def click(tolerance: float = 0.05, alpha: float = 0.05) -> MeanComparison:
    return MeanComparison("click", tolerance, alpha=alpha, binary=True)


def test_mean_interval_matches_the_boundary_on_a_large_known_case() -> None:
    """With ten million values a side the interval is the estimate plus or minus the boundary
    times the delta-method standard error of the ratio."""
    n = 10_000_000
    candidate, baseline = Moments.binary(n, int(0.04 * n)), Moments.binary(n, int(0.05 * n))
    evidence = click().evaluate(candidate, baseline)
    assert evidence.estimate == pytest.approx(-0.2)
    error = math.sqrt(0.04 * 0.96 / n + 0.8**2 * 0.05 * 0.95 / n) / 0.05
    threshold = mixture_threshold(1.0 / error**2, 0.05, 0.1)
    assert evidence.upper - evidence.estimate == pytest.approx(threshold * error, rel=0.02)
    assert evidence.estimate - evidence.lower == pytest.approx(threshold * error, rel=0.02)
    assert evidence.breached and evidence.decided


def test_mean_interval_shrinks_monotonically_and_stays_around_the_estimate() -> None:
    """The same rates on four times the traffic give a narrower interval, each time."""
    widths = []
    for n in (2_000, 8_000, 32_000, 128_000, 512_000):
        evidence = click().evaluate(Moments.binary(n, n // 20), Moments.binary(9 * n, 9 * n // 20))
        assert evidence.lower < 0.0 < evidence.upper
        widths.append(evidence.upper - evidence.lower)
    assert all(later < earlier for earlier, later in itertools.pairwise(widths))


def test_mean_comparison_breaches_only_when_the_whole_interval_is_beyond_the_tolerance() -> None:
    """Across candidate rates from far better to far worse, breached == (upper < -tolerance),
    and an estimate beyond the tolerance alone is not a breach."""
    test = click(tolerance=0.05)
    baseline = Moments.binary(200_000, 10_000)
    seen = set()
    for clicks in range(1_200, 2_300, 25):
        evidence = test.evaluate(Moments.binary(40_000, clicks), baseline)
        assert evidence.decided
        assert evidence.breached == (evidence.upper < -0.05)
        assert evidence.lower <= evidence.estimate <= evidence.upper  # type: ignore[operator]
        seen.add((evidence.breached, evidence.estimate < -0.05))  # type: ignore[operator]
    assert seen == {(True, True), (False, True), (False, False)}


def test_mean_comparison_on_costs_breaches_when_the_interval_is_above_the_tolerance() -> None:
    """Latency means: higher is worse; 30% slower on plenty of data breaches a 10% tolerance,
    5% slower does not."""
    rng = np.random.default_rng(3)

    def moments(values: np.ndarray) -> Moments:
        return Moments(len(values), float(values.sum()), float((values**2).sum()))

    base = rng.lognormal(np.log(0.02), 0.5, 50_000)
    test = MeanComparison("latency", 0.10, worse="higher")
    slow = test.evaluate(moments(1.3 * rng.lognormal(np.log(0.02), 0.5, 5_000)), moments(base))
    fine = test.evaluate(moments(1.05 * rng.lognormal(np.log(0.02), 0.5, 5_000)), moments(base))
    assert slow.breached and slow.lower > 0.10 and slow.limit == 0.10
    assert not fine.breached and fine.lower <= 0.10


def test_binary_means_give_no_verdict_before_enough_expected_events() -> None:
    """One click in 20 impressions against 5% is no evidence either way: no verdict, an
    infinite interval, and a note saying what is missing."""
    evidence = click().evaluate(Moments.binary(20, 0), Moments.binary(900, 45))
    assert not evidence.decided and not evidence.breached
    assert (evidence.lower, evidence.upper) == (-math.inf, math.inf)
    assert "expected events" in evidence.note


def test_a_broken_candidate_with_no_clicks_at_all_is_still_judged() -> None:
    """The guard counts the events expected under the tolerance, not those observed: a candidate
    that stopped converting altogether breaches."""
    evidence = click().evaluate(Moments.binary(5_000, 0), Moments.binary(45_000, 2_250))
    assert evidence.decided and evidence.breached
    assert evidence.estimate == -1.0


def test_continuous_means_give_no_verdict_on_small_or_constant_samples() -> None:
    """Fewer values than min_count, no variation at all, or a baseline mean of zero."""
    test = MeanComparison("revenue", 0.05)
    few = test.evaluate(Moments(10, 5.0, 5.0), Moments(1_000, 500.0, 600.0))
    flat = test.evaluate(Moments(100, 100.0, 100.0), Moments(1_000, 1_000.0, 1_000.0))
    zero = test.evaluate(Moments(100, 10.0, 10.0), Moments(1_000, 0.0, 0.0))
    assert [e.decided for e in (few, flat, zero)] == [False, False, False]
    assert "50 values" in few.note and "variation" in flat.note and "positive" in zero.note


def test_a_candidate_of_only_zeros_is_judged_with_the_baselines_variance() -> None:
    """Revenue is mostly zeros: 60 calls without a sale have a sample variance of zero, and
    judging them on it alone would call a confident drop; the variance floor does not."""
    rng = np.random.default_rng(11)
    amounts = np.where(rng.random(20_000) < 0.05, rng.lognormal(3.0, 1.5, 20_000), 0.0)
    baseline = Moments(len(amounts), float(amounts.sum()), float((amounts**2).sum()))
    evidence = MeanComparison("revenue", 0.05).evaluate(Moments(60, 0.0, 0.0), baseline)
    assert evidence.decided and not evidence.breached
    assert evidence.estimate == -1.0 and evidence.upper > -0.05


# -- rates --------------------------------------------------------------------------------------


def test_rate_monitor_breaches_on_a_tripled_error_rate_but_not_on_equal_rates() -> None:
    """Ten-second counts of a 10% canary: 0.3% against 0.1% breaches a 50% tolerance within
    half an hour; equal rates do not over the same time."""
    rng = np.random.default_rng(5)
    for factor, expected in ((3.0, True), (1.0, False)):
        monitor = RateComparison("errors", relative=0.5).start()
        totals = [0, 0, 0, 0]
        breached = False
        for _ in range(180):  # ten-second checks for half an hour
            calls_c, calls_b = rng.poisson(167), rng.poisson(1500)
            totals[0] += calls_c
            totals[1] += rng.binomial(calls_c, 0.001 * factor)
            totals[2] += calls_b
            totals[3] += rng.binomial(calls_b, 0.001)
            evidence = monitor.update(Counts(*totals[:2]), Counts(*totals[2:]))
            assert evidence.breached == (evidence.lower > 0.5)
            breached = breached or evidence.breached
        assert breached == expected


def test_one_early_error_is_no_evidence_of_an_increase() -> None:
    """One error on a 1% canary, none on the baseline: by chance alone it lands on the candidate
    one time in a hundred, far from the 1 / alpha the test asks for (a normal approximation of
    the difference of rates would call it a 10-sigma event)."""
    monitor = RateComparison("errors", relative=0.0).start()
    evidence = monitor.update(Counts(50, 1), Counts(4_950, 0))
    assert evidence.decided and not evidence.breached
    assert evidence.lower < 0.0 < evidence.upper
    # The same error with one on the baseline too carries even less.
    assert not monitor.update(Counts(100, 1), Counts(9_900, 1)).breached


def test_rate_bounds_hold_the_estimate_and_narrow_with_data() -> None:
    """Equal rates, growing counts: the interval around a zero change narrows."""
    monitor = RateComparison("errors", relative=0.5).start()
    widths = []
    for step in range(1, 6):
        evidence = monitor.update(
            Counts(10_000 * step, 20 * step), Counts(90_000 * step, 180 * step)
        )
        assert evidence.lower < evidence.estimate < evidence.upper  # type: ignore[operator]
        widths.append(evidence.upper - evidence.lower)
    assert all(later < earlier for earlier, later in itertools.pairwise(widths))


def test_relative_and_absolute_tolerances_both_must_be_exceeded() -> None:
    """Doubled errors at a tiny base rate pass a 50% relative tolerance but not an absolute one
    of 0.1 point; the absolute test alone speaks in differences of rates."""
    candidate, baseline = Counts(1_000_000, 400), Counts(9_000_000, 1_800)
    relative = RateComparison("errors", relative=0.5).start().update(candidate, baseline)
    both = (
        RateComparison("errors", relative=0.5, absolute=0.001).start().update(candidate, baseline)
    )
    absolute = RateComparison("errors", absolute=0.001).start().update(candidate, baseline)
    assert relative.breached and not both.breached and not absolute.breached
    assert "difference of rates" in both.note
    assert absolute.quantity == "difference of rates" and absolute.upper < 0.001


def test_rate_monitor_refuses_counts_that_go_down_or_errors_without_calls() -> None:
    """A restarted count needs a new monitor; errors cannot grow where no call ran."""
    monitor = RateComparison("errors", relative=0.5).start()
    monitor.update(Counts(100, 1), Counts(1_000, 2))
    with pytest.raises(ValueError, match="went down"):
        monitor.update(Counts(90, 1), Counts(1_000, 2))
    with pytest.raises(ValueError, match="no call"):
        monitor.update(Counts(100, 2), Counts(1_100, 2))


def test_rate_limit_breaches_when_confidently_above_the_limit() -> None:
    """An SLO of 2%: 1 error in 10 calls is no evidence; 60 in 1,000 is."""
    limit = RateLimit("errors", 0.02)
    early = limit.evaluate(Counts(10, 1))
    late = limit.evaluate(Counts(1_000, 60))
    assert early.decided and not early.breached
    assert late.breached and late.lower > 0.02 and late.baseline_count == 0
    assert not limit.evaluate(Counts(0, 0)).decided


# -- quantiles ----------------------------------------------------------------------------------


def buckets(values: np.ndarray) -> dict[int, int]:
    indices = [latency_bucket_index(value) for value in values.tolist()]
    counts: dict[int, int] = {}
    for index in indices:
        counts[index] = counts.get(index, 0) + 1
    return counts


def test_latency_buckets_have_the_layout_of_latency_histogram() -> None:
    """Every value lies within the bounds of its bucket, and the nearest-rank estimate is the
    quantile LatencyHistogram reports."""
    rng = np.random.default_rng(2)
    values = rng.lognormal(np.log(0.02), 0.8, 5_000)
    histogram = LatencyHistogram()
    for value in values.tolist():
        histogram.add(value)
        low, high = latency_bucket_bounds(latency_bucket_index(value))
        assert low <= value <= high
    counts = buckets(values)
    for q in (0.5, 0.9, 0.95, 0.99):
        test = QuantileComparison("latency", 0.1, quantile=q)
        evidence = test.evaluate(counts, counts)
        assert evidence.estimate == pytest.approx(0.0, abs=1e-12)
        reported = histogram.quantile(q)
        assert reported is not None
        estimate = test.evaluate(counts, {latency_bucket_index(reported): 1}).estimate
        assert estimate is not None and abs(estimate) < 0.011


def test_quantile_bounds_cover_the_true_p95_and_breach_on_a_real_slowdown() -> None:
    """On 20,000 lognormal latencies a side the interval holds the true change; a 30% slowdown
    breaches a 10% tolerance and an unchanged version does not."""
    rng = np.random.default_rng(4)
    base = buckets(rng.lognormal(np.log(0.02), 0.5, 20_000))
    test = QuantileComparison("latency", 0.10)
    slow = test.evaluate(buckets(1.3 * rng.lognormal(np.log(0.02), 0.5, 20_000)), base)
    same = test.evaluate(buckets(rng.lognormal(np.log(0.02), 0.5, 20_000)), base)
    assert slow.lower < 0.3 < slow.upper and slow.breached
    assert same.lower < 0.0 < same.upper and not same.breached
    assert slow.quantity == "relative change of p95"


def test_quantile_limit_breaches_only_when_the_lower_bound_passes_the_limit() -> None:
    """p95 of lognormal latencies is 45.5 ms: a 40 ms limit is breached on 5,000 calls, a 50 ms
    one is not, and a handful of calls decides nothing either way."""
    rng = np.random.default_rng(6)
    counts = buckets(rng.lognormal(np.log(0.02), 0.5, 5_000))
    tight = QuantileLimit("p95", 0.040).evaluate(counts)
    loose = QuantileLimit("p95", 0.050).evaluate(counts)
    few = QuantileLimit("p95", 0.040).evaluate(buckets(rng.lognormal(np.log(0.02), 0.5, 5)))
    assert tight.breached and tight.lower > 0.040 and tight.quantity == "p95"
    assert not loose.breached and loose.lower < 0.0455 < loose.upper
    assert few.decided and not few.breached and few.upper == math.inf
    assert not QuantileLimit("p95", 0.04).evaluate({}).decided
    assert "Howard & Ramdas" in tight.method


@pytest.mark.slow
def test_quantile_limit_false_alarms_stay_within_alpha_at_the_limit() -> None:
    """The true p95 exactly at the limit, checked after every 200 calls up to 6,000: breaches
    in at most alpha of 60 runs (the bounds are exact; this guards against gross errors)."""
    rng = np.random.default_rng(105)
    limit = 0.02 * math.exp(0.5 * 1.6448536269514722)
    test = QuantileLimit("p95", limit, alpha=ALPHA)
    alarms = 0
    for _ in range(60):
        counts: dict[int, int] = {}
        breached = False
        for _ in range(30):
            for index, count in buckets(rng.lognormal(np.log(0.02), 0.5, 200)).items():
                counts[index] = counts.get(index, 0) + count
            breached = breached or test.evaluate(counts).breached
        alarms += breached
    assert alarms <= margin(60)


@pytest.mark.slow
def test_rates_apart_bound_each_side_on_its_own_and_keep_alpha() -> None:
    """``evaluate_apart`` (a baseline that no longer grows) breaches on a doubled rate, holds
    on an equal one, and in 120 simulated comparisons of equal rates at the tolerance's edge it
    breaches in at most alpha of them."""
    test = RateComparison("errors", alpha=0.05, relative=0.5)
    doubled = test.evaluate_apart(Counts(50_000, 1_000), Counts(50_000, 500))
    equal = test.evaluate_apart(Counts(50_000, 500), Counts(50_000, 500))
    assert doubled.breached and doubled.lower > 0.5
    assert not equal.breached and equal.lower < 0.0 < equal.upper < 0.5
    assert not test.evaluate_apart(Counts(0, 0), Counts(10, 1)).decided
    both = RateComparison("errors", alpha=0.05, relative=0.5, absolute=0.02)
    assert not both.evaluate_apart(Counts(50_000, 1_000), Counts(50_000, 500)).breached

    rng = np.random.default_rng(106)
    at_edge = RateComparison("errors", alpha=ALPHA, relative=0.5)
    alarms = 0
    for _ in range(120):
        before = Counts(20_000, int(rng.binomial(20_000, 0.01)))
        trials = events = 0
        breached = False
        for _ in range(20):
            trials += 1_000
            events += int(rng.binomial(1_000, 0.015))
            breached = breached or at_edge.evaluate_apart(Counts(trials, events), before).breached
        alarms += breached
    assert alarms <= margin(120)


def test_quantile_comparison_gives_no_verdict_without_latencies_on_both_sides() -> None:
    evidence = QuantileComparison("latency", 0.1).evaluate({}, {100: 5})
    assert not evidence.decided and not evidence.breached and evidence.estimate is None


# -- alpha --------------------------------------------------------------------------------------


def test_split_alpha_shares_equally_or_by_weight_and_keeps_the_total() -> None:
    equal = split_alpha(0.05, ["click", "errors", "latency"])
    weighted = split_alpha(0.05, {"click": 2.0, "errors": 1.0, "latency": 1.0})
    assert isinstance(equal, AlphaSplit)
    assert dict(equal.shares) == pytest.approx({rule: 0.05 / 3 for rule in equal.shares})
    assert weighted.shares["click"] == pytest.approx(0.025)
    assert math.fsum(weighted.shares.values()) == pytest.approx(0.05)
    explanation = weighted.explain()
    assert "Bonferroni" in explanation and "click 0.025" in explanation


@pytest.mark.parametrize(
    ("alpha", "rules", "message"),
    [
        (0.0, ["a"], "alpha"),
        (1.0, ["a"], "alpha"),
        (float("nan"), ["a"], "alpha"),
        (True, ["a"], "alpha"),
        (0.05, [], "at least one rule"),
        (0.05, ["a", "a"], "twice"),
        (0.05, "ab", "string"),
        (0.05, {"a": 0.0}, "positive"),
        (0.05, {"a": float("nan")}, "positive"),
        (0.05, {"": 1.0}, "non-empty"),
    ],
)
def test_split_alpha_refuses_bad_input(alpha: float, rules: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        split_alpha(alpha, rules)  # type: ignore[arg-type]


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: MeanComparison("click", 0.05, alpha=0.0), "alpha"),
        (lambda: MeanComparison("click", 0.05, alpha=1.5), "alpha"),
        (lambda: MeanComparison("click", 0.05, alpha=float("nan")), "alpha"),
        (lambda: MeanComparison("click", 1.0), "tolerance"),
        (lambda: MeanComparison("click", -0.1), "tolerance"),
        (lambda: MeanComparison("click", float("nan")), "tolerance"),
        (lambda: MeanComparison("click", 0.05, worse="sideways"), "worse"),  # type: ignore[arg-type]
        (lambda: MeanComparison("click", 0.05, scale=0.0), "scale"),
        (lambda: RateComparison("errors"), "relative tolerance, an absolute one"),
        (lambda: RateComparison("errors", relative=-1.0), "relative"),
        (lambda: RateComparison("errors", absolute=1.0), "absolute"),
        (lambda: RateLimit("errors", 0.02, alpha=-0.1), "alpha"),
        (lambda: QuantileComparison("latency", 0.1, quantile=1.0), "quantile"),
    ],
)
def test_tests_refuse_bad_settings(build: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize(
    ("candidate", "message"),
    [
        (Moments(-1, 0.0, 0.0), "non-negative integer"),
        (Moments(10, float("nan"), 1.0), "finite"),
        (Moments(10, 1.0, -1.0), "non-negative"),
        (Moments(0, 1.0, 1.0), "must be zero"),
        (Moments(10, 11.0, 11.0), "events"),
    ],
)
def test_mean_comparison_refuses_sums_no_sample_could_have(
    candidate: Moments, message: str
) -> None:
    with pytest.raises(ValueError, match=f"click: candidate.*{message}|{message}"):
        click().evaluate(candidate, Moments.binary(100, 5))


@pytest.mark.parametrize(
    "counts",
    [Counts(-1, 0), Counts(10, -1), Counts(10, 11), Counts(10, 1.5)],  # type: ignore[arg-type]
)
def test_rate_tests_refuse_counts_that_cannot_be(counts: Counts) -> None:
    with pytest.raises(ValueError, match="errors: candidate"):
        RateLimit("errors", 0.02).evaluate(counts)
    with pytest.raises(ValueError, match="errors: candidate"):
        RateComparison("errors", relative=0.5).start().update(counts, Counts(10, 0))


def test_quantile_comparison_refuses_negative_counts_and_unknown_buckets() -> None:
    test = QuantileComparison("latency", 0.1)
    with pytest.raises(ValueError, match="non-negative integer"):
        test.evaluate({100: -1}, {100: 1})
    with pytest.raises(ValueError, match="bucket index"):
        test.evaluate({-3: 1}, {100: 1})


def test_evidence_summary_names_the_rule_the_interval_and_the_verdict() -> None:
    evidence = click().evaluate(Moments.binary(100_000, 4_000), Moments.binary(100_000, 5_000))
    assert isinstance(evidence, Evidence)
    line = evidence.summary()
    assert line.startswith("click: relative change of the mean -0.2 in [")
    assert line.endswith(": breach")


# -- false alarms by simulation ------------------------------------------------------------------
#
# Each simulation runs a staged canary (1%, 10%, 50% of 10,000 requests a minute, five minutes
# each, checked every minute) with the candidate worse by exactly the tolerance, the hardest
# case the guarantee covers, at alpha = 0.2 so that a rate near alpha is measurable with a few
# hundred canaries. A calibrated test stays below alpha * N + 3 sqrt(N alpha (1 - alpha)) (a
# binomial count above it has a chance below 0.2%): a test that fired at twice its alpha fails.

ALPHA = 0.2
SHARES = np.repeat([0.01, 0.10, 0.50], 5)  # the candidate's share at each one-minute check
PER_CHECK = 10_000  # requests a minute


def margin(canaries: int) -> float:
    return ALPHA * canaries + 3.0 * math.sqrt(canaries * ALPHA * (1.0 - ALPHA))


def calls(rng: np.random.Generator, canaries: int) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative calls of each arm at each check."""
    candidate = rng.poisson(PER_CHECK * SHARES, size=(canaries, len(SHARES)))
    baseline = rng.poisson(PER_CHECK * (1 - SHARES), size=(canaries, len(SHARES)))
    return candidate, baseline


def fired(judge: Callable[[int, int], bool], canaries: int) -> int:
    return sum(
        any(judge(canary, check) for check in range(len(SHARES))) for canary in range(canaries)
    )


@pytest.mark.slow
def test_binary_mean_false_alarms_stay_within_alpha_at_the_tolerance() -> None:
    """A 5% click rate against one 5% lower, tolerance 5%: 250 staged canaries."""
    rng = np.random.default_rng(101)
    canaries = 250
    n_c, n_b = calls(rng, canaries)
    x_c, x_b = rng.binomial(n_c, 0.05 * 0.95), rng.binomial(n_b, 0.05)
    n_c, n_b, x_c, x_b = (np.cumsum(a, axis=1) for a in (n_c, n_b, x_c, x_b))
    test = click(alpha=ALPHA)

    def judge(canary: int, check: int) -> bool:
        return test.evaluate(
            Moments.binary(int(n_c[canary, check]), int(x_c[canary, check])),
            Moments.binary(int(n_b[canary, check]), int(x_b[canary, check])),
        ).breached

    assert fired(judge, canaries) <= margin(canaries)


@pytest.mark.slow
def test_heavy_tailed_mean_false_alarms_stay_within_alpha_at_the_tolerance() -> None:
    """Revenue: 5% of calls pay a lognormal(3, 1.5) amount; the candidate pays 5% less."""
    rng = np.random.default_rng(102)
    canaries = 150
    n_c, n_b = calls(rng, canaries)
    sums = {}
    for arm, counts, scale in (("c", n_c, 0.95), ("b", n_b, 1.0)):
        paying = rng.binomial(counts, 0.05)
        amounts = scale * rng.lognormal(3.0, 1.5, int(paying.sum()))
        owner = np.repeat(np.arange(paying.size), paying.ravel())
        for name, values in (("sum", amounts), ("sq", amounts**2)):
            per = np.bincount(owner, weights=values, minlength=paying.size).reshape(paying.shape)
            sums[name + arm] = np.cumsum(per, axis=1)
    n_c, n_b = np.cumsum(n_c, axis=1), np.cumsum(n_b, axis=1)
    test = MeanComparison("revenue", 0.05, alpha=ALPHA)

    def judge(canary: int, check: int) -> bool:
        return test.evaluate(
            Moments(
                int(n_c[canary, check]), sums["sumc"][canary, check], sums["sqc"][canary, check]
            ),
            Moments(
                int(n_b[canary, check]), sums["sumb"][canary, check], sums["sqb"][canary, check]
            ),
        ).breached

    assert fired(judge, canaries) <= margin(canaries)


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.001, 0.02])
def test_error_rate_false_alarms_stay_within_alpha_with_no_tolerance(rate: float) -> None:
    """Identical error rates (0.1% and 2%) and a rule that tolerates no increase at all."""
    rng = np.random.default_rng(103)
    canaries = 150
    n_c, n_b = calls(rng, canaries)
    x_c, x_b = rng.binomial(n_c, rate), rng.binomial(n_b, rate)
    n_c, n_b, x_c, x_b = (np.cumsum(a, axis=1) for a in (n_c, n_b, x_c, x_b))
    comparison = RateComparison("errors", alpha=ALPHA, relative=0.0)
    alarms = 0
    for canary in range(canaries):
        monitor = comparison.start()
        alarms += any(
            monitor.update(
                Counts(int(n_c[canary, check]), int(x_c[canary, check])),
                Counts(int(n_b[canary, check]), int(x_b[canary, check])),
            ).breached
            for check in range(len(SHARES))
        )
    assert alarms <= margin(canaries)


@pytest.mark.slow
def test_p95_false_alarms_stay_within_alpha_at_the_tolerance() -> None:
    """Lognormal latencies, the candidate's 10% slower, tolerance 10%: 40 canaries (the p95
    test is exact and conservative; this guards against gross errors)."""
    rng = np.random.default_rng(104)
    canaries, checks = 40, len(SHARES)
    shares = SHARES
    test = QuantileComparison("latency", 0.10, alpha=ALPHA)
    growth = math.log(1.01)
    alarms = 0
    for _ in range(canaries):
        totals: list[dict[int, int]] = [{}, {}]
        breached = False
        for check in range(checks):
            for arm, (share, scale) in enumerate(((shares[check], 1.1), (1 - shares[check], 1.0))):
                values = scale * rng.lognormal(np.log(0.02), 0.5, rng.poisson(PER_CHECK * share))
                indices = (np.log(values / 1e-6) / growth).astype(int) + 1
                for index, count in zip(*np.unique(indices, return_counts=True), strict=True):
                    totals[arm][int(index)] = totals[arm].get(int(index), 0) + int(count)
            breached = breached or test.evaluate(totals[0], totals[1]).breached
        alarms += breached
    assert alarms <= margin(canaries)

"""Guardrail statistics by simulation: false rollbacks of identical versions, and time to detect.

Simulates canaries second by second (counts drawn directly per second, not per request), checks
every second, and prints one markdown table that sets the sequential tests of
:mod:`modelflags.rollout.statistics` beside the threshold rule the guardrails used before them
(``min_requests = 200``, ``sustained_s = 60``, ``window_s = 60``):

- the A/A false-rollback rate over 1,000 canaries (two identical versions; target: at most
  alpha), for a 5% click rate, a 0.1% and a 2% error rate, lognormal latency (p95) and
  heavy-tailed revenue (mostly zeros), at alpha 0.05 and 0.01;
- the same where the candidate is worse by exactly the tolerance (the hardest case the
  guarantee covers: a rule that holds may sit right at its limit), and revenue without the
  variance floor of :class:`~modelflags.rollout.means.MeanComparison`, to show why it is there;
- time to detect: a 15% drop of a 5% conversion rate, a 5% drop (within the tolerance: it must
  not fire), a tripled 0.1% error rate, and p95 latency 20% higher, on a fixed 10% canary:
  median and 90th percentile.

Traffic is 10,000 requests a minute (Poisson), split by the candidate's share: stages of 1%,
10%, 50% and 100% for 10 minutes each, or a fixed 10% for 60 minutes.

How it stays fast and still judges with the package's own code: numpy draws the traffic; for
the tests of means it computes, for every canary and second, a *screen*, a condition every
breach implies (a proven bound: the normal-mixture boundary is at least
``sqrt(2 K (1 + 1 / x))``), and ``MeanComparison.evaluate`` runs at the screened seconds only,
in order, the first breach being the firing time. The error-rate and p95 tests are replicated
with numpy and checked against the package in the same run: ``RateMonitor.update`` fed second
by second on two canaries of each row, the threshold tables against
:func:`~modelflags.rollout.sequential.exceedance_threshold`, ``QuantileComparison.evaluate`` at
sampled seconds. The earlier threshold rule is replicated with numpy too; it was checked against
the ``Guardrails`` of those releases, fed call by call, until the sequential tests replaced it.
``bench_guardrails_end_to_end.py`` checks that today's ``Guardrails`` fires exactly when these
replicas do, and measures a model with several rules sharing its alpha.

Reuse (e.g. a fleet benchmark: four processes deciding on their own traffic against one
decision on the pooled traffic): :func:`simulate` draws one process's traffic as a
:class:`Series` of per-second cumulative sums (``a + b`` pools two processes), and
:func:`fire_times` says when a test (a package test object or an :class:`OldRule`) first fires
on each canary of a series (``inf``: never).

Run: ``python benchmarks/bench_guardrail_stats.py [--seed N] [--canaries N]`` (about 40 s of
CPU; the p95 rows take half of it).
"""

from __future__ import annotations

import argparse
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from modelflags.rollout.rates import OFFSETS, STEP
from modelflags.rollout.sequential import SHIFTS, exceedance_threshold, mixture_threshold
from modelflags.rollout.statistics import (
    Counts,
    MeanComparison,
    Moments,
    QuantileComparison,
    RateComparison,
    latency_bucket_bounds,
    latency_bucket_index,
)

REQUESTS_PER_S = 10_000 / 60

# -- canary shapes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """How the candidate's share of traffic changes: ``(share, seconds)`` stages, in order."""

    name: str
    stages: tuple[tuple[float, int], ...]

    @property
    def seconds(self) -> int:
        return sum(seconds for _, seconds in self.stages)

    def shares(self) -> np.ndarray:
        """The candidate's share of each second's requests."""
        return np.concatenate([np.full(seconds, share) for share, seconds in self.stages])


STAGED = Shape("stages 1/10/50/100% x 10 min", ((0.01, 600), (0.10, 600), (0.50, 600), (1.0, 600)))
FIXED = Shape("fixed 10% x 60 min", ((0.10, 3600),))
FIXED_30 = Shape("fixed 10% x 30 min", ((0.10, 1800),))

# -- metrics: what each request yields ---------------------------------------------------------


@dataclass(frozen=True)
class Binary:
    """A 0/1 outcome (click, conversion, error) with probability ``p``; the candidate's is
    ``p * effect``."""

    p: float
    effect: float = 1.0


@dataclass(frozen=True)
class Revenue:
    """Revenue per request: zero except with probability ``p``, then lognormal(``mu``,
    ``sigma``); the candidate's amounts are multiplied by ``effect``."""

    p: float = 0.05
    mu: float = math.log(20.0)
    sigma: float = 1.5
    effect: float = 1.0


@dataclass(frozen=True)
class Latency:
    """Lognormal latency (median ``median_s``, log-sd ``sigma``); the candidate's is multiplied
    by ``effect``. Only histogram buckets near the baseline's p95 are simulated: values below
    ``low * p95`` are recorded in the bucket just below that range and values above ``high * p95``
    in the bucket just above it, for both arms. The p95 rule's verdicts do not depend on it for
    the effects simulated (up to 1.2): a breach needs the candidate's lower bound (the value of a
    rank at least 5% from the top, so inside the range) above 1.1 times the baseline's upper
    bound; lumping the top can only lower the baseline's upper bound while its data are few,
    which makes a breach more likely, not less.
    """

    median_s: float = 0.020
    sigma: float = 0.5
    effect: float = 1.0
    low: float = 0.95
    high: float = 1.35

    @property
    def p95_s(self) -> float:
        return self.median_s * math.exp(self.sigma * 1.6448536269514722)

    def cells(self) -> np.ndarray:
        """The bucket indices simulated: one below the range, the range, one above."""
        first = latency_bucket_index(self.low * self.p95_s)
        last = latency_bucket_index(self.high * self.p95_s)
        return np.arange(first - 1, last + 2)

    def probabilities(self, scale: float) -> np.ndarray:
        """The chance of each cell for latencies multiplied by ``scale``."""
        cells = self.cells()
        edges = [latency_bucket_bounds(int(index))[1] for index in cells[:-1]]
        cdf = [_normal_cdf((math.log(edge / scale / self.median_s)) / self.sigma) for edge in edges]
        return np.diff(np.concatenate([[0.0], cdf, [1.0]]))


def _normal_cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


Metric = Binary | Revenue | Latency

# -- the simulated series ---------------------------------------------------------------------


@dataclass
class Series:
    """Per-second cumulative sums of each arm over ``canaries`` canaries.

    Arrays are ``(canaries, seconds)`` (``cells``: ``(canaries, seconds, buckets)``); entry
    ``[:, s]`` holds everything recorded up to the end of second ``s``, as a check at the start
    of second ``s + 1`` sees it. ``per_second`` holds each second's own sums, not cumulated
    (the earlier threshold rule looks at windows). ``a + b`` pools two processes' traffic.
    """

    metric: Metric
    candidate: dict[str, np.ndarray]
    baseline: dict[str, np.ndarray]
    per_second: dict[str, np.ndarray] = field(default_factory=dict)
    cache: dict[object, Any] = field(default_factory=dict, repr=False)

    @property
    def canaries(self) -> int:
        return int(self.candidate["n"].shape[0])

    @property
    def seconds(self) -> int:
        return int(self.candidate["n"].shape[1])

    def __add__(self, other: Series) -> Series:
        def add(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {key: a[key] + b[key] for key in a}

        return Series(
            self.metric,
            add(self.candidate, other.candidate),
            add(self.baseline, other.baseline),
            add(self.per_second, other.per_second),
        )

    def below(self, arm: str) -> np.ndarray:
        """For each bucket but the top one, how many of the arm's values lie at or below it."""
        key = ("below", arm)
        if key not in self.cache:
            cells = (self.candidate if arm == "c" else self.baseline)["cells"]
            self.cache[key] = np.cumsum(cells, axis=-1, dtype=np.int32)[..., :-1]
        return self.cache[key]  # type: ignore[no-any-return]


def simulate(
    metric: Metric,
    shape: Shape,
    canaries: int,
    rng: np.random.Generator,
    *,
    requests_per_s: float = REQUESTS_PER_S,
) -> Series:
    """Draw ``canaries`` canaries of ``shape`` for ``metric``.

    Requests arrive as a Poisson process, each going to the candidate with its share and
    yielding its outcome independently; so (Poisson thinning) every per-second count of a kind
    of request on an arm is an independent Poisson variable, which is how they are drawn."""
    share = shape.shares()[None, :]
    size = (canaries, shape.seconds)
    per: dict[str, np.ndarray] = {}
    for arm, rate, scale in (
        ("c", requests_per_s * share, metric.effect),
        ("b", requests_per_s * (1.0 - share), 1.0),
    ):
        rate = np.broadcast_to(rate, size)
        if isinstance(metric, Binary):
            p = min(1.0, metric.p * scale)
            per[f"x_{arm}"] = rng.poisson(rate * p)
            per[f"n_{arm}"] = per[f"x_{arm}"] + rng.poisson(rate * (1.0 - p))
        elif isinstance(metric, Revenue):
            paying = rng.poisson(rate * metric.p)
            per[f"n_{arm}"] = paying + rng.poisson(rate * (1.0 - metric.p))
            per[f"sum_{arm}"], per[f"sq_{arm}"] = _revenue(metric, paying, scale, rng)
        else:
            per[f"cells_{arm}"] = _latency_cells(metric, rate, scale, rng)
            per[f"n_{arm}"] = per[f"cells_{arm}"].sum(axis=-1)
    candidate: dict[str, np.ndarray] = {}
    baseline: dict[str, np.ndarray] = {}
    for key, values in per.items():
        name, arm = key.rsplit("_", 1)
        (candidate if arm == "c" else baseline)[name] = np.cumsum(
            values, axis=1, dtype=values.dtype
        )
    return Series(metric, candidate, baseline, per)


def _revenue(
    metric: Revenue, paying: np.ndarray, scale: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    amounts = scale * rng.lognormal(metric.mu, metric.sigma, size=int(paying.sum()))
    owner = np.repeat(np.arange(paying.size), paying.ravel())
    sums = np.bincount(owner, weights=amounts, minlength=paying.size).reshape(paying.shape)
    squares = np.bincount(owner, weights=amounts**2, minlength=paying.size).reshape(paying.shape)
    return sums, squares


def _latency_cells(
    metric: Latency, rate: np.ndarray, scale: float, rng: np.random.Generator
) -> np.ndarray:
    probabilities = metric.probabilities(scale)
    cells = len(probabilities)
    below = rng.poisson(rate * probabilities[0]).astype(np.int32)
    inside = rng.poisson(rate * (1.0 - probabilities[0]))
    cumulative = np.cumsum(probabilities[1:]) / probabilities[1:].sum()
    drawn = 1 + np.searchsorted(cumulative[:-1], rng.random(int(inside.sum())), side="right")
    owner = np.repeat(np.arange(inside.size), inside.ravel())
    result = np.bincount(owner * cells + drawn, minlength=inside.size * cells).astype(np.int32)
    result = result.reshape(*inside.shape, cells)
    result[..., 0] = below
    return result


# -- when does a test fire ---------------------------------------------------------------------


@dataclass(frozen=True)
class OldRule:
    """Today's threshold rule (:mod:`modelflags.rollout.guardrails`), replicated with numpy.

    ``kind``: ``"max_outcome_drop"`` (``threshold`` is the relative drop), ``"max_error_rate"``
    (an absolute rate) or ``"max_p95_latency_ms"`` (``threshold`` in seconds here). Windows are
    the :class:`~modelflags.rollout.metrics.Metrics` ring: twelve 5-second slices, the current
    one partly filled.
    """

    kind: str
    threshold: float
    min_requests: int = 200
    sustained_s: int = 60
    slice_s: int = 5
    slices: int = 12


@dataclass(frozen=True)
class WelchMean:
    """For comparison only: :class:`MeanComparison` without its variance floor (each arm's own
    sample variance, Welch's plug-in), judged with the package's boundary."""

    test: MeanComparison


Test = MeanComparison | RateComparison | QuantileComparison | OldRule | WelchMean


def fire_times(series: Series, test: Test, *, verify: bool = True) -> np.ndarray:
    """When ``test`` first fires on each canary of ``series``: seconds since the start (a check
    runs at the end of every second), ``inf`` if it never does. ``verify`` checks the numpy
    replicas of the p95 and error-rate tests against the package at a few seconds."""
    if isinstance(test, OldRule):
        return _old_fire_times(series, test)
    if isinstance(test, QuantileComparison):
        return _quantile_fire_times(series, test, verify)
    if isinstance(test, RateComparison):
        return _rate_fire_times(series, test, verify)
    screen, judge = _mean_screen(series, test)
    return _first_breaches(screen, judge)


def simulate_canary(
    metric: Metric,
    shape: Shape,
    test: Test,
    rng: np.random.Generator,
    *,
    requests_per_s: float = REQUESTS_PER_S,
) -> float:
    """Simulate one canary and say when ``test`` fires on it (seconds; ``inf``: never)."""
    return float(
        fire_times(simulate(metric, shape, 1, rng, requests_per_s=requests_per_s), test)[0]
    )


def _first_breaches(screen: np.ndarray, judge: Callable[[int, int], bool]) -> np.ndarray:
    """The first screened second of each canary at which ``judge(canary, second)`` breaches."""
    fired = np.full(screen.shape[0], np.inf)
    for canary in np.flatnonzero(screen.any(axis=1)):
        for second in np.flatnonzero(screen[canary]):
            if judge(int(canary), int(second)):
                fired[canary] = second + 1
                break
    return fired


def _moments(series: Series, arm: dict[str, np.ndarray], canary: int, second: int) -> Moments:
    count = int(arm["n"][canary, second])
    if isinstance(series.metric, Binary):
        return Moments.binary(count, int(arm["x"][canary, second]))
    return Moments(count, float(arm["sum"][canary, second]), float(arm["sq"][canary, second]))


def _mean_screen(
    series: Series, rule: MeanComparison | WelchMean
) -> tuple[np.ndarray, Callable[[int, int], bool]]:
    """Seconds where a breach is possible, and the judge (the package's test) for them.

    Every breach has ``|z| >= c`` at the tolerance, and the boundary ``c`` of
    :func:`mixture_threshold` is at least ``sqrt(2 K (1 + 1 / x))`` (as ``log Phi(u) <= 0``),
    itself at least ``sqrt(-2 log(2 alpha))``."""
    test = rule.test if isinstance(rule, WelchMean) else rule
    welch = isinstance(rule, WelchMean)
    z, information = _z_statistic(series, 1.0 + test.limit, welch)
    sign = -1.0 if test.worse == "lower" else 1.0
    with np.errstate(invalid="ignore"):
        index = np.nonzero(sign * z >= math.sqrt(-2.0 * math.log(2.0 * test.alpha)))
    x = test.scale**2 * information[index]
    with np.errstate(divide="ignore", invalid="ignore"):
        level = -math.log(2 * test.alpha) + 0.5 * np.log1p(x)
        floor = np.sqrt(2 * level * (1 + 1 / x)) * (1 - 1e-9)
        hits = (sign * z[index] >= floor) & np.isfinite(floor)
    screen = np.zeros(z.shape, dtype=bool)
    screen[tuple(part[hits] for part in index)] = True
    if welch:
        return screen, _welch_judge(series, test, z, information)
    cand, base = series.candidate, series.baseline

    def judge(canary: int, second: int) -> bool:
        return test.evaluate(
            _moments(series, cand, canary, second), _moments(series, base, canary, second)
        ).breached

    return screen, judge


def _z_statistic(series: Series, k: float, welch: bool) -> tuple[np.ndarray, np.ndarray]:
    """The z-statistic of the contrast ``mean_c - k mean_b`` and its information, as
    :class:`MeanComparison` computes them (cached on the series)."""
    key = ("z", k, welch)
    if key in series.cache:
        cached: tuple[np.ndarray, np.ndarray] = series.cache[key]
        return cached
    cand, base = series.candidate, series.baseline
    n_c, n_b = cand["n"].astype(float), base["n"].astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if isinstance(series.metric, Binary):
            x_c, x_b = cand["x"].astype(float), base["x"].astype(float)
            p_b = np.minimum(1.0, (x_c + x_b) / (k * n_c + n_b))
            p_c = np.minimum(1.0, k * p_b)
            variance = p_c * (1 - p_c) / n_c + k * k * p_b * (1 - p_b) / n_b
            mean_c, mean_b = x_c / n_c, x_b / n_b
        else:
            mean_c, mean_b = cand["sum"] / n_c, base["sum"] / n_b
            var_c = np.maximum(0.0, (cand["sq"] - mean_c * cand["sum"]) / (n_c - 1))
            var_b = np.maximum(0.0, (base["sq"] - mean_b * base["sum"]) / (n_b - 1))
            if welch:
                variance = var_c / n_c + k * k * var_b / n_b
            else:
                variance = np.maximum(var_c, var_b) * (1 / n_c + k * k / n_b)
        z = (mean_c - k * mean_b) / np.sqrt(variance)
        information = mean_b**2 / variance
    series.cache[key] = (z, information)
    return z, information


def _welch_judge(
    series: Series, test: MeanComparison, z: np.ndarray, information: np.ndarray
) -> Callable[[int, int], bool]:
    def judge(canary: int, second: int) -> bool:
        if min(series.candidate["n"][canary, second], series.baseline["n"][canary, second]) < (
            test.min_count
        ):
            return False
        bound = mixture_threshold(float(information[canary, second]), test.alpha, test.scale)
        value = float(z[canary, second])
        return value < -bound if test.worse == "lower" else value > bound

    return judge


def _log_evalue(events: np.ndarray, trials: np.ndarray, p0: np.ndarray, upward: bool) -> np.ndarray:
    """numpy's copy of :func:`~modelflags.rollout.sequential.binomial_log_evalue`."""
    sign = 1.0 if upward else -1.0
    terms = np.stack(
        [
            sign * shift * events - trials * np.log1p(p0 * math.expm1(sign * shift))
            for shift in SHIFTS
        ]
    )
    top = terms.max(axis=0)
    result: np.ndarray = -math.log(len(SHIFTS)) + top + np.log(np.exp(terms - top).sum(axis=0))
    return result


def _rate_fire_times(series: Series, test: RateComparison, verify: bool) -> np.ndarray:
    """The error-rate test replicated with numpy: the conditional log-likelihood at the
    tolerance and at the mixture's alternatives, accumulated interval by interval."""
    if test.relative is None or test.absolute is not None:
        raise ValueError("the replica covers relative tolerances only")
    evidence = _rate_evidence(series, 1.0 + test.relative)
    decided = (series.candidate["n"] > 0) & (series.baseline["n"] > 0)
    breached = (evidence >= math.log(1.0 / test.alpha)) & decided
    fired = np.where(breached.any(axis=1), breached.argmax(axis=1) + 1.0, np.inf)
    if verify:
        _check_rate_replica(series, test, fired)
    return fired


def _rate_evidence(series: Series, base: float) -> np.ndarray:
    """The log e-value of :class:`RateMonitor` at ratio ``base`` after each second (cached)."""
    key = ("rate", base)
    if key in series.cache:
        return series.cache[key]  # type: ignore[no-any-return]
    per = series.per_second
    total = per["x_c"] + per["x_b"]
    used = np.nonzero((total > 0) & (per["n_c"] > 0) & (per["n_b"] > 0))
    exposure = per["n_c"][used] / per["n_b"][used]
    errors_c, total = per["x_c"][used].astype(float), total[used].astype(float)

    def loglik(ratio: float) -> np.ndarray:
        terms = np.zeros(per["n_c"].shape)
        terms[used] = errors_c * math.log(ratio) - total * np.log1p(ratio * exposure)
        return np.cumsum(terms, axis=1)

    here = loglik(base)
    # log of the mean of exp(loglik(alternative) - here), accumulated one alternative at a
    # time with a running maximum, as log-sum-exp does it
    top = np.full(here.shape, -np.inf)
    total_exp = np.zeros(here.shape)
    for offset in OFFSETS:
        term = loglik(base * math.exp(STEP * offset)) - here
        higher = np.maximum(top, term)
        total_exp = total_exp * np.exp(top - higher) + np.exp(term - higher)
        top = higher
    evidence = -math.log(len(OFFSETS)) + top + np.log(total_exp)
    series.cache[key] = evidence
    return evidence


def _check_rate_replica(series: Series, test: RateComparison, fired: np.ndarray) -> None:
    """The package's :class:`RateMonitor`, fed second by second, fires when the replica does:
    on the first canary to fire (up to then) and on the first canary (its first 10 minutes)."""
    cand, base = series.candidate, series.baseline
    first = int(np.argmin(fired))
    runs = [(0, min(series.seconds, 300))]
    if math.isfinite(fired[first]):
        runs.append((first, int(fired[first])))
    for canary, seconds in runs:
        monitor = test.start()
        for second in range(seconds):
            evidence = monitor.update(
                Counts(int(cand["n"][canary, second]), int(cand["x"][canary, second])),
                Counts(int(base["n"][canary, second]), int(base["x"][canary, second])),
            )
            expected = second + 1 == fired[canary]
            assert evidence.breached == expected or (second + 1 > fired[canary]), (
                canary,
                second,
                evidence,
            )
        VERIFIED["error-rate replica = RateMonitor.update() at {} seconds"] += seconds


_TABLES: dict[tuple[float, float, bool], np.ndarray] = {}


def threshold_table(p0: float, alpha: float, upward: bool, trials: int) -> np.ndarray:
    """:func:`~modelflags.rollout.sequential.exceedance_threshold` for every count of trials
    from 0 to ``trials``, computed with numpy (and cached).

    For a fixed count of events the upward e-value decreases with more trials (the downward one
    increases), so each count of events has a last (first) number of trials it rejects at;
    bisecting those for all counts at once and inverting gives the whole table."""
    key = (p0, alpha, upward)
    known = _TABLES.get(key)
    if known is not None and len(known) > trials:
        return known
    trials = max(2 * trials, 100_000)
    threshold = math.log(1.0 / alpha)
    top = int(p0 * trials + 12 * math.sqrt(trials) + 80) if upward else int(p0 * trials) + 1
    events = np.arange(top + 1, dtype=float)

    def rejects(t: np.ndarray) -> np.ndarray:
        return _log_evalue(events, t, np.full_like(t, p0), upward) >= threshold

    if upward:  # the last number of trials each count of events is rejected at
        low, high = events.copy(), np.full_like(events, float(trials))
        last = np.where(rejects(high), high, np.where(rejects(low), low, low - 1))
        searching = (last == low) & (low < high)
        while searching.any():
            middle = np.floor((low + high) / 2)
            hit = rejects(middle)
            low = np.where(searching & hit, middle, low)
            high = np.where(searching & ~hit, middle, high)
            searching &= high - low > 1
        last = np.where(last == events, low, last)
        counts = np.searchsorted(last, np.arange(trials + 1), side="left")
        table = np.where(counts > np.arange(trials + 1), np.arange(trials + 1) + 1, counts)
    else:  # the first number of trials each count of events is rejected at
        low, high = events.copy(), np.full_like(events, float(trials))
        first = np.where(rejects(low), low, np.where(rejects(high), high, np.inf))
        searching = first == high
        low = np.where(searching, low, high)
        while searching.any():
            middle = np.floor((low + high) / 2)
            hit = rejects(middle)
            high = np.where(searching & hit, middle, high)
            low = np.where(searching & ~hit, middle, low)
            searching &= high - low > 1
        first = np.where(first == float(trials), high, first)
        table = np.searchsorted(first, np.arange(trials + 1), side="right") - 1
    _TABLES[key] = table.astype(np.int64)
    return _TABLES[key]


def _quantile_fire_times(series: Series, test: QuantileComparison, verify: bool) -> np.ndarray:
    """The p95 test replicated with numpy: order-statistic bounds from the threshold tables."""
    assert isinstance(series.metric, Latency)
    cells = series.metric.cells()
    lows = np.array([latency_bucket_bounds(int(index))[0] for index in cells])
    highs = np.array([latency_bucket_bounds(int(index))[1] for index in cells])
    p0, half = 1.0 - test.quantile, test.alpha / 2
    t_c, t_b = series.candidate["n"], series.baseline["n"]
    need = threshold_table(p0, half, True, int(t_c.max()))[t_c]
    allowed = threshold_table(p0, half, False, int(t_b.max()))[t_b]
    # The lower bound is the highest bucket with at least ``need`` values at or above it, the
    # upper bound the highest with more than ``allowed``: count the buckets below which at most
    # ``total - need`` (fewer than ``total - allowed``) values lie.
    below_c, below_b = series.below("c"), series.below("b")
    at_c = np.count_nonzero(below_c <= (t_c - need)[..., None], axis=-1)
    at_b = np.count_nonzero(below_b < (t_b - allowed)[..., None], axis=-1)
    low_c = np.where(need > t_c, 0.0, lows[at_c])
    high_b = np.where(allowed < 0, np.inf, highs[at_b])
    with np.errstate(divide="ignore", invalid="ignore"):
        lower = np.where(high_b > 0, low_c / high_b - 1.0, np.inf)
    breached = (lower > test.tolerance) & (t_c > 0) & (t_b > 0)
    fired = np.where(breached.any(axis=1), breached.argmax(axis=1) + 1.0, np.inf)
    if verify:
        _check_quantile_replica(series, test, breached, lower)
    return fired


def _histogram(cells: np.ndarray, counts: np.ndarray) -> dict[int, int]:
    return {int(index): int(count) for index, count in zip(cells, counts, strict=True) if count}


def _check_quantile_replica(
    series: Series, test: QuantileComparison, breached: np.ndarray, lower: np.ndarray
) -> None:
    """The replica agrees with ``QuantileComparison.evaluate`` at the first breach of each of a
    few canaries, the second before it, and a few seconds drawn at random."""
    cells = series.metric.cells() if isinstance(series.metric, Latency) else None
    assert cells is not None
    rng = np.random.default_rng(series.canaries)
    points = []
    for canary in rng.choice(series.canaries, size=min(4, series.canaries), replace=False):
        fired = np.flatnonzero(breached[canary])
        seconds = list(rng.choice(series.seconds, size=2))
        if fired.size:
            seconds += [fired[0], max(0, fired[0] - 1)]
        points += [(int(canary), int(second)) for second in seconds]
    for canary, second in points:
        evidence = test.evaluate(
            _histogram(cells, series.candidate["cells"][canary, second]),
            _histogram(cells, series.baseline["cells"][canary, second]),
        )
        assert evidence.breached == bool(breached[canary, second]), (canary, second, evidence)
        assert not evidence.decided or math.isclose(
            evidence.lower, float(lower[canary, second]), rel_tol=1e-12, abs_tol=1e-12
        ), (evidence.lower, lower[canary, second])
    VERIFIED["p95 replica = QuantileComparison.evaluate() at {} seconds"] += len(points)


VERIFIED: Counter[str] = Counter()


def _old_fire_times(series: Series, rule: OldRule) -> np.ndarray:
    """Today's rule on the ``Metrics`` window, with ``sustained_s`` of consecutive breaches."""
    per = series.per_second
    seconds = series.seconds
    checks = np.arange(1, seconds + 1)  # a check at the end of each second
    newest = checks // rule.slice_s  # the slice a check at that time is in (clock = checks)
    start = np.maximum(0, (newest - rule.slices + 1) * rule.slice_s)

    def window(values: np.ndarray) -> np.ndarray:
        total = np.concatenate(
            [np.zeros((values.shape[0], 1, *values.shape[2:])), np.cumsum(values, axis=1)], axis=1
        )
        result: np.ndarray = total[:, checks] - total[:, start]
        return result

    n_c, n_b = window(per["n_c"]), window(per["n_b"])
    with np.errstate(divide="ignore", invalid="ignore"):
        if rule.kind == "max_outcome_drop":
            key = "x" if isinstance(series.metric, Binary) else "sum"
            x_c, x_b = window(per[f"{key}_c"]), window(per[f"{key}_b"])
            mean_c, mean_b = x_c / n_c, x_b / n_b
            lowest = mean_b - rule.threshold * np.abs(mean_b)
            breach = (n_c >= rule.min_requests) & (n_b >= rule.min_requests) & (mean_c < lowest)
        elif rule.kind == "max_error_rate":
            errors = window(per["x_c"])
            breach = (n_c >= rule.min_requests) & (errors / n_c > rule.threshold)
        else:
            assert isinstance(series.metric, Latency)
            # LatencyHistogram reports a bucket's geometric middle: the p95 is above the limit
            # when fewer than its rank of values lie in buckets whose middle is at most it.
            middles = np.array(
                [math.sqrt(low * high) for low, high in map(_plain_bounds, series.metric.cells())]
            )
            at_most = window(per["cells_c"][..., middles <= rule.threshold].sum(axis=-1))
            rank = np.maximum(1, np.ceil(0.95 * n_c))
            breach = (n_c >= rule.min_requests) & (at_most < rank)
    # A breach fires once it has held at every check for sustained_s: at the check that is more
    # than sustained_s checks after the last one without it.
    index = np.arange(seconds)
    last_clear = np.maximum.accumulate(np.where(breach, -1, index[None, :]), axis=1)
    due = index[None, :] - last_clear > rule.sustained_s
    return np.where(due.any(axis=1), due.argmax(axis=1) + 1.0, np.inf)


def _plain_bounds(index: int) -> tuple[float, float]:
    """A LatencyHistogram bucket's edges as its ``quantile`` computes them (not widened)."""
    index = int(index)
    if index == 0:
        return 1e-6, 1e-6
    return 1e-6 * 1.01 ** (index - 1), 1e-6 * 1.01**index


def check_tables(trials: int = 200_000) -> None:
    """The numpy threshold tables equal the package's function at sampled trial counts."""
    rng = np.random.default_rng(7)
    samples = [0, 1, 19, 20, 59, 60, *rng.integers(0, trials, size=30).tolist()]
    for alpha in (0.025, 0.005):
        for upward in (True, False):
            table = threshold_table(0.05, alpha, upward, trials)
            for count in samples:
                expected = exceedance_threshold(int(count), 0.05, alpha, upward=upward)
                assert table[count] == expected, (alpha, upward, count, table[count], expected)
    VERIFIED["threshold tables = exceedance_threshold() at {} points"] += 4 * len(samples)


# -- the scenarios and the table ----------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One row: a metric on a canary shape, the new test (built for an alpha) and the earlier
    threshold rule."""

    label: str
    metric: Metric
    shape: Shape
    new: Callable[[float], Test]
    old: OldRule | None
    detect: bool = False
    chunk: int = 500


def click(alpha: float) -> MeanComparison:
    return MeanComparison("click", 0.05, alpha=alpha, binary=True)


def errors(tolerance: float) -> Callable[[float], RateComparison]:
    return lambda alpha: RateComparison("errors", alpha=alpha, relative=tolerance)


def p95(alpha: float) -> QuantileComparison:
    return QuantileComparison("latency", 0.10, alpha=alpha)


def revenue(alpha: float) -> MeanComparison:
    return MeanComparison("revenue", 0.05, alpha=alpha)


LATENCY = Latency()
SCENARIOS = [
    Scenario(
        "A/A click 5%, drop tol 5%", Binary(0.05), STAGED, click, OldRule("max_outcome_drop", 0.05)
    ),
    Scenario(
        "A/A click 5%, drop tol 5%", Binary(0.05), FIXED, click, OldRule("max_outcome_drop", 0.05)
    ),
    Scenario(
        "A/A errors 0.1%, increase tol 50%",
        Binary(0.001),
        STAGED,
        errors(0.5),
        OldRule("max_error_rate", 0.0015),
    ),
    Scenario(
        "A/A errors 2%, increase tol 50%",
        Binary(0.02),
        STAGED,
        errors(0.5),
        OldRule("max_error_rate", 0.03),
    ),
    Scenario(
        "A/A latency lognormal, p95 tol 10%",
        LATENCY,
        STAGED,
        p95,
        OldRule("max_p95_latency_ms", 1.1 * LATENCY.p95_s),
        chunk=20,
    ),
    Scenario(
        "A/A revenue (95% zeros, lognormal s=1.5), drop tol 5%",
        Revenue(),
        STAGED,
        revenue,
        OldRule("max_outcome_drop", 0.05),
        chunk=250,
    ),
    Scenario(
        "at the limit: click -5%, tol 5%",
        Binary(0.05, 0.95),
        STAGED,
        click,
        OldRule("max_outcome_drop", 0.05),
    ),
    Scenario(
        "at the limit: errors 0.1%, any increase (tol 0)",
        Binary(0.001),
        STAGED,
        errors(0.0),
        OldRule("max_error_rate", 0.001),
    ),
    Scenario(
        "at the limit: errors 2%, any increase (tol 0)",
        Binary(0.02),
        STAGED,
        errors(0.0),
        OldRule("max_error_rate", 0.02),
    ),
    Scenario(
        "at the limit: latency x1.1, p95 tol 10%",
        replace(LATENCY, effect=1.1),
        STAGED,
        p95,
        OldRule("max_p95_latency_ms", 1.1 * LATENCY.p95_s),
        chunk=20,
    ),
    Scenario(
        "at the limit: revenue -5%, tol 5%", Revenue(effect=0.95), STAGED, revenue, None, chunk=250
    ),
    Scenario(
        "at the limit: revenue -5%, without the variance floor",
        Revenue(effect=0.95),
        STAGED,
        lambda alpha: WelchMean(revenue(alpha)),
        None,
        chunk=250,
    ),
    Scenario(
        "detect: conversion 5% -> -15%, tol 5%",
        Binary(0.05, 0.85),
        FIXED,
        click,
        OldRule("max_outcome_drop", 0.05),
        detect=True,
    ),
    Scenario(
        "detect: errors 0.1% -> 0.3%, tol 50%",
        Binary(0.001, 3.0),
        FIXED,
        errors(0.5),
        OldRule("max_error_rate", 0.0015),
        detect=True,
    ),
    Scenario(
        "detect: conversion 5% -> -5% (within tol 5%)",
        Binary(0.05, 0.95),
        FIXED,
        click,
        OldRule("max_outcome_drop", 0.05),
        detect=True,
    ),
    Scenario(
        "detect: latency p95 +20%, tol 10%",
        replace(LATENCY, effect=1.2),
        FIXED_30,
        p95,
        OldRule("max_p95_latency_ms", 1.1 * LATENCY.p95_s),
        detect=True,
        chunk=20,
    ),
]
ALPHAS = (0.05, 0.01)


def run(scenario: Scenario, canaries: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Fire times of the new test at each alpha and of the earlier rule, over ``canaries``."""
    columns: list[list[np.ndarray]] = [[] for _ in range(len(ALPHAS) + 1)]
    done = 0
    while done < canaries:
        size = min(scenario.chunk, canaries - done)
        series = simulate(scenario.metric, scenario.shape, size, rng)
        for column, alpha in enumerate(ALPHAS):
            columns[column].append(fire_times(series, scenario.new(alpha), verify=done == 0))
        if scenario.old is not None:
            columns[-1].append(_old_fire_times(series, scenario.old))
        done += size
    return [np.concatenate(parts) if parts else np.array([]) for parts in columns]


def describe(times: np.ndarray, detect: bool, horizon_s: int) -> str:
    if times.size == 0:
        return "-"
    fired = np.isfinite(times)
    if not detect:
        return f"{fired.mean():.3f} ({fired.sum()}/{times.size})"
    minutes = np.sort(np.where(fired, times, np.inf)) / 60

    def at(q: float) -> str:
        value = minutes[min(len(minutes) - 1, math.ceil(q * len(minutes)) - 1)]
        return f"{value:.1f}" if math.isfinite(value) else f">{horizon_s / 60:g}"

    return f"{at(0.5)} / {at(0.9)} min ({fired.mean():.0%} fired)"


def check_costs() -> str:
    """What one check of each test costs on this machine (the request path only adds to sums)."""
    rng = np.random.default_rng(1)
    base = rng.lognormal(np.log(0.02), 0.5, 90_000)
    latency_c = Counter(latency_bucket_index(value) for value in (1.1 * base[:10_000]).tolist())
    latency_b = Counter(latency_bucket_index(value) for value in base.tolist())
    click_test, p95_test = click(0.05), p95(0.05)
    monitor = errors(0.5)(0.05).start()
    totals = [0, 0, 0, 0]

    def rate_check() -> None:  # a check after a second with errors on both sides
        totals[0] += 167
        totals[1] += 1
        totals[2] += 1500
        totals[3] += 2
        monitor.update(Counts(totals[0], totals[1]), Counts(totals[2], totals[3]))

    timings: dict[str, Callable[[], object]] = {
        "MeanComparison.evaluate": lambda: click_test.evaluate(
            Moments.binary(60_000, 2_850), Moments.binary(540_000, 27_000)
        ),
        "RateMonitor.update": rate_check,
        "QuantileComparison.evaluate": lambda: p95_test.evaluate(latency_c, latency_b),
    }
    parts = []
    for name, call in timings.items():
        begun = time.perf_counter()
        for _ in range(200):
            call()
        parts.append(f"{name} {(time.perf_counter() - begun) / 200 * 1e6:.0f} us")
    return "one check of one rule: " + ", ".join(parts)


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=20240613)
    parser.add_argument("--canaries", type=int, default=1000)
    args = parser.parse_args(None if argv is None else list(argv))
    started, started_cpu = time.perf_counter(), time.process_time()
    print(
        f"seed {args.seed}; {args.canaries} canaries a row; "
        f"{REQUESTS_PER_S * 60:,.0f} requests/min (Poisson); a check every second"
    )
    print(
        "new: the package's tests, each with the whole alpha of its column (split_alpha shares "
        "a model's alpha among its rules); mixture scale 0.1 for means"
    )
    print(
        "threshold rule (earlier releases): min_requests 200, sustained_s 60, window_s 60; "
        "max_outcome_drop relative 0.05; "
        "max_error_rate = the base rate x (1 + the new rule's tolerance); "
        f"max_p95_latency_ms = 1.1 x the baseline's p95 ({1.1 * LATENCY.p95_s * 1e3:.1f} ms)"
    )
    print(
        f"latency: lognormal, median {LATENCY.median_s * 1e3:g} ms, log-sd {LATENCY.sigma:g} "
        f"(p95 {LATENCY.p95_s * 1e3:.1f} ms); revenue: {Revenue().p:.0%} of requests pay, "
        f"lognormal(log 20, {Revenue().sigma:g})"
    )
    check_tables()
    rng = np.random.default_rng(args.seed)
    rows = []
    for scenario in SCENARIOS:
        begun, cpu = time.perf_counter(), time.process_time()
        times = run(scenario, args.canaries, rng)
        cells = [describe(column, scenario.detect, scenario.shape.seconds) for column in times]
        rows.append((scenario.label, scenario.shape.name, *cells))
        print(
            f"  {scenario.label} ({scenario.shape.name}): {time.perf_counter() - begun:.1f} s, "
            f"{time.process_time() - cpu:.1f} s of CPU"
        )
    print()
    print("| scenario | canary | new, alpha 0.05 | new, alpha 0.01 | threshold rule (before) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print("A/A and 'at the limit' rows: share of canaries with a rollback (target: at most alpha).")
    print("detect rows: median / 90th percentile time to the rollback, and the share that fired.")
    print("checks passed: " + "; ".join(text.format(count) for text, count in VERIFIED.items()))
    print(check_costs())
    print(
        f"total {time.perf_counter() - started:.1f} s, "
        f"{time.process_time() - started_cpu:.1f} s of CPU"
    )


if __name__ == "__main__":
    main()

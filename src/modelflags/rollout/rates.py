"""Rates of rare events (errors): against the baseline, and against an absolute limit.

:class:`RateComparison` asks whether the candidate's error rate exceeds the baseline's by more
than a tolerance; :class:`RateLimit` whether it is above an absolute limit (an SLO). Both are
exact at every count, from the first call: a handful of errors cannot carry the evidence the
threshold asks for, so no minimum count is needed.

**Against the baseline** (the counting test of Lindon, Sanden, Shirikian, "Rapid Regression
Detection in Software Deployments through Sequential Testing", KDD 2022). Treat errors on each
arm as rare events at rates ``r_c`` and ``r_b`` per call. Between two checks the arms ran
``a`` and ``b`` calls; given that ``m`` errors happened in that interval, each came from the
candidate with probability ``theta a / (theta a + b)``, where ``theta = r_c / r_b``, whatever
the baseline's rate: conditioning removes it. So the likelihood of ``theta`` is a product of
binomial terms, one per check interval, and a mixture of likelihood ratios against
``theta0 = 1 + relative`` is an e-process for "the candidate's rate is at most ``1 + relative``
times the baseline's": by Ville's inequality it ever reaches ``1 / alpha`` with probability at
most ``alpha``. Traffic shares may change between intervals (stages); an interval in which one
arm ran no call carries no information and is skipped, so the test learns nothing while the
candidate serves all traffic. The binomial term is exact for Poisson counts. For errors per
call it describes the odds ratio, which is the rate ratio times ``(1 - r_b) / (1 - r_c)``:
within 2% of it at error rates of a few percent, far inside any tolerance. At equal rates the
split is hypergeometric, less spread than the binomial, which only makes the test more cautious.

The log-likelihood is kept on a grid of ratios (``theta0 * exp(0.05 i)``, so bounds are on a 5%
grid, rounded outward); the mixture puts equal weights on ratios 5% to 17 times beyond the one
tested. It is concave in ``log theta``, so the e-value is monotone in the ratio tested and the
confidence bounds are where it crosses ``1 / alpha``. A check costs one pass over the grid when
errors happened since the last one, nothing otherwise; this is why the test has a
:class:`RateMonitor` holding state, where every other test reads totals only.

An ``absolute`` tolerance (``rate_c <= rate_b + absolute``) is judged with each arm's exact
confidence sequence (:func:`~modelflags.rollout.sequential.binomial_lower` and
:func:`~modelflags.rollout.sequential.binomial_upper`, half the alpha each: with probability
``1 - alpha`` both hold at every check, and then ``lower_c - upper_b`` bounds the difference).
With both tolerances a breach needs both excesses: an intersection-union test, which keeps the
rule's alpha without a further split (Berger, "Multiparameter hypothesis testing and acceptance
sampling", Technometrics 1982).

**Against a limit**: :class:`RateLimit`, the candidate's exact confidence sequence alone.

**Against a baseline that no longer grows** (the LKG's figures before a rollback, against its
figures after): :meth:`RateComparison.evaluate_apart` bounds each arm with its own exact
confidence sequence (``alpha / 2`` each) and divides; valid however the arms were sampled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from modelflags.rollout.evidence import Counts, Evidence, check_alpha, check_tolerance
from modelflags.rollout.sequential import binomial_lower, binomial_upper

__all__ = ["RateComparison", "RateLimit", "RateMonitor"]

_METHOD = (
    "exact conditional e-process on the rate ratio, errors split by calls between checks "
    "(counts as in Lindon et al. 2022)"
)
_DIFFERENCE_METHOD = "exact binomial confidence sequences per arm, alpha/2 each"
_APART_METHOD = _DIFFERENCE_METHOD + " (each arm on its own)"
_LIMIT_METHOD = "exact binomial confidence sequence (mixture of likelihood ratios)"

STEP = 0.05
"""Spacing of the ratio grid, in log-ratio: bounds are multiples of 5% from the tolerance."""
OFFSETS: tuple[int, ...] = (1, 2, 3, 4, 6, 9, 13, 19, 28, 42, 57)
"""The mixture's alternatives, in grid steps beyond the ratio tested (5% to 17 times)."""
SPAN = 70
"""Bounds are sought within ``exp(+-SPAN * STEP)`` (33 times) of the tolerance."""
_LOG_WEIGHT = -math.log(len(OFFSETS))


@dataclass(frozen=True, slots=True)
class RateComparison:
    """The candidate's rate (errors per call) may exceed the baseline's by at most the tolerance.

    Give ``relative`` (0.5: up to 50% higher), ``absolute`` (0.001: up to 0.1 percentage point
    higher), or both (a breach then needs the excess to pass both). ``alpha`` is this rule's
    share of the model's false-alarm budget. The test needs the errors of each interval between
    checks, so it runs in a :class:`RateMonitor`: call :meth:`start` when the comparison starts.

    Immutable: safe to share between threads.
    """

    rule: str
    alpha: float = 0.05
    relative: float | None = None
    absolute: float | None = None

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        if self.relative is None and self.absolute is None:
            raise ValueError(f"{self.rule}: give a relative tolerance, an absolute one, or both")
        if self.relative is not None:
            check_tolerance(f"{self.rule}: relative", self.relative)
        if self.absolute is not None:
            check_tolerance(f"{self.rule}: absolute", self.absolute, below_one=True)

    def start(self) -> RateMonitor:
        """A fresh monitor for one comparison (one candidate against the baseline)."""
        return RateMonitor(self)

    def evaluate_apart(self, candidate: Counts, baseline: Counts) -> Evidence:
        """The evidence from each arm's own exact confidence sequence (``alpha / 2`` each),
        without a monitor.

        With probability ``1 - alpha`` both arms' bounds hold at every check, so the ratio lies
        in ``[lower_c / upper_b, upper_c / lower_b]`` and the difference in ``[lower_c -
        upper_b, upper_c - lower_b]``, however the arms were sampled: this is the test for a
        baseline that no longer grows (the LKG's figures before a rollback, against its
        figures after), where the monitor's conditional test learns nothing. Less powerful than
        the monitor when both arms run side by side.
        """
        candidate.check(f"{self.rule}: candidate")
        baseline.check(f"{self.rule}: baseline")
        half = self.alpha / 2.0
        low_c = binomial_lower(candidate.events, candidate.trials, half)
        high_c = binomial_upper(candidate.events, candidate.trials, half)
        low_b = binomial_lower(baseline.events, baseline.trials, half)
        high_b = binomial_upper(baseline.events, baseline.trials, half)
        decided = candidate.trials > 0 and baseline.trials > 0
        rate_c, rate_b = candidate.rate, baseline.rate
        difference = (low_c - high_b, high_c - low_b) if decided else (-math.inf, math.inf)
        breached = decided and (self.absolute is None or difference[0] > self.absolute)
        note = "" if decided else "no calls on one side yet"
        if self.relative is None:
            assert self.absolute is not None
            quantity, tolerance, bounds = "difference of rates", self.absolute, difference
            estimate = None if rate_c is None or rate_b is None else rate_c - rate_b
        else:
            quantity, tolerance = "relative change of the rate", self.relative
            bounds = (
                (low_c / high_b - 1.0, high_c / low_b - 1.0 if low_b > 0.0 else math.inf)
                if decided
                else (-math.inf, math.inf)
            )
            breached = breached and bounds[0] > self.relative
            estimate = None if rate_c is None or not rate_b else rate_c / rate_b - 1.0
            if self.absolute is not None and decided:
                note = f"difference of rates in [{difference[0]:+.3g}, {difference[1]:+.3g}]"
        return Evidence(
            rule=self.rule,
            method=_APART_METHOD,
            quantity=quantity,
            estimate=estimate,
            lower=bounds[0],
            upper=bounds[1],
            tolerance=tolerance,
            limit=tolerance,
            worse="higher",
            alpha=self.alpha,
            candidate_count=candidate.trials,
            baseline_count=baseline.trials,
            decided=decided,
            breached=breached,
            note=note,
        )


class RateMonitor:
    """One running :class:`RateComparison`: feed it each arm's counts since the start.

    Not safe to share between threads: the guardrail check that owns it calls :meth:`update`
    once per check. Start a new one (``comparison.start()``) for a new comparison.
    """

    __slots__ = ("_comparison", "_last", "_loglik", "_ratios")

    def __init__(self, comparison: RateComparison) -> None:
        self._comparison = comparison
        self._last = (Counts(0, 0), Counts(0, 0))
        base = 1.0 + (comparison.relative or 0.0)
        size = SPAN + OFFSETS[-1]
        # Ratios are (1 + relative) * exp(STEP * i) for i in -size..size; index 0 is exact.
        self._ratios = [base * math.exp(STEP * i) if i else base for i in range(-size, size + 1)]
        self._loglik = [0.0] * len(self._ratios)

    @property
    def comparison(self) -> RateComparison:
        """What this monitor tests."""
        return self._comparison

    def update(self, candidate: Counts, baseline: Counts) -> Evidence:
        """Take each arm's totals since the start; the evidence now.

        Raises ``ValueError`` on counts that cannot be, that went down since the last update
        (a restart needs a new monitor), or errors that grew on an arm that ran no call since.
        """
        rule = self._comparison.rule
        candidate.check(f"{rule}: candidate")
        baseline.check(f"{rule}: baseline")
        old_c, old_b = self._last
        calls_c, errors_c = candidate.trials - old_c.trials, candidate.events - old_c.events
        calls_b, errors_b = baseline.trials - old_b.trials, baseline.events - old_b.events
        if min(calls_c, errors_c, calls_b, errors_b) < 0:
            raise ValueError(
                f"{rule}: counts went down since the last update ({old_c}, {old_b} to "
                f"{candidate}, {baseline}); start a new monitor for a new comparison"
            )
        if (errors_c and not calls_c) or (errors_b and not calls_b):
            raise ValueError(
                f"{rule}: errors grew on an arm that ran no call since the last update"
            )
        if errors_c + errors_b and calls_c and calls_b:
            self._absorb(calls_c / calls_b, errors_c, errors_b)
        self._last = (candidate, baseline)
        return self._evidence(candidate, baseline)

    def _absorb(self, exposure: float, errors_c: int, errors_b: int) -> None:
        """One interval: ``errors_c + errors_b`` errors, each the candidate's with probability
        ``ratio * exposure / (ratio * exposure + 1)`` (constants dropped)."""
        total = errors_c + errors_b
        log, log1p = math.log, math.log1p
        loglik = self._loglik
        for index, ratio in enumerate(self._ratios):
            loglik[index] += errors_c * log(ratio) - total * log1p(ratio * exposure)

    def _log_evalue(self, index: int, upward: bool) -> float:
        """log e-value against "ratio <= grid[index]" (``upward``) or ">= grid[index]"."""
        loglik = self._loglik
        here = loglik[index]
        sign = 1 if upward else -1
        terms = [loglik[index + sign * offset] - here for offset in OFFSETS]
        top = max(terms)
        exp = math.exp
        return _LOG_WEIGHT + top + math.log(sum([exp(term - top) for term in terms]))

    def _evidence(self, candidate: Counts, baseline: Counts) -> Evidence:
        comparison = self._comparison
        alpha = comparison.alpha
        decided = candidate.trials > 0 and baseline.trials > 0
        rate_c, rate_b = candidate.rate, baseline.rate
        difference = (-math.inf, math.inf)
        breached = decided
        if comparison.absolute is not None:
            half = alpha / 2.0
            difference = (
                binomial_lower(candidate.events, candidate.trials, half)
                - binomial_upper(baseline.events, baseline.trials, half),
                binomial_upper(candidate.events, candidate.trials, half)
                - binomial_lower(baseline.events, baseline.trials, half),
            )
            breached = breached and difference[0] > comparison.absolute
        if comparison.relative is None:
            assert comparison.absolute is not None
            return self._result(
                candidate,
                baseline,
                method=_DIFFERENCE_METHOD,
                quantity="difference of rates",
                estimate=None if rate_c is None or rate_b is None else rate_c - rate_b,
                bounds=difference if decided else (-math.inf, math.inf),
                tolerance=comparison.absolute,
                decided=decided,
                breached=breached,
                note="" if decided else "no calls on one side yet",
            )
        threshold = math.log(1.0 / alpha)
        middle = SPAN + OFFSETS[-1]  # the index of 1 + relative
        rejected = self._log_evalue(middle, True) >= threshold
        lower, upper = self._bounds(middle, threshold)
        if rejected:  # the ratio is above 1 + relative itself, not only above the grid point
            lower = max(lower, math.nextafter(comparison.relative, math.inf))
        note = ""
        if comparison.absolute is not None and decided:
            note = f"difference of rates in [{difference[0]:+.3g}, {difference[1]:+.3g}]"
        return self._result(
            candidate,
            baseline,
            method=_METHOD,
            quantity="relative change of the rate",
            estimate=None if rate_c is None or not rate_b else rate_c / rate_b - 1.0,
            bounds=(lower, upper) if decided else (-math.inf, math.inf),
            tolerance=comparison.relative,
            decided=decided,
            breached=breached and rejected,
            note=note if decided else "no calls on one side yet",
        )

    def _bounds(self, middle: int, threshold: float) -> tuple[float, float]:
        """The relative change's confidence bounds on the grid, rounded outward."""
        ratios = self._ratios
        # Lower: the largest grid ratio the upward test rejects (its e-value falls with the
        # ratio); none within the span: nothing known (-1, the ratio is at least 0).
        low, high = middle - SPAN, middle + SPAN
        if self._log_evalue(low, True) < threshold:
            lower = -1.0
        elif self._log_evalue(high, True) >= threshold:
            lower = ratios[high] - 1.0
        else:
            while high - low > 1:  # low is rejected, high is not
                point = (low + high) // 2
                if self._log_evalue(point, True) >= threshold:
                    low = point
                else:
                    high = point
            lower = ratios[low] - 1.0
        # Upper: the smallest grid ratio the downward test rejects (its e-value rises with it).
        low, high = middle - SPAN, middle + SPAN
        if self._log_evalue(high, False) < threshold:
            upper = math.inf
        elif self._log_evalue(low, False) >= threshold:
            upper = ratios[low] - 1.0
        else:
            while high - low > 1:  # high is rejected, low is not
                point = (low + high) // 2
                if self._log_evalue(point, False) >= threshold:
                    high = point
                else:
                    low = point
            upper = ratios[high] - 1.0
        return lower, upper

    def _result(
        self,
        candidate: Counts,
        baseline: Counts,
        *,
        method: str,
        quantity: str,
        estimate: float | None,
        bounds: tuple[float, float],
        tolerance: float,
        decided: bool,
        breached: bool,
        note: str,
    ) -> Evidence:
        return Evidence(
            rule=self._comparison.rule,
            method=method,
            quantity=quantity,
            estimate=estimate,
            lower=bounds[0],
            upper=bounds[1],
            tolerance=tolerance,
            limit=tolerance,
            worse="higher",
            alpha=self._comparison.alpha,
            candidate_count=candidate.trials,
            baseline_count=baseline.trials,
            decided=decided,
            breached=breached,
            note=note,
        )


@dataclass(frozen=True, slots=True)
class RateLimit:
    """The candidate's rate may not be confidently above ``limit`` (an absolute SLO, 0..1).

    The sequential alternative to a threshold with a minimum count: a breach when the lower
    confidence bound of the rate passes ``limit``. Immutable: safe to share between threads.
    """

    rule: str
    limit: float
    alpha: float = 0.05

    def __post_init__(self) -> None:
        check_alpha(self.alpha)
        check_tolerance(f"{self.rule}: limit", self.limit, below_one=True)

    def evaluate(self, candidate: Counts) -> Evidence:
        """The evidence after ``candidate``'s counts since the start."""
        candidate.check(f"{self.rule}: candidate")
        decided = candidate.trials > 0
        lower = binomial_lower(candidate.events, candidate.trials, self.alpha)
        upper = binomial_upper(candidate.events, candidate.trials, self.alpha)
        return Evidence(
            rule=self.rule,
            method=_LIMIT_METHOD,
            quantity="rate",
            estimate=candidate.rate,
            lower=lower if decided else -math.inf,
            upper=upper if decided else math.inf,
            tolerance=self.limit,
            limit=self.limit,
            worse="higher",
            alpha=self.alpha,
            candidate_count=candidate.trials,
            baseline_count=0,
            decided=decided,
            breached=decided and lower > self.limit,
            note="" if decided else "no calls yet",
        )

"""Anytime-valid boundaries: the mathematics under :mod:`modelflags.rollout.statistics`.

Two families of nonnegative (super)martingales, each turned into a boundary by Ville's
inequality: for a nonnegative supermartingale ``M`` with ``M_0 <= 1``,
``P(M_t >= 1/alpha for some t) <= alpha``. However often a boundary is checked and however long,
the chance it is ever crossed while the null hypothesis holds stays at most ``alpha``.

**Normal mixture** (:func:`mixture_threshold`), for differences of means. A statistic ``S`` that
behaves like Brownian motion in its own information time ``V`` (the inverse variance of the
estimate) has the exponential martingales ``exp(theta S - theta**2 V / 2)``; mixing them over
``theta >= 0`` with a half-normal of standard deviation ``scale`` gives

    M = 2 / sqrt(1 + scale**2 V) * exp(u**2 / 2) * Phi(u),   u = scale S / sqrt(1 + scale**2 V)

(Robbins 1970; the one-sided form of Howard, Ramdas, McAuliffe, Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Annals of Statistics 2021). With ``theta``
read as the effect, this is the mixture sequential probability ratio test of Johari, Koomen,
Pekelis, Walsh, "Always Valid Inference: Continuous Monitoring of A/B Tests" (Operations
Research 2022). With plug-in variances it is an *asymptotic* confidence sequence (Waudby-Smith,
Arnold, Wu, Ramdas, "Time-uniform central limit theory and asymptotic confidence sequences",
Annals of Statistics 2024): valid as counts grow, which is why the callers add guards for small
samples and prove the false-alarm rate by simulation.

**Binomial mixture** (:func:`binomial_log_evalue` and what builds on it), exact at every count.
For ``events`` out of ``trials`` Bernoulli draws, the likelihood ratio of a shifted log-odds
``logit(p0) + delta`` against ``p0`` is
``exp(delta * events - trials * log(1 + p0 * expm1(delta)))``; it is a supermartingale whenever
the true probability is at most ``p0`` (``delta > 0``) or at least ``p0`` (``delta < 0``). An
average of them over a fixed grid of shifts (:data:`SHIFTS`, equal weights: a log-uniform prior
on the shift from 0.01 to 6.6 in log-odds) is an e-process for the composite null, with no
approximation and no minimum count (Ramdas, Grünwald, Vovk, Shafer, "Game-theoretic statistics
and safe anytime-valid inference", Statistical Science 2023; the mixture of likelihood ratios is
Robbins' method again). The likelihood is concave in the log-odds, so the e-value is monotone in
``p0`` and in ``events``: inverting it gives confidence bounds for a rate
(:func:`binomial_lower`, :func:`binomial_upper`) and count thresholds for quantiles
(:func:`exceedance_threshold`).

Pure functions of floats; safe to call from any thread.
"""

from __future__ import annotations

import math
from collections.abc import Callable

__all__ = [
    "SHIFTS",
    "binomial_log_evalue",
    "binomial_lower",
    "binomial_upper",
    "exceedance_threshold",
    "mixture_threshold",
    "solve_decreasing",
]

SHIFTS: tuple[float, ...] = tuple(0.01 * 1.5**j for j in range(17))
"""Log-odds shifts of the binomial mixture: 0.01 to 6.57, each 1.5 times the last.

Equal weights over a geometric grid make the test scale-free (no tuning to a traffic level); the
price is ``log(17) = 2.8`` nats of evidence, and at most a 22% mismatch between the best shift
and the true one (costing about 0.1 nat on average)."""

_LOG_WEIGHT = -math.log(len(SHIFTS))
_UP = tuple((shift, math.expm1(shift)) for shift in SHIFTS)
_DOWN = tuple((-shift, math.expm1(-shift)) for shift in SHIFTS)
_SQRT_2PI = math.sqrt(2.0 * math.pi)
_SQRT_HALF = math.sqrt(0.5)


def mixture_threshold(information: float, alpha: float, scale: float) -> float:
    """The one-sided normal-mixture boundary for a z-statistic at ``information``.

    ``z = estimate / standard_error`` crosses it (``z >= threshold``) with probability at most
    ``alpha`` over all time while the true effect is zero or negative, where ``information`` is
    ``1 / standard_error**2`` in the units of the effect and ``scale`` is the mixture's standard
    deviation in the same units (the effect size the boundary is tightest for: any value keeps
    the guarantee). Infinite when ``information`` is zero.

    Solves ``u**2 / 2 + log Phi(u) = log(1 / (2 alpha)) + log(1 + scale**2 information) / 2``
    by Newton's method (the left side is convex and increasing, so iterates started to the right
    of the root decrease to it), and returns ``u * sqrt(1 + 1 / (scale**2 information))``.
    """
    x = scale * scale * information
    if not x > 0.0:
        return math.inf
    level = -math.log(2.0 * alpha) + 0.5 * math.log1p(x)
    # log Phi(u) <= 0 and >= -log 2 for u >= 0: the root is at most sqrt(2 (level + log 2)).
    u = math.sqrt(2.0 * (level + math.log(2.0))) if level + math.log(2.0) > 0.0 else 0.0
    for _ in range(60):
        phi_cdf = 0.5 * math.erfc(-u * _SQRT_HALF)
        value = 0.5 * u * u + math.log(phi_cdf) - level
        slope = u + math.exp(-0.5 * u * u) / _SQRT_2PI / phi_cdf
        step = value / slope
        u -= step
        if abs(step) <= 1e-12 * (1.0 + abs(u)):
            break
    return u * math.sqrt(1.0 + 1.0 / x)


def binomial_log_evalue(events: float, trials: float, p0: float, *, upward: bool) -> float:
    """The log e-value against "the probability is at most ``p0``" (``upward``) or at least
    ``p0`` (not ``upward``), after ``events`` out of ``trials`` draws.

    ``0 < p0 < 1``. An e-process: the chance it ever reaches ``log(1 / alpha)`` under the null is
    at most ``alpha`` (see the module docs). Increasing in ``events`` when ``upward``,
    decreasing otherwise; monotone in ``p0`` the other way.
    """
    log1p = math.log1p
    terms = [
        shift * events - trials * log1p(p0 * tilt) for shift, tilt in (_UP if upward else _DOWN)
    ]
    top = max(terms)
    exp = math.exp
    return _LOG_WEIGHT + top + math.log(sum([exp(term - top) for term in terms]))


def solve_decreasing(
    fn: Callable[[float], float],
    low: float,
    high: float,
    *,
    rtol: float = 1e-10,
    ftol: float = 1e-9,
) -> float:
    """A root of ``fn``, decreasing on ``[low, high]`` with ``fn(low) >= 0 > fn(high)``.

    The Illinois variant of regula falsi: superlinear on smooth functions, never leaves the
    bracket. Returns a point on the ``fn >= 0`` side of the root, within ``rtol`` (relative) of
    it or where ``fn`` is below ``ftol``.
    """
    f_low, f_high = fn(low), fn(high)
    side = 0
    for _ in range(200):
        if f_low < ftol or high - low <= rtol * max(abs(low), abs(high), 1e-300):
            break
        point = high - f_high * (high - low) / (f_high - f_low)
        if not low < point < high:
            point = 0.5 * (low + high)
        value = fn(point)
        if value >= 0.0:
            low, f_low = point, value
            if side == -1:
                f_high *= 0.5
            side = -1
        else:
            high, f_high = point, value
            if side == 1:
                f_low *= 0.5
            side = 1
    return low


def binomial_lower(events: int, trials: int, alpha: float) -> float:
    """A lower confidence bound for a probability, valid at every count and over all time.

    The largest ``p0`` that the upward e-value rejects at ``alpha`` (0.0 when none is), rounded
    down: the chance that the bound ever exceeds the true probability is at most ``alpha``.
    """
    if events <= 0 or trials <= 0:
        return 0.0
    threshold = math.log(1.0 / alpha)
    # One term of the mixture at least ``threshold - _LOG_WEIGHT`` rejects; the largest term
    # below ``threshold`` cannot: the root lies between the two points where they change.
    surely = threshold - _LOG_WEIGHT
    rejected = max(math.expm1((shift * events - surely) / trials) / tilt for shift, tilt in _UP)
    kept = max(math.expm1((shift * events - threshold) / trials) / tilt for shift, tilt in _UP)
    if kept <= 0.0:
        return 0.0
    kept = min(kept, events / trials) if events < trials else min(kept, 1.0 - 1e-16)

    def excess(log_p0: float) -> float:
        return binomial_log_evalue(events, trials, math.exp(log_p0), upward=True) - threshold

    low = math.log(rejected) if rejected > 0.0 else math.log(1e-300)
    high = math.log(kept)
    if excess(low) < 0.0:
        return 0.0
    if excess(high) >= 0.0:
        return kept
    return math.exp(solve_decreasing(excess, low, high))


def binomial_upper(events: int, trials: int, alpha: float) -> float:
    """An upper confidence bound for a probability, valid at every count and over all time.

    The smallest ``p0`` that the downward e-value rejects at ``alpha`` (1.0 when none is),
    rounded up.
    """
    if trials <= 0 or events >= trials:
        return 1.0
    return 1.0 - binomial_lower(trials - events, trials, alpha)


def exceedance_threshold(trials: int, p0: float, alpha: float, *, upward: bool) -> int:
    """The count of events that the e-value against ``p0`` rejects at ``alpha``.

    ``upward``: the smallest count ``e`` with the upward e-value of ``e`` events in ``trials`` at
    least ``1 / alpha`` (``trials + 1`` when no count is); every larger count is rejected too.
    Not ``upward``: the largest count rejected by the downward e-value (``-1`` when none is);
    every smaller count is rejected too. These are the ranks of the order statistics that bound
    a quantile (see :mod:`modelflags.rollout.quantiles`).
    """
    if trials <= 0:
        return trials + 1 if upward else -1
    threshold = math.log(1.0 / alpha)
    surely = threshold - _LOG_WEIGHT
    # Each term of the mixture is linear in the count, ``shift * count + offset``: one term at
    # least ``surely`` rejects, and while every term is below ``threshold`` nothing is rejected.
    # The answer lies between the counts where that changes; bisect the integers in between.
    lines = [(shift, -trials * math.log1p(p0 * tilt)) for shift, tilt in (_UP if upward else _DOWN)]

    def rejects(count: int) -> bool:
        return binomial_log_evalue(count, trials, p0, upward=upward) >= threshold

    if upward:
        if not rejects(trials):
            return trials + 1
        kept = math.floor(min((threshold - offset) / shift for shift, offset in lines))
        rejected = math.ceil(min((surely - offset) / shift for shift, offset in lines))
        kept, rejected = max(kept, -1), min(rejected, trials)
        while rejected - kept > 1:  # kept is never rejected, rejected always is
            middle = (kept + rejected) // 2
            if middle >= 0 and rejects(middle):
                rejected = middle
            else:
                kept = middle
        return rejected
    if not rejects(0):
        return -1
    kept = math.ceil(max((offset - threshold) / -shift for shift, offset in lines))
    rejected = math.floor(max((offset - surely) / -shift for shift, offset in lines))
    kept, rejected = min(kept, trials + 1), max(rejected, 0)
    while kept - rejected > 1:
        middle = (kept + rejected) // 2
        if middle <= trials and rejects(middle):
            rejected = middle
        else:
            kept = middle
    return rejected

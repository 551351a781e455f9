"""Streaming statistics: the latency histogram, and the element-wise comparison of two outputs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from modelflags.serving.shadow import compare
from modelflags.telemetry.histogram import (
    FLOOR_S,
    GROWTH,
    LatencyHistogram,
    LatencySummary,
    bucket_bounds,
    bucket_index,
)

QUANTILES = (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def histogram_of(samples: np.ndarray) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in samples.tolist():
        histogram.add(value)
    return histogram


@pytest.mark.parametrize(
    "draw",
    [
        lambda rng: rng.lognormal(mean=math.log(2e-4), sigma=0.8, size=20_000),
        lambda rng: rng.uniform(1e-5, 5e-2, size=20_000),
        lambda rng: 1e-3 + rng.exponential(3e-3, size=20_000),
    ],
    ids=["lognormal", "uniform", "exponential"],
)
def test_quantiles_are_within_one_percent_of_numpy(draw: object) -> None:
    """Every reported quantile is within 1% of numpy's on random latencies.

    The histogram reports the nearest-rank quantile (the smallest sample with at least ``q`` of
    the samples at or below it), which is numpy's ``inverted_cdf`` method; numpy's default
    interpolates between neighbours, which in a sparse tail can itself be 1% away.
    """
    rng = np.random.default_rng(42)
    samples = draw(rng)  # type: ignore[operator]
    histogram = histogram_of(samples)
    for q in QUANTILES:
        expected = float(np.quantile(samples, q, method="inverted_cdf"))
        reported = histogram.quantile(q)
        assert reported is not None
        assert abs(reported - expected) <= 0.01 * expected, (q, reported, expected)


def test_counts_sums_and_maximum_are_exact() -> None:
    """Only quantiles are approximate: count, total and maximum are exact."""
    samples = np.random.default_rng(1).lognormal(math.log(1e-3), 1.0, size=5_000)
    histogram = histogram_of(samples)
    assert histogram.count == 5_000
    assert histogram.total == pytest.approx(float(samples.sum()), rel=1e-12)
    assert histogram.max == float(samples.max())
    assert histogram.quantile(1.0) == float(samples.max())
    assert histogram.quantile(0.999999) <= float(samples.max())  # type: ignore[operator]


def test_bucket_count_stays_bounded_for_a_hundred_thousand_samples() -> None:
    """1e5 samples spread over eight decades use at most one bucket per 1% of range."""
    rng = np.random.default_rng(7)
    samples = 10 ** rng.uniform(-6, 2, size=100_000)  # 1 us .. 100 s
    histogram = histogram_of(samples)
    limit = math.ceil(math.log(1e8) / math.log(1.01)) + 2
    assert histogram.count == 100_000
    assert histogram.buckets <= limit
    more = histogram_of(samples)
    more.merge(histogram)
    assert more.buckets == histogram.buckets  # twice the samples, no more memory
    assert more.count == 200_000


def test_sub_microsecond_durations_share_the_first_bucket() -> None:
    """Zero, negative clock jitter and nanoseconds all land in one bucket, reported as <= 1 us."""
    histogram = LatencyHistogram()
    for value in (0.0, -1e-9, 1e-9, 5e-7):
        histogram.add(value)
    assert histogram.buckets == 1
    assert histogram.quantile(0.5) is not None and histogram.quantile(0.5) <= 1e-6  # type: ignore[operator]


def test_merge_equals_one_histogram_of_all_samples() -> None:
    """Merging two halves gives the counts, total, maximum and quantiles of the whole."""
    samples = np.random.default_rng(3).lognormal(math.log(5e-4), 0.6, size=10_000)
    whole = histogram_of(samples)
    left, right = histogram_of(samples[:3_000]), histogram_of(samples[3_000:])
    left.merge(right)
    assert (left.count, left.max, left.buckets) == (whole.count, whole.max, whole.buckets)
    assert left.total == pytest.approx(whole.total, rel=1e-12)
    assert left.summary() == whole.summary()
    assert right.count == 7_000  # the merged-in histogram is left as it was


def test_merge_into_an_empty_histogram_copies_the_other() -> None:
    """An empty histogram merged with another reports the other's summary."""
    other = histogram_of(np.array([1e-3, 2e-3, 3e-3]))
    empty = LatencyHistogram()
    empty.merge(other)
    assert empty.summary() == other.summary()
    other.merge(LatencyHistogram())
    assert other.count == 3


def test_empty_histogram_summary_has_no_quantiles() -> None:
    """Before any sample there are no quantiles, only a zero count."""
    histogram = LatencyHistogram()
    assert histogram.summary() == LatencySummary(0, None, None, None, None)
    assert histogram.quantile(0.5) is None
    assert histogram.buckets == 0


def test_summary_reports_ordered_quantiles_and_the_maximum() -> None:
    """p50 <= p95 <= p99 <= max, each within 1% of numpy's."""
    samples = np.random.default_rng(5).gamma(2.0, 1e-4, size=10_000)
    summary = histogram_of(samples).summary()
    assert summary.count == 10_000
    assert summary.p50 is not None and summary.p95 is not None and summary.p99 is not None
    assert summary.max == float(samples.max())
    assert summary.p50 <= summary.p95 <= summary.p99 <= summary.max
    for reported, q in ((summary.p50, 0.5), (summary.p95, 0.95), (summary.p99, 0.99)):
        assert reported == pytest.approx(float(np.quantile(samples, q)), rel=0.01)


# -- compare --------------------------------------------------------------------------------------


def test_compare_counts_equal_labels() -> None:
    """Label outputs agree element by element."""
    result = compare(np.array([0, 1, 1, 2]), np.array([0, 0, 1, 2]))
    assert (result.elements, result.equal) == (4, 3)
    assert compare([True, False], [True, True]).equal == 1


def test_compare_measures_absolute_differences_of_probabilities() -> None:
    """Probability outputs give the sum and the maximum of absolute differences."""
    primary = np.array([[0.1, 0.9], [0.6, 0.4]])
    shadow = np.array([[0.2, 0.8], [0.6, 0.4]])
    result = compare(primary, shadow)
    assert result.numeric == 4
    assert result.abs_diff_sum == pytest.approx(0.2)
    assert result.abs_diff_max == pytest.approx(0.1)


def test_compare_outputs_of_different_shapes_agree_on_nothing() -> None:
    """A shape mismatch is a full disagreement, with no difference to average."""
    result = compare(np.zeros((3, 2)), np.zeros((3, 3)))
    assert result.equal == 0 and result.elements >= 6
    assert (result.numeric, result.abs_diff_max) == (0, None)
    assert compare([1, 2], [1, 2, 3]).equal == 0


def test_compare_strings_without_warnings() -> None:
    """String labels compare by equality; strings against numbers disagree quietly."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels = compare(np.array(["cat", "dog", "owl"]), np.array(["cat", "cow", "owl"]))
        mixed = compare(np.array(["1", "2"]), np.array([1, 2]))
        objects = compare(np.array(["a", None], dtype=object), np.array(["a", None], dtype=object))
    assert (labels.elements, labels.equal, labels.numeric) == (3, 2, 0)
    assert (mixed.equal, mixed.numeric) == (0, 0)
    assert (objects.elements, objects.equal) == (2, 2)


def test_compare_empty_outputs_counts_nothing() -> None:
    """Two empty batches compare to nothing at all."""
    result = compare(np.array([]), np.array([]))
    assert (result.elements, result.equal, result.numeric, result.abs_diff_max) == (0, 0, 0, None)


def test_compare_nan_in_both_outputs_keeps_differences_finite() -> None:
    """A NaN in the same place of both outputs adds no difference, so sums never turn NaN."""
    result = compare(np.array([0.25, np.nan]), np.array([0.5, np.nan]))
    assert math.isfinite(result.abs_diff_sum) and result.abs_diff_sum == pytest.approx(0.25)
    assert result.abs_diff_max == pytest.approx(0.25)


def test_the_bucket_layout_is_public_and_counts_are_a_read_only_copy() -> None:
    """``bucket_index`` and ``bucket_bounds`` describe where ``add`` counts a duration, and
    ``counts()`` hands out a copy that cannot change the histogram."""
    histogram = LatencyHistogram()
    for seconds in (0.0, 1e-6, 0.0105, 0.0105, 2.0):
        histogram.add(seconds)
        low, high = bucket_bounds(bucket_index(seconds))
        assert low < seconds <= high or (seconds <= FLOOR_S and low == 0.0)
    histogram.add_at(bucket_index(0.5), 0.5)

    counts = histogram.counts()

    assert counts == {0: 2, bucket_index(0.0105): 2, bucket_index(2.0): 1, bucket_index(0.5): 1}
    assert sum(counts.values()) == histogram.count == 6
    with pytest.raises(TypeError):
        counts[0] = 5  # type: ignore[index]
    assert bucket_bounds(2)[1] / bucket_bounds(2)[0] == pytest.approx(GROWTH)

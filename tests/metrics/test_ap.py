import numpy as np
import pytest

from prm_bench.metrics.ap import average_precision, weighted_average_precision


def test_average_precision_ranks_stably_and_handles_no_positives():
    assert average_precision([0.5, 0.5], [True, False], 1) == 1.0  # first on a tie ranks first
    assert np.isnan(average_precision([0.3], [False], 0))
    assert average_precision([], [], 3) == 0.0


@pytest.mark.parametrize("use_07", [False, True])
def test_weighted_ap_equals_the_ap_of_the_repeated_list(use_07):
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    hits = rng.random(40) < 0.5
    weights = rng.integers(0, 4, (5, 40))
    positives = hits.sum() + 3
    got = weighted_average_precision(scores, hits, positives * 2, weights, use_07)
    for row, value in zip(weights, got, strict=True):
        order = np.argsort(-scores, kind="stable")
        repeated = np.repeat(order, row[order])
        expected = average_precision(scores[repeated], hits[repeated], positives * 2, use_07)
        assert value == pytest.approx(expected, abs=1e-12)

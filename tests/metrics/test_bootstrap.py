import numpy as np
import pytest

from prm_bench.metrics.bootstrap import Interval, metric_samples, paired_bootstrap


def ratio(values: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image statistics of a ratio metric with one unit per image."""
    return {"prm_correct/num": np.asarray(values, float), "prm_correct/den": np.ones(len(values))}


def ranked(hit: np.ndarray, score: np.ndarray) -> dict[str, np.ndarray]:
    """One prediction and one positive per image, class 0."""
    n = len(hit)
    return {
        "mAP@0.5/image": np.arange(n),
        "mAP@0.5/label": np.zeros(n, int),
        "mAP@0.5/score": score,
        "mAP@0.5/hit": hit,
        "mAP@0.5/positives": np.ones((n, 1), int),
    }


def test_identical_predictions_give_exactly_zero():
    rng = np.random.default_rng(0)
    seeds = [ranked(rng.random(50) < 0.5, rng.random(50)) for _ in range(3)]
    interval = paired_bootstrap(seeds, seeds, "mAP@0.5", resamples=1000)
    assert (interval.effect, interval.low, interval.high) == (0.0, 0.0, 0.0)
    assert interval.verdict() == "inconclusive"


def test_a_dominating_method_gives_a_ci_above_zero():
    rng = np.random.default_rng(1)
    score = rng.random(60)
    better = [ranked(np.ones(60, bool), score) for _ in range(3)]  # AP 1
    worse = [ranked(rng.random(60) < 0.4, score) for _ in range(3)]
    interval = paired_bootstrap(better, worse, "mAP@0.5", resamples=1000, seed=4)
    assert interval.low > 0 and interval.low <= interval.effect <= interval.high
    assert interval.verdict() == "holds"
    assert interval.verdict(expected_sign=-1) == "contradicted"
    flipped = paired_bootstrap(worse, better, "mAP@0.5", resamples=1000, seed=4)
    assert flipped.verdict() == "contradicted"


def test_the_point_effect_is_the_difference_of_the_seed_means():
    better = [ratio([1, 1, 0, 1]), ratio([1, 0, 0, 1])]
    worse = [ratio([0, 1, 0, 0]), ratio([0, 0, 0, 1])]
    interval = paired_bootstrap(better, worse, "prm_correct", resamples=1000)
    assert interval.effect == pytest.approx(((0.75 - 0.25) + (0.5 - 0.25)) / 2)


def test_seed_to_seed_variation_widens_the_ci():
    # within each seed every image shows the same difference, so resampling images alone
    # finds no uncertainty; the seeds disagree in sign, so the two-level CI spans 0
    better = [ratio(np.full(30, 0.9)), ratio(np.full(30, 0.3))]
    worse = [ratio(np.full(30, 0.5)), ratio(np.full(30, 0.5))]
    interval = paired_bootstrap(better, worse, "prm_correct", resamples=1000)
    assert interval.low == pytest.approx(-0.2) and interval.high == pytest.approx(0.4)
    assert interval.verdict() == "inconclusive"
    one_seed = paired_bootstrap(better[:1], worse[:1], "prm_correct", resamples=1000)
    assert one_seed.low == pytest.approx(0.4) and "one seed" in one_seed.method


def test_resampling_is_reproducible_and_noise_is_inconclusive():
    rng = np.random.default_rng(2)
    a = [ratio(rng.random(40) < 0.5) for _ in range(3)]
    b = [ratio(rng.random(40) < 0.5) for _ in range(3)]
    first = paired_bootstrap(a, b, "prm_correct", resamples=1000, seed=7)
    assert first == paired_bootstrap(a, b, "prm_correct", resamples=1000, seed=7)
    assert first.verdict() == "inconclusive"


def test_sides_must_match():
    with pytest.raises(ValueError, match="different images"):
        paired_bootstrap([ratio([1, 0])], [ratio([1, 0, 1])], "prm_correct")
    with pytest.raises(ValueError, match="seeds"):
        paired_bootstrap([ratio([1])], [], "prm_correct")
    with pytest.raises(KeyError, match="abo"):
        metric_samples(ratio([1]), "abo", np.ones((1, 1)))


def test_verdicts_follow_the_ci():
    def at(low, high):
        return Interval(0.0, low, high, 1000, 0.95, "test")

    assert at(0.1, 0.3).verdict() == "holds"
    assert at(-0.3, -0.1).verdict() == "contradicted"
    assert at(-0.1, 0.3).verdict() == "inconclusive"
    assert at(0.0, 0.3).verdict() == "inconclusive"


def test_a_bound_that_is_zero_up_to_rounding_is_zero():
    """Seen in a tuning test: tied resamples put the upper bound at -5.4e-17."""

    def at(low, high):
        return Interval(0.0, low, high, 1000, 0.95, "test")

    assert at(-0.2, -5.4e-17).verdict() == "inconclusive"
    assert at(5.4e-17, 0.2).verdict() == "inconclusive"
    assert at(-0.2, -1e-6).verdict() == "contradicted"
    assert at(1e-6, 0.2).verdict() == "holds"


def test_seed_spread_and_the_image_only_ci_are_reported_apart():
    """Issue 24 item 12: the example above in numbers: the seeds differ by +0.4 and -0.2
    (sd 0.42), while the images alone show no uncertainty at all (a point CI at 0.1)."""
    better = [ratio(np.full(30, 0.9)), ratio(np.full(30, 0.3))]
    worse = [ratio(np.full(30, 0.5)), ratio(np.full(30, 0.5))]
    interval = paired_bootstrap(better, worse, "prm_correct", resamples=500)
    assert interval.seed_sd == pytest.approx(np.std([0.4, -0.2], ddof=1))
    assert interval.image_low == pytest.approx(0.1) and interval.image_high == pytest.approx(0.1)
    one = paired_bootstrap(better[:1], worse[:1], "prm_correct", resamples=200)
    assert one.seed_sd is None and one.image_low is None


def test_the_p_value_is_small_only_for_a_clear_effect():
    rng = np.random.default_rng(1)
    score = rng.random(60)
    better = [ranked(np.ones(60, bool), score)]
    worse = [ranked(rng.random(60) < 0.4, score)]
    clear = paired_bootstrap(better, worse, "mAP@0.5", resamples=999, seed=4)
    assert clear.p_value == pytest.approx(2 / 1000)  # no draw at or below 0: (0 + 1) / 1000
    same = paired_bootstrap(better, better, "mAP@0.5", resamples=999)
    assert same.p_value == 1.0


def test_holm_matches_hand_computed_adjustments():
    from prm_bench.metrics.bootstrap import holm

    # sorted 0.01, 0.02, 0.04, 0.30 -> x4, x3, x2, x1 = 0.04, 0.06, 0.08, 0.30 (monotone)
    assert holm([0.04, 0.01, 0.30, 0.02]) == pytest.approx([0.08, 0.04, 0.30, 0.06])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])  # capped, then kept monotone
    assert holm([]) == []


def test_the_magnitude_says_where_the_paper_s_effect_lies():
    interval = Interval(0.04, 0.03, 0.05, 1000, 0.95, "m")
    assert interval.magnitude(0.045) == "agrees"
    assert interval.magnitude(0.179) == "smaller"  # the +3.7 against the paper's +17.9 case
    assert interval.magnitude(-0.01) == "larger"
    assert interval.magnitude(None) == ""


def test_a_two_cell_contrast_is_the_paired_bootstrap():
    from prm_bench.metrics.contrast import contrast_bootstrap

    rng = np.random.default_rng(3)
    better = [ratio(rng.random(40) < 0.7) for _ in range(3)]
    worse = [ratio(rng.random(40) < 0.5) for _ in range(3)]
    paired = paired_bootstrap(better, worse, "prm_correct", resamples=600, seed=5)
    contrast = contrast_bootstrap([better, worse], [1, -1], "prm_correct", resamples=600, seed=5)
    assert (contrast.effect, contrast.low, contrast.high) == pytest.approx(
        (paired.effect, paired.low, paired.high)
    )


def test_the_gap_verdicts_on_known_effects():
    """Issue 25: a zero effect inside the margin is negligible; a clear one matters."""
    from prm_bench.metrics.contrast import contrast_bootstrap, gap_verdict

    rng = np.random.default_rng(0)
    base = [ratio(rng.random(50)) for _ in range(2)]
    same = contrast_bootstrap([base, base], [1, -1], "prm_correct", resamples=300)
    assert (same.low, same.high) == (0.0, 0.0) and gap_verdict(same, 0.01) == "negligible"
    shifted = [ratio(s["prm_correct/num"] + 0.2) for s in base]
    clear = contrast_bootstrap([shifted, base], [1, -1], "prm_correct", resamples=300)
    assert clear.effect == pytest.approx(0.2) and gap_verdict(clear, 0.01) == "matters"
    wide = Interval(0.0, -0.05, 0.04, 300, 0.95, "m")
    assert gap_verdict(wide, 0.01) == "inconclusive" and gap_verdict(wide, 0.05) == "negligible"


def test_the_interaction_check_finds_additive_and_non_additive_causes():
    """Issue 25: single effects +0.1 and +0.2 add up to an all-flipped +0.3; an
    all-flipped +0.5 is a +0.2 interaction, whatever the images drawn."""
    from prm_bench.metrics.contrast import interaction

    rng = np.random.default_rng(1)
    base = [ratio(rng.random(30) * 0.5) for _ in range(2)]

    def plus(value):
        return [ratio(s["prm_correct/num"] + value) for s in base]

    additive = interaction(base, [plus(0.1), plus(0.2)], plus(0.3), "prm_correct", resamples=300)
    assert additive.effect == pytest.approx(0.0, abs=1e-12)
    assert additive.low == pytest.approx(0.0, abs=1e-9) and additive.high == pytest.approx(
        0.0, abs=1e-9
    )
    joint = interaction(base, [plus(0.1), plus(0.2)], plus(0.5), "prm_correct", resamples=300)
    assert joint.effect == pytest.approx(0.2) and joint.low == pytest.approx(0.2)

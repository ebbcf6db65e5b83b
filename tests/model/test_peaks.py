import pytest
import torch
import torch.nn.functional as F

from prm_bench.model.peaks import (
    STIMULATIONS,
    class_scores,
    find_peaks,
    local_maxima,
    peak_mask,
    peak_thresholds,
    select_peaks,
    strongest_peaks,
    upsample_maps,
)


def maxpool_reference(maps: torch.Tensor, win_size: int) -> torch.Tensor:
    """The original code's definition: a cell is a peak when max-pooling's argmax of
    its -inf-padded window is the cell itself."""
    r = win_size // 2
    padded = F.pad(maps, (r, r, r, r), value=float("-inf"))
    h, w = padded.shape[-2:]
    cells = torch.arange(h * w).view(1, 1, h, w)[:, :, r : h - r, r : w - r]
    _, indices = F.max_pool2d(padded, win_size, stride=1, return_indices=True)
    return indices == cells


def test_find_peaks_on_a_hand_built_map():
    maps = torch.tensor(
        [
            [
                [9.0, 1.0, 0.0, 0.0, 0.0],
                [1.0, 1.0, 0.0, 5.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 7.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 2.0],
            ]
        ]
    )[None]
    peaks = find_peaks(maps, peak_filter="mean")
    assert peaks.tolist() == [[0, 0, 0, 0], [0, 0, 1, 3], [0, 0, 3, 1], [0, 0, 4, 4]]
    # Zero cells tie with their neighbours but only the first of a tie may be a peak:
    # (0, 2) is first in the window of itself only when no earlier cell equals it.
    everything = find_peaks(maps, peak_filter="none").tolist()
    assert [0, 0, 2, 0] not in everything  # its window holds 1.0 and 7.0
    assert [0, 0, 0, 2] not in everything  # (0, 1) = 1.0 is larger


def test_ties_keep_only_the_first_cell_in_row_major_order():
    maps = torch.tensor([[[[3.0, 3.0, 0.0], [3.0, 3.0, 0.0], [0.0, 0.0, 0.0]]]])
    assert find_peaks(maps, peak_filter="max").tolist() == [[0, 0, 0, 0]]


@pytest.mark.parametrize("win_size", [1, 3, 5])
def test_local_maxima_equals_the_max_pooling_argmax_definition(win_size):
    # Integer-valued maps have many ties, which is where the two could disagree.
    maps = torch.randint(0, 4, (3, 4, 9, 11)).float()
    assert torch.equal(local_maxima(maps, win_size), maxpool_reference(maps, win_size))
    maps = torch.randn(2, 3, 13, 7)
    assert torch.equal(local_maxima(maps, win_size), maxpool_reference(maps, win_size))


def test_rows_are_sorted_and_cover_batches_and_classes():
    maps = torch.randn(3, 4, 8, 8)
    peaks = find_peaks(maps)
    keys = [tuple(row) for row in peaks.tolist()]
    assert keys == sorted(keys)
    assert set(peaks[:, 0].tolist()) == {0, 1, 2}
    assert set(peaks[:, 1].tolist()) == {0, 1, 2, 3}


def test_thresholds_median_is_the_lower_middle_value():
    maps = torch.tensor([[[[4.0, 1.0], [3.0, 2.0]]]])
    assert peak_thresholds(maps, "median").item() == 2.0
    assert peak_thresholds(maps, "mean").item() == 2.5
    assert peak_thresholds(maps, "max").item() == 4.0
    assert peak_thresholds(maps, 1.5).item() == 1.5
    assert peak_thresholds(maps, "none").item() == float("-inf")


def test_filters_drop_peaks_below_the_threshold():
    maps = torch.zeros(1, 1, 7, 7)
    maps[0, 0, 1, 1], maps[0, 0, 1, 5], maps[0, 0, 5, 3] = 0.1, 2.0, 3.0
    maps -= 0.5
    # Bumps -0.4, 1.5, 2.5 on a -0.5 background; no background cell is a peak (each
    # window holds a bump or an equal earlier cell). Median -0.5, mean (5.1 - 24.5) / 49.
    coords = lambda f: [tuple(p[2:]) for p in find_peaks(maps, peak_filter=f).tolist()]  # noqa: E731
    assert coords("median") == [(1, 1), (1, 5), (5, 3)]
    assert coords("mean") == [(1, 5), (5, 3)]
    assert coords(2.0) == [(5, 3)]
    assert coords("max") == [(5, 3)]


def test_upsampled_peaks_are_located_on_the_finer_grid():
    maps = torch.zeros(1, 1, 3, 3)
    maps[0, 0, 1, 1] = 1.0
    # align_corners=True maps cell 1 of 3 onto cell 4 of 9 (4 * (3 - 1) / (9 - 1) = 1).
    assert find_peaks(maps, peak_filter="max", upsample=3).tolist() == [[0, 0, 4, 4]]
    assert upsample_maps(maps, 3)[0, 0, 4, 4].item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"win_size": 2}, "odd integer"),
        ({"peak_filter": "mode"}, "unknown peak_filter 'mode'"),
        ({"upsample": 0}, "upsample factor"),
    ],
)
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        find_peaks(torch.randn(1, 1, 5, 5), **kwargs)


def test_select_peaks_applies_class_and_peak_thresholds():
    maps = torch.zeros(1, 2, 5, 5)
    maps[0, 0, 1, 1], maps[0, 0, 3, 3], maps[0, 1, 2, 2] = 40.0, 20.0, 50.0
    peaks = torch.tensor([[0, 0, 1, 1], [0, 0, 3, 3], [0, 1, 2, 2]])
    scores = torch.tensor([[1.0, -1.0]])
    assert select_peaks(peaks, maps, scores, 0.0, 30.0).tolist() == [[0, 0, 1, 1]]
    assert select_peaks(peaks, maps, scores, -2.0, 10.0).tolist() == peaks.tolist()
    assert select_peaks(peaks, maps, scores, -2.0, 40.0).tolist() == [[0, 1, 2, 2]]


def hand_map() -> torch.Tensor:
    maps = torch.zeros(1, 2, 5, 5)
    maps[0, 0, 0, 0], maps[0, 0, 2, 3], maps[0, 0, 4, 1] = 6.0, 3.0, 9.0
    maps[0, 1] = -1.0
    maps[0, 1, 2, 2] = 4.0
    return maps


def test_stimulation_values_on_a_hand_built_map():
    maps = hand_map()
    # class 0: peaks 6, 3, 9 (zeros tie: the first zero of each window is a peak only
    # where no bump is in its window; the max filter keeps the bumps' maximum alone).
    torch.testing.assert_close(
        class_scores(maps, "peak", peak_filter="mean")[0, 0], torch.tensor(6.0)
    )
    torch.testing.assert_close(
        class_scores(maps, "peak", peak_filter="max")[0], torch.tensor([9.0, 4.0])
    )
    torch.testing.assert_close(class_scores(maps, "gap")[0], torch.tensor([18 / 25, (4 - 24) / 25]))
    torch.testing.assert_close(class_scores(maps, "gmp")[0], torch.tensor([9.0, 4.0]))
    torch.testing.assert_close(
        class_scores(maps, "maxmin", kmax=2, kmin=1, alpha=0.5)[0],
        torch.tensor([(9 + 6) / 2 + 0.5 * 0.0, (4 - 1) / 2 + 0.5 * -1.0]),
    )
    torch.testing.assert_close(
        class_scores(maps, "maxmin", kmax=0.08, kmin=0)[0], torch.tensor([7.5, 1.5])
    )


@pytest.mark.parametrize("name", ["peak", "peak-legacy"])
def test_peak_gradient_reaches_only_the_peaks(name):
    maps = torch.randn(2, 3, 9, 9, requires_grad=True)
    class_scores(maps, name).sum().backward()
    assert torch.equal(maps.grad != 0, peak_mask(maps.detach()))


def test_legacy_gradient_is_the_paper_gradient_times_the_peak_count():
    maps = torch.randn(2, 3, 9, 9)
    weights = torch.randn(2, 3)
    grads = {}
    for name in ("peak", "peak-legacy"):
        leaf = maps.clone().requires_grad_(True)
        scores = class_scores(leaf, name)
        (scores * weights).sum().backward()
        grads[name] = leaf.grad
    counts = peak_mask(maps).sum(dim=(2, 3))
    torch.testing.assert_close(grads["peak-legacy"], grads["peak"] * counts[..., None, None])
    torch.testing.assert_close(class_scores(maps, "peak"), class_scores(maps, "peak-legacy"))


def test_a_map_without_surviving_peaks_scores_zero():
    maps = torch.randn(1, 2, 6, 6)
    assert torch.equal(class_scores(maps, "peak", peak_filter=100.0), torch.zeros(1, 2))


@pytest.mark.parametrize("name", STIMULATIONS.names())
def test_every_stimulation_is_per_image_and_differentiable(name):
    maps = torch.randn(4, 3, 7, 7, requires_grad=True)
    scores = class_scores(maps, name)
    assert scores.shape == (4, 3)
    one_by_one = torch.cat([class_scores(maps[i : i + 1], name) for i in range(4)])
    torch.testing.assert_close(scores, one_by_one)
    scores.sum().backward()
    assert maps.grad.abs().sum() > 0
    # Shifting every response by t shifts each score by t (by (1 + alpha) t for maxmin,
    # whose min term also moves); peaks stay where they are.
    gain = 1.7 if name == "maxmin" else 1.0
    shifted = class_scores(maps.detach() + 2.0, name)
    torch.testing.assert_close(shifted, scores.detach() + 2.0 * gain)


def test_peak_stimulation_with_upsampling_uses_the_finer_grid():
    maps = torch.zeros(1, 1, 3, 3)
    maps[0, 0, 1, 1] = 1.0
    score = class_scores(maps, "peak", peak_filter="max", upsample=3)
    assert score.item() == pytest.approx(1.0)


def test_relative_peak_threshold_is_a_share_of_each_maps_maximum():
    maps = torch.zeros(1, 2, 4, 4)
    maps[0, 0, 0, 0], maps[0, 0, 3, 3] = 10.0, 4.0  # class 0: max 10
    maps[0, 1, 0, 0], maps[0, 1, 3, 3] = 1.0, 0.6  # class 1: max 1
    peaks = torch.tensor([[0, 0, 0, 0], [0, 0, 3, 3], [0, 1, 0, 0], [0, 1, 3, 3]])
    scores = torch.ones(1, 2)
    absolute = select_peaks(peaks, maps, scores, peak_threshold=0.5)
    assert absolute.tolist() == [[0, 0, 0, 0], [0, 0, 3, 3], [0, 1, 0, 0], [0, 1, 3, 3]]
    relative = select_peaks(peaks, maps, scores, peak_threshold=0.5, relative=True)
    assert relative.tolist() == [[0, 0, 0, 0], [0, 1, 0, 0], [0, 1, 3, 3]]  # 4 < 5, 0.6 > 0.5


def test_strongest_peaks_keeps_the_highest_in_row_order():
    maps = torch.arange(16.0).view(1, 1, 4, 4)
    peaks = torch.tensor([[0, 0, 3, 3], [0, 0, 0, 1], [0, 0, 2, 0], [0, 0, 1, 1]])
    assert strongest_peaks(peaks, maps, 2).tolist() == [[0, 0, 3, 3], [0, 0, 2, 0]]
    assert torch.equal(strongest_peaks(peaks, maps, 9), peaks)

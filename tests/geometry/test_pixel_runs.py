"""Bit-packed runs and contours against plain numpy and scipy on unpacked masks."""

import numpy as np
import pytest
from scipy import ndimage

from prm_bench.geometry.pixel_runs import (
    Runs,
    combine_shifted,
    gallery_runs,
    pack_rows,
    prefix_sums,
    set_bits,
    unpack_rows,
)

# widths around the 64-pixel word: one short, exact, one over, and two words
SHAPES = [(1, 1), (3, 7), (9, 63), (5, 64), (6, 65), (4, 128), (17, 30), (2, 200)]


def masks_of(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Noise, blocks, full and empty masks, and rows that run into the next row."""
    masks = rng.random((count, height, width)) < rng.random((count, 1, 1))
    masks[0] = False
    if count > 1:
        masks[1] = True
    if count > 2:
        masks[2] = False
        masks[2, : max(1, height // 2)] = True  # whole rows: one run across them
    return masks


def scipy_gradient(masks: np.ndarray, width: int) -> np.ndarray:
    """Dilation and not erosion by scipy's filters (a width x width box at origin 0);
    outside is background for the dilation and foreground for the erosion."""
    size = (1, width, width)
    dilated = ndimage.maximum_filter(masks, size=size, mode="constant", cval=False)
    eroded = ndimage.minimum_filter(masks, size=size, mode="constant", cval=True)
    return dilated & ~eroded


def reference_runs(masks: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per mask, the maximal runs of consecutive row-major flat indices, written out."""
    found = []
    for mask in masks:
        flat = np.flatnonzero(mask.ravel())
        runs: list[tuple[int, int]] = []
        for index in flat:
            if runs and runs[-1][1] == index:
                runs[-1] = (runs[-1][0], index + 1)
            else:
                runs.append((index, index + 1))
        found.append(runs)
    return found


def test_packing_round_trips():
    masks = masks_of(np.random.default_rng(9), 3, 5, 130)
    bits = pack_rows(masks, margin=7)
    assert bits.dtype == np.dtype("<u8") and bits.shape == (3, 5, 3)  # 130 + 7 bits: 3 words
    np.testing.assert_array_equal(unpack_rows(bits, 130), masks)
    assert not unpack_rows(bits, 192)[..., 130:].any()  # the padding is 0
    # decoded COCO RLE comes column-major per mask: the same bits
    column_major = np.moveaxis(np.asfortranarray(np.moveaxis(masks, 0, -1)), -1, 0)
    assert not column_major.flags.c_contiguous
    np.testing.assert_array_equal(pack_rows(column_major, margin=7), bits)


@pytest.mark.parametrize(("height", "width"), SHAPES)
def test_runs_are_the_maximal_runs_of_flat_pixels(height, width):
    masks = masks_of(np.random.default_rng(height * width), 5, height, width)
    runs = Runs.from_masks(masks)
    for index, expected in enumerate(reference_runs(masks)):
        first, last = runs.offsets[index], runs.offsets[index + 1]
        starts, ends = runs.starts[first:last].tolist(), runs.ends[first:last].tolist()
        got = list(zip(starts, ends, strict=True))
        assert got == expected
    np.testing.assert_array_equal(runs.areas(), masks.sum(axis=(1, 2)))
    for index, mask in enumerate(masks):
        np.testing.assert_array_equal(runs.dense(index, (height, width)), mask)
    assert runs.starts.dtype == runs.ends.dtype == runs.offsets.dtype == np.int64


def test_set_bits_are_the_sorted_positions_of_the_ones():
    rng = np.random.default_rng(3)
    words = rng.integers(0, 2**63, 300, dtype=np.uint64) << rng.integers(0, 2, 300).astype(
        np.uint64
    )
    words[rng.random(300) < 0.4] = 0
    words[:4] = [2**64 - 1, 2**63, 1, 0]  # every bit, the top bit, the lowest bit, none
    unpacked = np.unpackbits(words.astype("<u8").view(np.uint8), bitorder="little")
    np.testing.assert_array_equal(set_bits(words), np.flatnonzero(unpacked))
    assert set_bits(np.zeros(3, dtype=np.uint64)).tolist() == []


def test_no_masks_give_no_runs():
    runs = Runs.from_masks(np.zeros((0, 4, 5), dtype=bool))
    assert len(runs) == 0 and len(runs.starts) == 0 and runs.offsets.tolist() == [0]


def blobs_of(rng: np.random.Generator, count: int, height: int, width: int) -> np.ndarray:
    """Small boxes anywhere, touching the borders too: row spans of every length, in
    every place, so the cropped spans meet the image's edges and each other."""
    masks = np.zeros((count, height, width), dtype=bool)
    for mask in masks[1:]:  # the first stays empty
        y, x = rng.integers(-2, height), rng.integers(-2, width)
        mask[max(y, 0) : y + rng.integers(1, 5), max(x, 0) : x + rng.integers(1, 9)] = True
    return masks


def same_runs(a: Runs, b: Runs) -> bool:
    return all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("starts", "ends", "offsets"))


@pytest.mark.parametrize(("height", "width"), SHAPES)
@pytest.mark.parametrize("contour_width", [1, 2, 3, 4, 5, 8, 9])
def test_gallery_runs_are_the_masks_and_the_scipy_gradient(height, width, contour_width):
    rng = np.random.default_rng(height + width)
    for masks in (masks_of(rng, 4, height, width), blobs_of(rng, 9, height, width)):
        bits = pack_rows(masks, margin=contour_width)
        expected = scipy_gradient(masks, contour_width)
        # small chunks too: spans in other groups must not see each other
        for chunk_bytes in (1, 1 << 18):
            runs, contours = gallery_runs(bits, width, contour_width, chunk_bytes)
            assert same_runs(runs, Runs.from_masks(masks))
            assert same_runs(contours, Runs.from_masks(expected))


def test_gallery_runs_refuse_rows_without_room_to_shift():
    bits = pack_rows(np.ones((1, 3, 62), dtype=bool), margin=1)  # 2 spare bits
    with pytest.raises(ValueError, match="margin"):
        gallery_runs(bits, 62, 5)


def test_gallery_runs_of_no_masks_or_empty_ones_are_empty():
    for masks in (np.zeros((0, 4, 5), dtype=bool), np.zeros((3, 4, 5), dtype=bool)):
        for runs in gallery_runs(pack_rows(masks, margin=3), 5, 3):
            assert len(runs) == len(masks) and len(runs.starts) == 0
            assert runs.offsets.tolist() == [0] * (len(masks) + 1)


@pytest.mark.parametrize("offset", [-130, -64, -63, -5, -1, 0, 1, 7, 64, 65, 200])
@pytest.mark.parametrize("combine", [np.bitwise_or, np.bitwise_xor])
def test_combine_shifted_moves_the_bit_string(offset, combine):
    rng = np.random.default_rng(abs(offset))
    src = rng.integers(0, 2**63, (2, 3, 3), dtype=np.uint64)
    dst = rng.integers(0, 2**63, (2, 3, 3), dtype=np.uint64)
    string = np.unpackbits(src.view(np.uint8), bitorder="little")
    moved = np.zeros_like(string)
    positions = np.arange(len(string)) + offset
    inside = (positions >= 0) & (positions < len(string))
    moved[inside] = string[positions[inside]]
    before = np.unpackbits(dst.view(np.uint8), bitorder="little")
    expected = combine(before, moved)
    got = combine_shifted(dst.copy(), src, offset, combine)
    np.testing.assert_array_equal(np.unpackbits(got.view(np.uint8), bitorder="little"), expected)


def test_prefix_sums_add_in_numpys_order():
    import torch

    rng = np.random.default_rng(3)
    maps = rng.random((4, 5000)) ** 8
    expected = np.zeros((5001, 4))
    np.cumsum(maps.T, axis=0, out=expected[1:])
    threads = torch.get_num_threads()
    np.testing.assert_array_equal(prefix_sums(maps), expected)  # bit for bit
    assert torch.get_num_threads() == threads  # the scan's single thread is given back
    frozen = maps.copy()
    frozen.flags.writeable = False  # as a stored array may be
    np.testing.assert_array_equal(prefix_sums(frozen), expected)
    flags = rng.random((2, 300)) < 0.5
    counts = prefix_sums(flags)
    assert counts.dtype == np.int32
    np.testing.assert_array_equal(counts[1:], np.cumsum(flags.T, axis=0))


def test_run_sums_equal_sequential_numpy_sums():
    """The sums over runs are the same float64 additions as before they moved to torch."""
    rng = np.random.default_rng(4)
    masks = masks_of(rng, 6, 20, 70)
    maps = rng.random((3, 20 * 70))
    runs = Runs.from_masks(masks)
    prefix = prefix_sums(maps)
    per_run = prefix[runs.ends] - prefix[runs.starts]
    running = np.zeros((len(per_run) + 1, 3))
    np.cumsum(per_run, axis=0, out=running[1:])
    expected = (running[runs.offsets[1:]] - running[runs.offsets[:-1]]).T
    np.testing.assert_array_equal(runs.sums(prefix), expected)
    np.testing.assert_allclose(expected, maps @ masks.reshape(6, -1).T, rtol=1e-12)

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from prm_bench.masks import encode_rle, mask_iou, rle_box


def test_mask_iou_matches_hand_counts():
    a = np.zeros((2, 4, 4), dtype=bool)
    a[0, :2, :2] = True  # 4 cells
    a[1, :, :] = True  # 16 cells
    b = np.zeros((3, 4, 4), dtype=bool)
    b[0, :2, :4] = True  # 8 cells, 4 shared with a[0]
    b[2, 3, 3] = True  # 1 cell
    expected = np.array([[4 / 8, 0.0, 0.0], [8 / 16, 0.0, 1 / 16]])
    np.testing.assert_allclose(mask_iou(a, b), expected)


def test_mask_iou_agrees_with_pycocotools():
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 9, 7)) < 0.4, rng.random((6, 9, 7)) < 0.3
    rles = lambda m: [mask_utils.encode(np.asfortranarray(x.astype(np.uint8))) for x in m]  # noqa: E731
    reference = mask_utils.iou(rles(a), rles(b), [0] * len(b))
    np.testing.assert_allclose(mask_iou(a, b), reference, rtol=1e-6)


def test_mask_iou_refuses_different_sizes():
    with pytest.raises(ValueError, match="mask sizes differ"):
        mask_iou(np.zeros((1, 3, 3), bool), np.zeros((1, 3, 4), bool))


def test_rle_round_trip_and_box():
    mask = np.zeros((6, 5), dtype=bool)
    mask[1:4, 2:5] = True
    rle = encode_rle(mask)
    assert isinstance(rle["counts"], str) and rle["size"] == [6, 5]
    decoded = mask_utils.decode({**rle, "counts": rle["counts"].encode()}).astype(bool)
    assert np.array_equal(decoded, mask)
    assert rle_box(rle) == [2.0, 1.0, 3.0, 3.0]

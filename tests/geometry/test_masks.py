import numpy as np
import pytest
from pycocotools import mask as mask_utils

from prm_bench.geometry.masks import encode_rle, mask_iou, rle_box


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


@pytest.mark.parametrize("shape", [(1, 1), (9, 7), (8, 8), (5, 13), (31, 33)])
def test_mask_iou_equals_the_float32_ratio_of_exact_counts(shape):
    # 63, 64, 65 and 1023 pixels: the packed words end inside, at and past a word
    rng = np.random.default_rng(sum(shape))
    a = rng.random((4, *shape)) < 0.5
    b = rng.random((3, *shape)) < 0.3
    a[0], b[0] = False, False  # an empty pair: IoU 0
    inter = np.einsum("ni,mi->nm", a.reshape(4, -1).astype(int), b.reshape(3, -1).astype(int))
    union = a.reshape(4, -1).sum(1)[:, None] + b.reshape(3, -1).sum(1)[None] - inter
    expected = np.where(
        union > 0, inter.astype(np.float32) / np.maximum(union, 1).astype(np.float32), 0
    ).astype(np.float32)
    result = mask_iou(a, b)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, expected)  # bit for bit
    np.testing.assert_array_equal(mask_iou(b, a), expected.T)

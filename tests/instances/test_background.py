import numpy as np
from PIL import Image

from prm_bench.instances.background import background_mask, legacy_resize

H, W = 24, 20


def test_background_mask_modes_differ_and_follow_the_mean_rule():
    crm = np.random.default_rng(1).standard_normal((5, 4))
    bicubic = background_mask(crm, (20, 16), 0.95, "bicubic")
    legacy = background_mask(crm, (20, 16), 0.95, "legacy")
    assert bicubic.shape == legacy.shape == (20, 16)
    assert not np.array_equal(bicubic, legacy)
    resized = legacy_resize(crm, (20, 16))
    assert np.array_equal(legacy, resized < 0.95 * resized.mean())
    # legacy resize goes through 8 bits: min -> 0, max -> 255 before the bicubic resize
    same = legacy_resize(crm, crm.shape)
    assert same.min() == 0 and same.max() == 255


def test_legacy_resize_matches_the_8_bit_pil_path():
    values = np.array([[0.0, 1.0], [2.0, 4.0]])
    byte = np.array([[0, 64], [128, 255]], dtype=np.uint8)  # (v / 4 * 255 + 0.5) truncated
    expected = np.asarray(Image.fromarray(byte).resize((3, 5), Image.BICUBIC), dtype=np.float64)
    np.testing.assert_array_equal(legacy_resize(values, (5, 3)), expected)

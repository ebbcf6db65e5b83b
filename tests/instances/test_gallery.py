import numpy as np
import pytest
from scipy import ndimage

from prm_bench.geometry.pixel_runs import gallery_runs, pack_rows, prefix_sums
from prm_bench.instances.gallery import prepare_gallery
from prm_bench.instances.retrieval import retrieval_scores, retrieve
from prm_bench.instances.retrieval_options import RetrievalConfig
from tests.instances.conftest import H, W, reference_contour, scene


def dense_contours(masks: np.ndarray, width: int) -> np.ndarray:
    """The contours a prepared gallery uses, as bool masks (P, H, W)."""
    _, contours = gallery_runs(pack_rows(masks, margin=width), masks.shape[2], width)
    return np.stack([contours.dense(p, masks.shape[1:]) for p in range(len(masks))])


def test_contours_match_the_written_out_gradient():
    masks, *_ = scene(3)
    for width in (1, 3, 5):
        got = dense_contours(masks, width)
        for m, g in zip(masks, got, strict=True):
            assert np.array_equal(g, reference_contour(m, width))
    # the image border is not a contour: a full mask has none
    assert not dense_contours(np.ones((1, 8, 8), bool), 5).any()


def test_prepared_gallery_is_reused_and_checked():
    masks, prms, crm, peaks = scene(4)
    params = RetrievalConfig()
    gallery = prepare_gallery(masks, (H, W), params)
    fresh = retrieve(prms, peaks, crm, masks, params)
    reused = retrieve(prms, peaks, crm, gallery, params)
    assert [(i["proposal"], i["peaks"]) for i in fresh] == [
        (i["proposal"], i["peaks"]) for i in reused
    ]
    with pytest.raises(ValueError, match="prepared gallery was made for other parameters"):
        retrieve(prms, peaks, crm, gallery, {"contour_width": 3})


def test_proposals_of_another_size_are_resized_nearest():
    masks = np.zeros((1, H // 2, W // 2), dtype=bool)
    masks[0, 2:5, 3:6] = True
    gallery = prepare_gallery(masks, (H, W))
    big = gallery.dense(0)
    assert big.shape == (H, W) and big.sum() == 4 * masks.sum()
    assert np.array_equal(big, ndimage.zoom(masks[0], 2, order=0))


def test_runs_sum_like_dense_masks_and_round_trip():
    masks, prms, *_ = scene(5, proposals=6)
    masks[2] = False  # an empty mask sums to 0
    masks[3, :, :] = False
    masks[3, 4, :] = masks[3, 5, :3] = True  # a run that wraps from one row into the next
    gallery = prepare_gallery(masks, (H, W), {"min_area": 0.0})
    dense = prms.reshape(len(prms), -1) @ masks.reshape(len(masks), -1).T.astype(float)
    np.testing.assert_allclose(gallery.masks.sums(prefix_sums(prms.reshape(len(prms), -1))), dense)
    for index, mask in enumerate(masks):
        assert np.array_equal(gallery.dense(index), mask)
    assert gallery.valid[2]  # min_area 0 keeps the empty mask
    scores = retrieval_scores(prms, np.zeros((len(prms), 4), int), np.zeros((1, 1, 2, 2)), gallery,
                              {"min_area": 0.0, "terms": "instance-only"})  # fmt: skip
    assert (scores[:, 2] == 0).all()

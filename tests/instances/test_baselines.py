import numpy as np
import pytest

from prm_bench.instances.baselines import BASELINES, BaselineConfig, cam_baseline, cam_boxes

SIZE = (32, 40)


def two_blobs() -> np.ndarray:
    cam = np.zeros(SIZE)
    cam[4:10, 5:15] = 2.0  # rows 4-9, cols 5-14
    cam[20:28, 25:31] = 1.0  # rows 20-27, cols 25-30: 1.0 >= 0.2 * 2.0
    cam[0, 39] = 0.1  # below the threshold
    return cam


def test_cam_boxes_are_the_thresholded_components():
    boxes = cam_boxes(two_blobs(), BaselineConfig())
    assert boxes == [((5, 4, 14, 9), 2.0), ((25, 20, 30, 27), 1.0)]
    assert cam_boxes(two_blobs(), BaselineConfig(cam_threshold=0.6)) == [((5, 4, 14, 9), 2.0)]
    assert cam_boxes(-np.ones(SIZE), BaselineConfig()) == []


def maps_for(cam: np.ndarray) -> np.ndarray:
    """Class response maps already at image size (upsampling is then the identity)."""
    maps = np.zeros((1, 2, *SIZE), dtype=np.float32)
    maps[0, 0] = cam
    return maps


def test_rect_and_ellipse_masks():
    maps = maps_for(two_blobs())
    scores = np.array([[1.0, -1.0]])  # class 1 is absent
    rects = cam_baseline("cam-rect", maps, scores, SIZE)
    assert [i["class"] for i in rects] == [0, 0]
    assert [i["score"] for i in rects] == [2.0, 1.0]
    assert rects[0]["mask"].sum() == 6 * 10 and rects[0]["mask"][4:10, 5:15].all()
    ellipses = cam_baseline("cam-ellipse", maps, scores, SIZE)
    for rect, ellipse in zip(rects, ellipses, strict=True):
        assert not (ellipse["mask"] & ~rect["mask"]).any()  # inscribed
        assert ellipse["mask"].sum() == pytest.approx(np.pi / 4 * rect["mask"].sum(), rel=0.15)


def test_proposal_baseline_takes_the_best_overlapping_proposal():
    proposals = np.zeros((3, *SIZE), dtype=bool)
    proposals[0, 20:28, 25:31] = True  # exactly the second box
    proposals[1, 3:10, 5:15] = True  # nearly the first box
    proposals[2, :, :20] = True
    found = cam_baseline(
        "cam-proposal", maps_for(two_blobs()), np.array([[1.0, 0.0]]), SIZE, proposals
    )
    assert [i["proposal"] for i in found] == [1, 0]
    assert np.array_equal(found[1]["mask"], proposals[0])
    with pytest.raises(ValueError, match="needs a non-empty proposal gallery"):
        cam_baseline("cam-proposal", maps_for(two_blobs()), np.array([[1.0, 0.0]]), SIZE)


@pytest.mark.parametrize("name", BASELINES.names())
def test_every_baseline_upsamples_small_maps(name):
    small = np.zeros((1, 1, 4, 5), dtype=np.float32)
    small[0, 0, 1, 1] = 3.0
    proposals = np.ones((1, *SIZE), dtype=bool)
    found = cam_baseline(name, small, np.array([[0.5]]), SIZE, proposals)
    assert len(found) == 1 and found[0]["mask"].shape == SIZE and found[0]["mask"].any()

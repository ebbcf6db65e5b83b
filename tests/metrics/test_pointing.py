import numpy as np
import pytest

from prm_bench.metrics import (
    pointing_map,
)
from prm_bench.metrics.pointing import max_points, scaled_tolerance


def test_max_points_and_pointing_map():
    maps = np.zeros((2, 4, 4))
    maps[0, 1, 1] = 5.0
    maps[1, 2, 1] = 5.0
    points = max_points(maps, (40, 40))
    # cell 1 of 4 is centred on pixel 14.5 of 40: pixels 14 and 15 tie, the first wins
    assert points.tolist() == [[14, 14], [24, 14]]
    truth = [
        [{"class": 0, "box": (0, 0, 9, 9)}],
        [{"class": 1, "box": (20, 20, 30, 30)}],
    ]
    predictions = [
        {"points": np.array([[5, 5], [0, 0]]), "scores": np.array([0.9, 0.1])},
        {"points": np.array([[5, 5], [45, 25]]), "scores": np.array([0.95, 0.8])},
    ]
    # class 0: image 2 (no class 0) ranks first -> F, T: AP 1/2.
    # class 1: the point is 15 px below the box: a hit with 18 px tolerance, a miss with 10.
    loose = pointing_map(predictions, truth, tolerance=18)
    assert loose["pointing_AP/0"] == pytest.approx(0.5)
    assert loose["pointing_AP/1"] == pytest.approx(1.0)
    assert loose["pointing_mAP"] == pytest.approx(0.75)
    assert pointing_map(predictions, truth, tolerance=10)["pointing_AP/1"] == 0.0


def test_pointing_tolerance_scales_with_the_image():
    assert scaled_tolerance(18, (375, 500), 500) == 18.0  # VOC scale
    assert scaled_tolerance(18, (128, 128), 500) == pytest.approx(4.608)
    assert scaled_tolerance(18, (128, 128), None) == 18.0
    truth = [[{"class": 0, "box": (0, 0, 9, 9)}], [{"class": 0, "box": (0, 0, 9, 9)}]]
    predictions = [
        {"points": np.array([[5, 15]]), "scores": np.array([0.9])},  # 6 px right of the box
        {"points": np.array([[5, 15]]), "scores": np.array([0.8])},
    ]
    assert pointing_map(predictions, truth, tolerance=[6, 6])["pointing_mAP"] == 1.0
    # the second image's tolerance is 5 px: a miss ranked after a hit, AP 1/2
    assert pointing_map(predictions, truth, tolerance=[6, 5])["pointing_mAP"] == 0.5

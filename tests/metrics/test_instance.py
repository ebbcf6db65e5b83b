import numpy as np
import pytest

from prm_bench.metrics import (
    abo,
    coco_map,
    voc_map,
)
from tests.metrics.conftest import A, B, H, W, fixture


def test_voc_map_matches_the_hand_computed_values():
    predictions, truth = fixture()
    result = voc_map(predictions, truth, (0.5, 0.75), num_classes=3)
    # t = 0.5: hits T F T over 2 positives: precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1
    # -> AP = 1/2 * 1 + 1/2 * 2/3; t = 0.75: T F F -> AP = 1/2.
    assert result["AP@0.5/0"] == pytest.approx(0.5 + 1 / 3)
    assert result["AP@0.75/0"] == pytest.approx(0.5)
    assert result["AP@0.5/1"] == 0.0  # ground truth, no prediction
    assert np.isnan(result["AP@0.5/2"])  # predictions, no ground truth: left out
    assert result["mAP@0.5"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert result["mAP@0.75"] == pytest.approx(0.25)


def test_voc_map_11_point():
    predictions, truth = fixture()
    result = voc_map(predictions, truth, (0.5,), use_07_metric=True, num_classes=2)
    # recall points 0..0.5 see precision 1, points 0.6..1.0 see 2/3
    assert result["AP@0.5/0"] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_voc_map_edge_cases():
    predictions, truth = fixture()
    empty = voc_map([[], []], truth, (0.5,))
    assert empty["mAP@0.5"] == 0.0
    # a prediction in an image without ground truth is a false positive
    extra = [[*predictions[0]], [{"mask": A, "class": 0, "score": 0.95}]]
    result = voc_map(extra, truth, (0.5,), num_classes=2)
    # hits F T F T: precision 0, 1/2, 1/3, 1/2 at recall 0, 1/2, 1/2, 1 -> 1/2 * 1/2 + 1/2 * 1/2
    assert result["AP@0.5/0"] == pytest.approx(0.5)
    # an empty predicted mask never matches
    blank = [[{"mask": np.zeros((H, W), bool), "class": 0, "score": 1.0}], []]
    assert voc_map(blank, truth, (0.5,), num_classes=2)["AP@0.5/0"] == 0.0
    # a difficult instance is neither counted nor penalised
    hard = [[{**truth[0][0], "difficult": True}, truth[0][1]], truth[1]]
    only_b = [[{"mask": A, "class": 0, "score": 0.9}, {"mask": B, "class": 0, "score": 0.5}], []]
    assert voc_map(only_b, hard, (0.5,), num_classes=2)["AP@0.5/0"] == 1.0
    with pytest.raises(ValueError, match="prediction lists"):
        voc_map([[]], truth)


def test_coco_and_voc_agree_where_the_protocols_coincide():
    truth = [[{"mask": A, "class": 0}, {"mask": B, "class": 1}], [{"mask": B, "class": 0}]]
    predictions = [
        [{"mask": A, "class": 0, "score": 0.9}, {"mask": B, "class": 1, "score": 0.4}],
        [{"mask": B, "class": 0, "score": 0.8}],
    ]
    voc = voc_map(predictions, truth, (0.5, 0.75), num_classes=3)
    coco = coco_map(predictions, truth, (0.5, 0.75), num_classes=3)
    for t in ("0.5", "0.75"):
        assert coco[f"coco_mAP@{t}"] == pytest.approx(voc[f"mAP@{t}"]) == pytest.approx(1.0)
        assert np.isnan(coco[f"coco_AP@{t}/2"]) and np.isnan(voc[f"AP@{t}/2"])
    # drop class 1's prediction: both give AP 0 for it
    fewer = [predictions[0][:1], predictions[1]]
    assert (
        coco_map(fewer, truth, (0.5,))["coco_AP@0.5/1"]
        == voc_map(fewer, truth, (0.5,))["AP@0.5/1"]
        == 0.0
    )


def test_coco_map_on_the_fixture_uses_101_point_precision():
    predictions, truth = fixture()
    result = coco_map(predictions, truth, (0.5,), num_classes=3)
    # COCO matches the duplicate to nothing (A is taken, B's IoU with A is 0): T F T.
    # 101 recall points: 51 at precision 1 (recall <= 0.5), 50 at 2/3.
    assert result["coco_AP@0.5/0"] == pytest.approx((51 + 50 * 2 / 3) / 101)
    assert result["coco_AP@0.5/1"] == 0.0
    assert np.isnan(result["coco_AP@0.5/2"])
    assert coco_map([[], []], truth, (0.5,))["coco_mAP@0.5"] == 0.0


def test_abo_per_instance_and_per_class():
    predictions, truth = fixture()
    result = abo(predictions, truth, num_classes=3)
    assert result["abo"] == pytest.approx((1.0 + 0.625 + 0.0) / 3)
    assert result["abo/0"] == pytest.approx(0.8125)
    assert result["abo/1"] == 0.0
    assert np.isnan(result["abo/2"])
    assert result["abo_class_mean"] == pytest.approx((0.8125 + 0.0) / 2)

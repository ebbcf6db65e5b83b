import numpy as np

from prm_bench.metrics import (
    semantic_miou,
)
from tests.metrics.conftest import A


def test_semantic_miou_with_void():
    gt = np.zeros((2, 2), bool)
    gt[0, 0] = True
    pred = np.zeros((2, 2), bool)
    pred[0, :] = True
    void = np.zeros((2, 2), bool)
    void[1, 1] = True
    predicted = [[{"mask": pred, "class": 0, "score": 1.0}]]
    result = semantic_miou(predicted, [[{"mask": gt, "class": 0}]], num_classes=2, void=[void])
    # kept pixels (0,0) (0,1) (1,0): class 0 1/2, background 1/2, class 1 absent
    assert result["IoU/0"] == 0.5 and result["IoU/background"] == 0.5
    assert np.isnan(result["IoU/1"]) and result["mIoU"] == 0.5


def test_semantic_overlaps_go_to_the_higher_score():
    gt = [[{"mask": A, "class": 1}]]
    low = {"mask": A, "class": 0, "score": 0.2}
    high = {"mask": A, "class": 1, "score": 0.9}
    assert semantic_miou([[low, high]], gt, num_classes=2)["IoU/1"] == 1.0
    assert semantic_miou([[{**high, "score": 0.1}, low]], gt, num_classes=2)["IoU/1"] == 0.0

import numpy as np
import pytest

from prm_bench.metrics import (
    prm_quality,
)
from tests.metrics.conftest import A, B, H, W, box


def test_prm_quality_by_objects_per_image():
    prm = np.zeros((1, H, W))
    prm[0][A] = 0.7 / A.sum()
    prm[0][~A] = 0.3 / (~A).sum()  # 70 % on instance A
    bad = np.zeros((1, H, W))
    bad[0][B] = 0.4 / B.sum()
    bad[0][~B] = 0.6 / (~B).sum()
    truth = [
        [{"mask": A, "class": 0}],
        [{"mask": B, "class": 0}, {"mask": A, "class": 1}],
    ]
    predictions = [
        {"prms": prm, "classes": np.array([0])},
        {"prms": np.concatenate([bad, prm]), "classes": np.array([0, 0])},  # 2nd: no class-0 A
    ]
    result = prm_quality(predictions, truth)
    # scores: 0.7 (1 object); 0.4 on B, and for the class-0 PRM on A only its share on
    # B (A is class 1 there): 0.3 * 48 / 152 (2 objects)
    on_b = 0.3 * 48 / 152
    assert result["prm_correct"] == pytest.approx(1 / 3)
    assert result["prm_score"] == pytest.approx((0.7 + 0.4 + on_b) / 3)
    assert result["prm_correct/1"] == 1.0 and result["prm_score/1"] == pytest.approx(0.7)
    assert result["prm_correct/2-5"] == 0.0
    assert result["prm_score/2-5"] == pytest.approx((0.4 + on_b) / 2)
    assert result["prm_count/2-5"] == 2.0 and np.isnan(result["prm_correct/6+"])


def test_prm_quality_leaves_void_out_and_reports_absent_classes_apart():
    ring = box(1, 9, 0, 10) & ~A  # a void band around instance A
    prm = np.zeros((1, H, W))
    prm[0][A] = 0.4 / A.sum()
    prm[0][ring] = 0.4 / ring.sum()
    rest = ~(A | ring)
    prm[0][rest] = 0.2 / rest.sum()
    absent = prm.copy()  # same map, but for class 1, which the image does not contain
    truth = [[{"mask": A, "class": 0}]]
    predictions = [{"prms": np.concatenate([prm, absent]), "classes": np.array([0, 1])}]
    plain = prm_quality(predictions, truth)
    assert plain["prm_score"] == pytest.approx(0.4 / 2) and plain["prm_correct"] == 0.0
    voided = prm_quality(predictions, truth, void=[ring])
    # 0.4 on A of the 0.6 outside the void: 2/3, correct; the class-1 PRM scores 0
    assert voided["prm_score"] == pytest.approx((0.4 / 0.6) / 2)
    assert voided["prm_correct"] == 0.5
    assert voided["prm_correct_present"] == 1.0
    assert voided["prm_score_present"] == pytest.approx(0.4 / 0.6)
    assert voided["prm_absent"] == 0.5

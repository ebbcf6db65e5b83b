import numpy as np
import pytest

from prm_bench.config import load_plan
from prm_bench.metrics import (
    METRICS,
    EvalInputs,
    Evaluation,
    Evaluator,
    abo,
    coco_map,
    evaluate,
    pointing_map,
    prm_quality,
    protocol_of,
    semantic_miou,
    voc_map,
)
from prm_bench.metrics.ap import average_precision, weighted_average_precision
from prm_bench.metrics.bootstrap import metric_samples, supports
from prm_bench.metrics.instance import abo_statistics, voc_statistics
from prm_bench.metrics.pointing import max_points, scaled_tolerance
from prm_bench.metrics.semantic import confusions
from prm_bench.orchestrate.runner import RunOptions, run_plan

H, W = 10, 20


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


A = box(2, 8, 1, 9)  # 48 pixels
B = box(2, 8, 11, 19)  # 48 pixels
B_PART = box(2, 7, 11, 17)  # 30 pixels inside B: IoU 30 / 48 = 0.625


def fixture():
    truth = [
        [{"mask": A, "class": 0}, {"mask": B, "class": 0}],
        [{"mask": A, "class": 1}],
    ]
    predictions = [
        [
            {"mask": A, "class": 0, "score": 0.9},  # TP
            {"mask": A, "class": 0, "score": 0.8},  # duplicate of a taken instance: FP
            {"mask": B_PART, "class": 0, "score": 0.7},  # TP at 0.5, FP at 0.75
            {"mask": B, "class": 2, "score": 0.6},  # class 2 has no ground truth
        ],
        [],  # class 1 is never predicted
    ]
    return predictions, truth


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


def test_average_precision_ranks_stably_and_handles_no_positives():
    assert average_precision([0.5, 0.5], [True, False], 1) == 1.0  # first on a tie ranks first
    assert np.isnan(average_precision([0.3], [False], 0))
    assert average_precision([], [], 3) == 0.0


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


def test_metric_registry_lists_every_metric():
    assert METRICS.names() == ["voc-map", "coco-map", "abo", "pointing", "prm-quality", "semantic"]


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


@pytest.mark.parametrize("use_07", [False, True])
def test_weighted_ap_equals_the_ap_of_the_repeated_list(use_07):
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 6, 40).astype(float)  # many ties
    hits = rng.random(40) < 0.5
    weights = rng.integers(0, 4, (5, 40))
    positives = hits.sum() + 3
    got = weighted_average_precision(scores, hits, positives * 2, weights, use_07)
    for row, value in zip(weights, got, strict=True):
        order = np.argsort(-scores, kind="stable")
        repeated = np.repeat(order, row[order])
        expected = average_precision(scores[repeated], hits[repeated], positives * 2, use_07)
        assert value == pytest.approx(expected, abs=1e-12)


def test_per_image_statistics_with_unit_weights_give_the_reported_metrics():
    predictions, truth = fixture()
    stats = voc_statistics(predictions, truth, [0.5, 0.75], False, 3)
    stats |= abo_statistics(predictions, truth, 3)
    ones = np.ones((1, len(truth)))
    reported = voc_map(predictions, truth, [0.5, 0.75], num_classes=3)
    assert metric_samples(stats, "mAP@0.5", ones)[0] == reported["mAP@0.5"]
    assert metric_samples(stats, "mAP@0.75", ones)[0] == reported["mAP@0.75"]
    assert metric_samples(stats, "abo", ones)[0] == pytest.approx(abo(predictions, truth, 3)["abo"])
    confusion = {"mIoU/confusion": confusions(predictions, truth, 3)}
    miou = semantic_miou(predictions, truth, 3)["mIoU"]
    assert metric_samples(confusion, "mIoU", ones)[0] == pytest.approx(miou)
    # an image drawn twice counts twice: AP as if the dataset held it twice
    twice = [*predictions, predictions[0]], [*truth, truth[0]]
    doubled = voc_map(*twice, [0.5], num_classes=3)["mAP@0.5"]
    assert metric_samples(stats, "mAP@0.5", np.array([[2.0, 1.0]]))[0] == pytest.approx(doubled)


def evaluation_inputs():
    predictions, truth = fixture()
    for image in truth:
        for instance in image:
            ys, xs = np.nonzero(instance["mask"])
            instance["box"] = (xs.min(), ys.min(), xs.max(), ys.max())
    crm = np.zeros((1, 3, H // 2, W // 2), dtype=np.float32)
    crm[0, 0, 2, 2] = 1.0  # class 0's maximum lies on A
    inferred = [
        {
            "crm": crm,
            "scores": np.array([[2.0, -1.0, 0.5]]),
            "prms": np.stack([A, B]).astype(np.float32),
            "peaks": np.array([[0, 0, 2, 2], [0, 0, 2, 7]]),
        }
    ] * 2
    return EvalInputs(
        predictions=predictions,
        truth=truth,
        void=[None, None],
        class_names=["a", "b", "c"],
        inferred=inferred,
        image_sizes=[(H, W), (H, W)],
    )


class Options:
    iou_thresholds = (0.5, 0.75)
    use_07_metric = False
    tolerance = 1.0
    tolerance_reference = None
    prm_threshold = 0.5


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_entry_reports_what_it_declares(name):
    entry = METRICS.get(name)
    result = evaluate([name], evaluation_inputs(), Options())
    assert result.values, name
    for metric in result.values:  # every value is traced back to this entry
        assert entry.reports(metric) and protocol_of(metric) == entry.protocol, metric
    assert set(entry.headlines(Options())) <= set(result.values)
    for metric in entry.headlines(Options()):  # the bootstrap recomputes what it stores
        if supports(result.statistics, metric):
            ones = np.ones((1, 2))
            assert metric_samples(result.statistics, metric, ones)[0] == pytest.approx(
                result.values[metric], nan_ok=True
            )


def test_a_registered_metric_is_computed_by_the_evaluate_stage_and_filed(tmp_path, make_shapes):
    def mean_count(inputs, options):
        return Evaluation({"mean_instances": float(np.mean([len(p) for p in inputs.predictions]))})

    METRICS.add("count", Evaluator("count", "counting", ("mean_instances",), mean_count))
    try:
        root = make_shapes(seed=5, n_train=8, n_val=3, size=48, classes=2, n_tune=0)
        config = {
            "data": {"name": "shapes", "root": str(root)},
            "backbone": {"name": "test_resnet"},
            "train": {"epochs": 1, "batch_size": 8},
            "eval": {"metrics": ["count", "voc-map"]},
        }
        summary = run_plan(load_plan(config).with_run(jobs=1), RunOptions(tmp_path))
        rows = summary.results.set_index("metric")
        assert rows.loc["mean_instances", "protocol"] == "counting"
        assert rows.loc["mAP@0.5", "protocol"] == "voc"
        assert 0 <= rows.loc["mean_instances", "value"] <= 20
    finally:
        METRICS._entries.pop("count")

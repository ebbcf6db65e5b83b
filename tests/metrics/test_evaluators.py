import numpy as np
import pytest

from prm_bench.config import load_plan
from prm_bench.metrics import (
    METRICS,
    EvalInputs,
    Evaluation,
    Evaluator,
    evaluate,
    protocol_of,
)
from prm_bench.metrics.bootstrap import metric_samples, supports
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.stages.retrieve import read_results
from prm_bench.stages.splits import open_split
from prm_bench.stages.store import Store
from tests.metrics.conftest import A, B, H, W, fixture


def test_metric_registry_lists_every_metric():
    assert METRICS.names() == ["voc-map", "coco-map", "abo", "pointing", "prm-quality", "semantic"]


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


# the headline values no per-image statistics recompute, so no claim can get a CI on them:
# COCOeval's (pycocotools keeps no per-image hits), a per-class mean of ABO, a constant
# (the pointing tolerance) and PRM-quality means that are no shares of hits
WITHOUT_STATISTICS = {
    "voc-map": [],
    "coco-map": ["coco_mAP@0.5", "coco_mAP@0.75"],
    "abo": ["abo_class_mean"],
    "pointing": ["pointing_tolerance_px"],
    "prm-quality": ["prm_absent", "prm_score", "prm_score_present"],
    "semantic": [],
}


@pytest.mark.parametrize("name", METRICS.names())
def test_every_metric_entry_reports_what_it_declares(name):
    entry = METRICS.get(name)
    result = evaluate([name], evaluation_inputs(), Options())
    assert result.values, name
    for metric in result.values:  # every value is traced back to this entry
        assert entry.reports(metric) and protocol_of(metric) == entry.protocol, metric
    assert set(entry.headlines(Options())) <= set(result.values)
    headlines = entry.headlines(Options())
    resampled = [m for m in headlines if supports(result.statistics, m)]
    assert sorted(set(headlines) - set(resampled)) == WITHOUT_STATISTICS[name]
    for metric in resampled:  # the bootstrap recomputes what it stores
        ones = np.ones((1, 2))
        assert metric_samples(result.statistics, metric, ones)[0] == pytest.approx(
            result.values[metric], nan_ok=True
        )


def test_a_registered_metric_is_computed_by_the_evaluate_stage_and_filed(tmp_path, make_shapes):
    def mean_count(inputs, options):
        return Evaluation({"mean_instances": float(np.mean([len(p) for p in inputs.predictions]))})

    counting = Evaluator("count", "counting", ("mean_instances",), mean_count)
    root = make_shapes(seed=5, n_train=8, n_val=3, size=48, classes=2, n_tune=0)
    config = {
        "data": {"name": "shapes", "root": str(root)},
        "backbone": {"name": "test_resnet"},
        "train": {"epochs": 1, "batch_size": 8},
        "eval": {"metrics": ["count", "voc-map"]},
    }
    with METRICS.temporarily("count", counting):
        plan = load_plan(config).with_run(jobs=1)
        summary = run_plan(plan, RunOptions(tmp_path))
    assert "count" not in METRICS
    rows = summary.results.set_index("metric")
    assert rows.loc["mean_instances", "protocol"] == "counting"
    assert rows.loc["mAP@0.5", "protocol"] == "voc"
    # the value is the mean number of instances the retrieve stage stored per image
    cell = summary.plan.cells[0]  # its keys bound to the data
    folder = Store(tmp_path / plan.name / "store").path("retrieve", cell.keys["retrieve"])
    ids = open_split(cell.config.data, "evaluated").ids
    stored = read_results(folder, ids)
    assert len(stored) == 3
    assert rows.loc["mean_instances", "value"] == np.mean([len(p) for p in stored])

"""The evaluation protocols as the stages apply them (DESIGN 3): void pixels, the scaled
pointing tolerance, per-image statistics and the retrieval resolution axis."""

import json

import numpy as np
import pytest

from prm_bench.config import load_plan
from prm_bench.data import open_dataset
from prm_bench.metrics.bootstrap import metric_samples
from prm_bench.metrics.semantic import semantic_miou
from prm_bench.orchestrate.preflight import bind_data
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.stages.evaluate import read_statistics
from prm_bench.stages.infer import read_image
from prm_bench.stages.retrieve import read_results
from prm_bench.stages.store import Store


@pytest.fixture(scope="module")
def finished(tmp_path_factory, make_shapes):
    root = make_shapes(seed=5, n_train=24, n_val=6, size=64, classes=3)
    config = {
        "data": {"name": "shapes", "root": str(root), "image_size": 96},
        "backbone": {"name": "test_resnet"},
        "train": {"epochs": 1, "batch_size": 8},
        "infer": {"upsample": 2, "max_peaks": 4},
        "eval": {"metrics": ["voc-map", "abo", "pointing", "prm-quality", "semantic"]},
        "grid": {"retrieval.resolution": ["image", "input"]},
    }
    plan = bind_data(load_plan(config))
    runs = tmp_path_factory.mktemp("runs")
    summary = run_plan(plan.with_run(jobs=1), RunOptions(runs))
    assert not summary.failed_cells
    return plan, Store(runs / plan.name / "store"), root


def test_prms_are_stored_at_the_input_size_and_read_at_the_image_size(finished):
    plan, store, root = finished
    keys = plan.cells[0].keys
    image_id = open_dataset("shapes", root, "val").ids[0]
    stored = read_image(store.path("infer", keys["infer"]), image_id)
    assert stored["prms"].shape[1:] == (96, 96)
    assert stored["image_size"].tolist() == [64, 64]
    resized = read_image(store.path("infer", keys["infer"]), image_id, at_image_size=True)
    assert resized["prms"].shape[1:] == (64, 64)
    np.testing.assert_allclose(resized["prms"].sum(axis=(1, 2)), 1.0)


def test_both_retrieval_resolutions_give_masks_at_the_image_size(finished):
    plan, store, root = finished
    ids = open_dataset("shapes", root, "val").ids
    by_resolution = {}
    for cell in plan.cells:
        folder = store.path("retrieve", cell.keys["retrieve"])
        predictions = read_results(folder, ids)
        assert all(p["mask"].shape == (64, 64) for image in predictions for p in image)
        by_resolution[cell.config.retrieval.resolution] = predictions
    assert set(by_resolution) == {"image", "input"}


def test_metrics_ignore_void_and_statistics_reproduce_them(finished):
    plan, store, root = finished
    dataset = open_dataset("shapes", root, "val", segmentation=True)
    keys = plan.cells[0].keys
    metrics = json.loads((store.path("evaluate", keys["evaluate"]) / "metrics.json").read_text())
    predictions = read_results(store.path("retrieve", keys["retrieve"]), dataset.ids)
    truth = [
        [{"mask": i.mask, "class": i.label} for i in dataset.instances(x)] for x in dataset.ids
    ]
    void = [dataset.void(x) for x in dataset.ids]
    assert all(v.any() for v in void)  # shapes draws a void band round every object
    expected = semantic_miou(predictions, truth, 3, void)["mIoU"]
    assert metrics["mIoU"] == pytest.approx(expected)
    assert metrics["pointing_tolerance_px"] == pytest.approx(18 * 64 / 500)
    stats = read_statistics(store, keys["evaluate"])
    ones = np.ones((1, len(dataset.ids)))
    for metric in ("mAP@0.5", "mAP@0.25", "abo", "pointing_mAP", "prm_correct", "mIoU"):
        value = metric_samples(stats, metric, ones)[0]
        assert value == pytest.approx(metrics[metric], nan_ok=True), metric

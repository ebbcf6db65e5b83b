import numpy as np
import pytest

from prm_bench.metrics import (
    abo,
    semantic_miou,
    voc_map,
)
from prm_bench.metrics.bootstrap import metric_samples
from prm_bench.metrics.instance import abo_statistics, voc_statistics
from prm_bench.metrics.semantic import confusions
from tests.metrics.conftest import fixture


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

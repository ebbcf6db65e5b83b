from dataclasses import asdict

import pytest

from prm_bench.data.base import DataError, check_disjoint
from prm_bench.data.shapes import ShapesSpec
from prm_bench.data.voc import VocDataset

CONFIG = ShapesSpec(seed=7, n_train=10, n_val=6, size=64, classes=4, n_tune=3)


@pytest.fixture(scope="module")
def shapes_root(make_shapes):
    return make_shapes(**asdict(CONFIG))


def test_training_on_evaluation_images_is_refused(shapes_root):
    check_disjoint(VocDataset(shapes_root, "train"), VocDataset(shapes_root, "val"))
    with pytest.raises(DataError, match="6 training images are in the evaluation split"):
        check_disjoint(VocDataset(shapes_root, "trainval"), VocDataset(shapes_root, "val"))

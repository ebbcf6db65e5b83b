from dataclasses import asdict

import numpy as np
import pytest

from prm_bench.data import DATASETS, open_dataset
from prm_bench.data.shapes import ShapesSpec

CONFIG = ShapesSpec(seed=7, n_train=10, n_val=6, size=64, classes=4, n_tune=3)


@pytest.fixture(scope="module")
def shapes_root(make_shapes):
    return make_shapes(**asdict(CONFIG))


def test_every_dataset_kind_opens_the_shapes_tree_alike(shapes_root):
    assert DATASETS.names() == ["voc", "coco", "shapes"]
    readers = [open_dataset(kind, shapes_root, "val", segmentation=True) for kind in DATASETS]
    first = readers[0]
    for reader in readers[1:]:
        assert reader.ids == first.ids and reader.class_names == first.class_names
        for image_id in first.ids:
            a, b = reader.instances(image_id), first.instances(image_id)
            assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b, strict=True))

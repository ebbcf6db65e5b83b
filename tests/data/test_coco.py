from dataclasses import asdict

import numpy as np
import pytest
from pycocotools.coco import COCO

from prm_bench.data.coco import CocoDataset
from prm_bench.data.shapes import ShapesSpec
from prm_bench.data.voc import VocDataset

CONFIG = ShapesSpec(seed=7, n_train=10, n_val=6, size=64, classes=4, n_tune=3)


@pytest.fixture(scope="module")
def shapes_root(make_shapes):
    return make_shapes(**asdict(CONFIG))


def test_coco_json_loads_in_pycocotools_and_matches_the_voc_masks(shapes_root):
    annotation = shapes_root / "annotations" / "instances_val.json"
    assert len(COCO(str(annotation)).getImgIds()) == CONFIG.n_val
    coco = CocoDataset(annotation, shapes_root / "JPEGImages")
    voc = VocDataset(shapes_root, "val", segmentation=True)
    assert coco.ids == voc.ids and coco.class_names == voc.class_names
    for image_id in voc.ids:
        assert np.array_equal(coco.labels(image_id), voc.labels(image_id))
        a, b = coco.instances(image_id), voc.instances(image_id)
        assert [i.label for i in a] == [i.label for i in b]
        assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b, strict=True))

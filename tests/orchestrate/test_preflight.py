"""Bad input exits 2 with one line naming the file, key or value; interruptions stop
cleanly (DESIGN 5; issue: nothing finished is lost, nothing corrupt is trusted)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from prm_bench.config import load_plan
from prm_bench.data.base import DataError
from prm_bench.orchestrate.preflight import preflight
from tests.conftest import small_config


def test_a_missing_shapes_root_is_an_error_unless_generation_is_asked(tmp_path):
    typo = tmp_path / "shapse"
    with pytest.raises(DataError, match="no shapes dataset at"):
        preflight(load_plan(small_config(typo)))
    assert not typo.exists()  # nothing generated where nobody asked for it


def test_preflight_names_a_truncated_image(shapes, tmp_path):
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(shapes, root)
    image = sorted((root / "JPEGImages").glob("*.jpg"))[0]
    os.truncate(image, image.stat().st_size // 2)
    with pytest.raises(DataError, match=image.name):
        preflight(load_plan(small_config(root)))


def test_preflight_names_an_annotation_of_another_size(shapes, tmp_path):
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(shapes, root)
    val = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    png = root / "SegmentationObject" / f"{val}.png"
    with Image.open(png) as image:
        image.resize((30, 20)).save(png)
    with pytest.raises(DataError, match=f"{val}.png is \\(30, 20\\)"):
        preflight(load_plan(small_config(root)))


def test_mixed_training_image_sizes_need_an_image_size(shapes, tmp_path):
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(shapes, root)
    train = (root / "ImageSets" / "Main" / "train.txt").read_text().split()[0]
    for folder, suffix in (("JPEGImages", "jpg"), ("SegmentationObject", "png"),
                           ("SegmentationClass", "png")):  # fmt: skip
        path = root / folder / f"{train}.{suffix}"
        with Image.open(path) as image:
            image.resize((64, 40)).save(path)
    with pytest.raises(DataError, match=r"set data\.image_size"):
        preflight(load_plan(small_config(root)))
    preflight(load_plan(small_config(root, data={"image_size": 48})))  # resized: fine


def _coco(tmp_path, annotation: dict) -> dict:
    images = tmp_path / "coco" / "val"
    images.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.jpg")
    record = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 8, "width": 8}],
        "annotations": [annotation],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "coco" / "annotations").mkdir()
    return record


def test_coco_faults_are_named(tmp_path):
    from prm_bench.data import open_dataset

    record = _coco(tmp_path, {"id": 7, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]})
    path = tmp_path / "coco" / "annotations" / "instances_val.json"
    path.write_text(json.dumps(record))
    dataset = open_dataset("coco", tmp_path / "coco", "val")
    with pytest.raises(DataError, match=r"annotation 7 of a\.jpg has no segmentation"):
        dataset.check("a")
    path.write_text(json.dumps({**record, "categories": []}))
    with pytest.raises(DataError, match="has no categories"):
        open_dataset("coco", tmp_path / "coco", "val")
    del record["images"][0]["file_name"]
    path.write_text(json.dumps(record))
    with pytest.raises(DataError, match="file_name"):
        open_dataset("coco", tmp_path / "coco", "val")


def test_data_generate_makes_generated_kinds_and_leaves_read_kinds_to_their_checks(tmp_path):
    """`full.yaml` generates shapes; pointed at COCO with one --set, it needs no
    data.generate=false: a read kind is checked, never made."""
    missing = tmp_path / "coco"
    config = small_config(missing, data={"name": "coco", "generate": True})
    with pytest.raises(DataError, match="coco does not exist: prm-bench data fetch coco2014"):
        preflight(load_plan(config))
    assert not missing.exists()

import shutil
from dataclasses import asdict

import pytest
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.data.base import DataError
from prm_bench.data.shapes import ShapesSpec
from prm_bench.data.voc import VocDataset

CONFIG = ShapesSpec(seed=7, n_train=10, n_val=6, size=64, classes=4, n_tune=3)


@pytest.fixture(scope="module")
def shapes_root(make_shapes):
    return make_shapes(**asdict(CONFIG))


def test_a_user_split_list_and_difficult_objects(shapes_root, tmp_path):
    listing = tmp_path / "train_aug.txt"
    listing.write_text("shapes_000001\nshapes_000003\n")
    assert VocDataset(shapes_root, listing).ids == ["shapes_000001", "shapes_000003"]
    copy = tmp_path / "copy"
    shutil.copytree(shapes_root, copy)
    xml = copy / "Annotations" / "shapes_000001.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>"))
    assert VocDataset(copy, "train").labels("shapes_000001").sum() >= 1
    assert VocDataset(copy, "train", include_difficult=False).labels("shapes_000001").sum() == 0


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda r: shutil.rmtree(r / "SegmentationObject"), "SegmentationObject is missing"),
        (
            lambda r: (r / "ImageSets/Segmentation/val.txt").unlink(),
            "split file .*val.txt does not exist",
        ),
        (lambda r: (r / "JPEGImages/shapes_000012.jpg").unlink(), "have no JPEGImages/<id>.jpg"),
    ],
)
def test_a_damaged_layout_is_one_clear_error(shapes_root, tmp_path, damage, message):
    copy = tmp_path / "copy"
    shutil.copytree(shapes_root, copy)
    damage(copy)
    with pytest.raises(DataError, match=message):
        VocDataset(copy, "val", segmentation=True)
    result = CliRunner().invoke(app, ["data", "info", str(copy)], env={"COLUMNS": "300"})
    assert str(copy) in result.output
    assert result.exit_code == 2
    assert "error:" in result.output and "Traceback" not in result.output

import hashlib
import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
from pycocotools.coco import COCO
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.data import DATASETS, open_dataset
from prm_bench.data.base import DataError, check_disjoint
from prm_bench.data.coco import CocoDataset
from prm_bench.data.palette import VOID
from prm_bench.data.shapes import ShapesSpec, draw_image, generate_shapes, split_ids
from prm_bench.data.voc import VocDataset

CONFIG = ShapesSpec(seed=7, n_train=10, n_val=6, size=64, classes=4, n_tune=3)


@pytest.fixture(scope="module")
def shapes_root(make_shapes):
    return make_shapes(**asdict(CONFIG))


def tree_digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_identical_trees_whatever_the_worker_count(shapes_root, tmp_path):
    again = generate_shapes(tmp_path / "again", CONFIG, jobs=2)
    assert tree_digest(again) == tree_digest(shapes_root)


def test_another_seed_gives_other_images(shapes_root, tmp_path):
    other = generate_shapes(tmp_path / "other", ShapesSpec(**{**CONFIG.__dict__, "seed": 8}))
    first = "JPEGImages/shapes_000000.jpg"
    assert tree_digest(other)[first] != tree_digest(shapes_root)[first]


def test_an_existing_tree_is_reused_and_a_foreign_one_refused(shapes_root):
    assert generate_shapes(shapes_root, CONFIG) == shapes_root
    with pytest.raises(FileExistsError, match="not a shapes tree generated with these"):
        generate_shapes(shapes_root, ShapesSpec(seed=1, n_train=2, n_val=2, size=64))


def test_voc_reader_reads_back_exactly_the_drawn_instances(shapes_root):
    ids = split_ids(CONFIG)
    for split in ("train", "val"):
        dataset = VocDataset(shapes_root, split, segmentation=True)
        assert dataset.ids == ids[split]
        assert dataset.class_names == CONFIG.class_names
        for image_id in dataset.ids:
            image, _, _, drawn = draw_image(CONFIG, int(image_id.split("_")[1]))
            read = dataset.instances(image_id)
            assert [i.label for i in read] == [d.label for d in drawn]
            for r, d in zip(read, drawn, strict=True):
                assert np.array_equal(r.mask, d.mask)
                ys, xs = np.nonzero(d.mask)
                assert r.box == (xs.min(), ys.min(), xs.max(), ys.max())
            expected = np.zeros(CONFIG.classes, dtype=np.float32)
            expected[[d.label for d in drawn]] = 1
            assert np.array_equal(dataset.labels(image_id), expected)
            # JPEG is lossy: the decoded image stays close to the drawn one.
            assert np.abs(dataset.image(image_id).astype(int) - image).mean() < 8


def test_images_hold_one_to_max_instances_with_a_void_band(shapes_root):
    dataset = VocDataset(shapes_root, "val", segmentation=True)
    counts = []
    for image_id in dataset.ids:
        instances = dataset.instances(image_id)
        counts.append(len(instances))
        objects = dataset._png("SegmentationObject", image_id)
        for k, instance in enumerate(instances, start=1):
            # every 4-neighbour of an instance pixel is the same instance or void
            padded = np.pad(objects, 1, constant_values=VOID)
            inner = instance.mask
            for dy, dx in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                neighbour = padded[
                    1 + dy : 1 + dy + inner.shape[0], 1 + dx : 1 + dx + inner.shape[1]
                ]
                assert np.isin(neighbour[inner], (k, VOID)).all()
            assert instance.mask.sum() >= 20
    assert min(counts) >= 1 and max(counts) <= CONFIG.max_instances


def test_per_class_lists_match_the_labels(shapes_root):
    dataset = VocDataset(shapes_root, "train")
    for label, name in enumerate(CONFIG.class_names):
        lines = (shapes_root / "ImageSets" / "Main" / f"{name}_train.txt").read_text().splitlines()
        flags = {line.split()[0]: int(line.split()[1]) for line in lines}
        assert flags == {i: 1 if dataset.labels(i)[label] else -1 for i in dataset.ids}


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


def test_training_on_evaluation_images_is_refused(shapes_root):
    check_disjoint(VocDataset(shapes_root, "train"), VocDataset(shapes_root, "val"))
    with pytest.raises(DataError, match="6 training images are in the evaluation split"):
        check_disjoint(VocDataset(shapes_root, "trainval"), VocDataset(shapes_root, "val"))


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


def test_cli_generates_the_dataset(tmp_path):
    out = tmp_path / "cli"
    args = ["data", "shapes", str(out), "--n-train", "4", "--n-val", "2", "--size", "48"]
    result = CliRunner().invoke(app, [*args, "--n-tune", "3", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert len(VocDataset(out, "val", segmentation=True)) == 2
    assert len(VocDataset(out, "tune", segmentation=True)) == 3
    bad = CliRunner().invoke(app, ["data", "shapes", str(tmp_path / "x"), "--classes", "9"])
    assert bad.exit_code == 2 and "classes must be in 1..6" in bad.output


def test_every_dataset_kind_opens_the_shapes_tree_alike(shapes_root):
    assert DATASETS.names() == ["voc", "coco", "shapes"]
    readers = [open_dataset(kind, shapes_root, "val", segmentation=True) for kind in DATASETS]
    first = readers[0]
    for reader in readers[1:]:
        assert reader.ids == first.ids and reader.class_names == first.class_names
        for image_id in first.ids:
            a, b = reader.instances(image_id), first.instances(image_id)
            assert all(np.array_equal(x.mask, y.mask) for x, y in zip(a, b, strict=True))


def test_cli_info_and_proposal_quality(shapes_root, tmp_path):
    runner = CliRunner()
    info = runner.invoke(app, ["data", "info", str(shapes_root), "--dataset", "coco"])
    assert info.exit_code == 0, info.output
    out = tmp_path / "quality.json"
    args = ["data", "proposals", str(shapes_root), "gt", "--dataset", "shapes", "--out", str(out)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["recall@0.5"] == saved["abo"] == 1.0 and saved["images"] == CONFIG.n_val
    bad = runner.invoke(app, ["data", "proposals", str(shapes_root), "mgc"])
    assert bad.exit_code == 2 and "did you mean 'mcg'" in bad.output
    bad = runner.invoke(app, ["data", "info", str(shapes_root), "--dataset", "vooc"])
    assert bad.exit_code == 2 and "did you mean 'voc'" in bad.output


def test_tune_split_holds_out_a_seeded_subset_and_removes_it_from_training(shapes_root, tmp_path):
    def split(seed: int, out) -> tuple[list[str], list[str]]:
        args = ["data", "tune-split", str(shapes_root), "--dataset", "shapes", "--from",
                "train", "--train", "train", "--count", "4", "--seed", str(seed), "--out",
                str(out)]  # fmt: skip
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        return [(out / name).read_text().split() for name in ("tune.txt", "train-minus-tune.txt")]

    tune, rest = split(0, tmp_path / "a")
    train = VocDataset(shapes_root, "train").ids
    assert len(tune) == 4 and set(tune) <= set(train)
    assert sorted(rest + tune) == sorted(train) and not set(rest) & set(tune)
    assert split(0, tmp_path / "b") == [tune, rest]  # seeded
    assert split(1, tmp_path / "c")[0] != tune
    check_disjoint(VocDataset(shapes_root, tmp_path / "a" / "train-minus-tune.txt"),
                   VocDataset(shapes_root, tmp_path / "a" / "tune.txt"))  # fmt: skip
    too_many = CliRunner().invoke(
        app, ["data", "tune-split", str(shapes_root), "--dataset", "shapes", "--train", "train",
              "--count", "99", "--out", str(tmp_path / "d")],
    )  # fmt: skip
    assert too_many.exit_code == 2 and "hasonly10images" in "".join(too_many.output.split())


def test_tune_split_of_a_coco_layout_writes_instances_subsets(shapes_root, tmp_path):
    copy = tmp_path / "coco"
    shutil.copytree(shapes_root, copy)
    args = ["data", "tune-split", str(copy), "--dataset", "coco", "--from", "train", "--train",
            "train", "--count", "3"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    tune = open_dataset("coco", copy, "train@tune", segmentation=True)
    rest = open_dataset("coco", copy, "train@rest")
    full = open_dataset("coco", copy, "train", segmentation=True)
    assert len(tune.ids) == 3 and sorted(tune.ids + rest.ids) == full.ids
    check_disjoint(rest, tune)
    for image_id in tune.ids:  # the held-out images keep their instances
        masks = [i.mask for i in tune.instances(image_id)]
        expected = [i.mask for i in full.instances(image_id)]
        assert all(np.array_equal(a, b) for a, b in zip(masks, expected, strict=True))

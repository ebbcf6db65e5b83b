import hashlib
import json
from dataclasses import asdict

import numpy as np
import pytest

from prm_bench.data import open_dataset
from prm_bench.data.palette import VOID
from prm_bench.data.shapes import ShapesSpec, draw_image, ensure_shapes, generate_shapes, split_ids
from prm_bench.data.voc import VocDataset


def small(**settings) -> ShapesSpec:
    return ShapesSpec(**{"seed": 3, "n_train": 4, "n_val": 2, "size": 48, **settings})


def test_the_tune_split_is_new_images_and_leaves_train_and_val_byte_identical(tmp_path):
    with_tune = generate_shapes(tmp_path / "a", small(n_tune=3), jobs=1)
    without = generate_shapes(tmp_path / "b", small(n_tune=0), jobs=1)
    splits = split_ids(small(n_tune=3))
    assert not set(splits["tune"]) & (set(splits["train"]) | set(splits["val"]))
    for image_id in splits["train"] + splits["val"]:
        for folder, ext in (("JPEGImages", "jpg"), ("SegmentationObject", "png")):
            a = (with_tune / folder / f"{image_id}.{ext}").read_bytes()
            assert a == (without / folder / f"{image_id}.{ext}").read_bytes()
    for split in ("train", "val", "trainval"):
        listing = f"ImageSets/Segmentation/{split}.txt"
        assert (with_tune / listing).read_text() == (without / listing).read_text()
    tune_set = open_dataset("shapes", with_tune, "tune", segmentation=True)
    assert tune_set.ids == splits["tune"] and all(tune_set.instances(i) for i in tune_set.ids)


def test_a_tree_from_before_the_tune_split_gets_one(tmp_path):
    old = generate_shapes(tmp_path / "old", small(n_tune=0), jobs=1)
    stamp = json.loads((old / "shapes.json").read_text())
    del stamp["n_tune"]  # what the generator wrote before the tune split existed
    (old / "shapes.json").write_text(json.dumps(stamp))
    before = (old / "JPEGImages" / "shapes_000000.jpg").read_bytes()
    assert ensure_shapes(old, jobs=1) is True
    assert ensure_shapes(old, jobs=1) is False
    fresh = generate_shapes(tmp_path / "fresh", small(), jobs=1)
    assert open_dataset("shapes", old, "tune").ids == open_dataset("shapes", fresh, "tune").ids
    assert (old / "JPEGImages" / "shapes_000000.jpg").read_bytes() == before
    assert (old / "shapes.json").read_text() == (fresh / "shapes.json").read_text()


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

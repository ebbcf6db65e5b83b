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


def resized_copy(shapes, tmp_path, split_list: str, size: tuple[int, int]):
    """A copy of the tree whose first image of `split_list` (and its masks) is resized."""
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(shapes, root)
    image_id = (root / "ImageSets" / split_list).read_text().split()[0]
    for folder, suffix in (("JPEGImages", "jpg"), ("SegmentationObject", "png"),
                           ("SegmentationClass", "png")):  # fmt: skip
        path = root / folder / f"{image_id}.{suffix}"
        with Image.open(path) as image:
            image.resize(size, Image.NEAREST).save(path)
    return root


def test_mixed_training_image_sizes_need_an_image_size(shapes, tmp_path):
    root = resized_copy(shapes, tmp_path, "Main/train.txt", (64, 40))
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


def run_once(root, runs):
    """Run the one-cell small config on the tree at `root`; the summary."""
    from prm_bench.orchestrate.runner import RunOptions, run_plan

    plan = load_plan(small_config(root, eval={"metrics": ["voc-map", "abo"]}))
    return run_plan(plan.with_run(jobs=1), RunOptions(runs))


@pytest.fixture
def copied(make_shapes, tmp_path):
    """A small tree copied into the test's folder (keys name the root's path) and the
    summary of a first run on it."""
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(make_shapes(seed=21, n_train=12, n_val=4, size=48, classes=2), root)
    return run_once(root, tmp_path / "runs"), root, tmp_path / "runs"


ALL = {"train": 1, "infer": 1, "retrieve": 1, "evaluate": 1}


def test_a_dataset_replaced_at_the_same_path_reruns_every_stage(copied, make_shapes):
    """Issue 23 defect 1: regenerated with another seed, nothing of the old data is reused,
    and the results are those of the new data."""
    import shutil

    first, root, runs = copied
    moved = root.parent / "first-shapes"
    root.rename(moved)
    shutil.copytree(make_shapes(seed=22, n_train=12, n_val=4, size=48, classes=2), root)
    again = run_once(root, runs)
    assert again.executed == ALL
    fresh = run_once(root, root.parent / "fresh")  # the new data in an empty run directory
    assert fresh.executed == ALL
    assert again.results["value"].tolist() == fresh.results["value"].tolist()
    assert again.results["value"].tolist() != first.results["value"].tolist()
    shutil.rmtree(root)
    moved.rename(root)  # the old data back: every stage of the first run is reused
    assert sum(run_once(root, runs).executed.values()) == 0


def edit_split_list(root):
    split = root / "ImageSets" / "Segmentation" / "val.txt"
    split.write_text("\n".join(split.read_text().split()[:-1]) + "\n")


def edit_eval_mask(root):
    """A fixed instance mask: its last instance's pixels become void."""
    image_id = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    path = root / "SegmentationObject" / f"{image_id}.png"
    with Image.open(path) as png:
        values, palette = np.array(png), png.getpalette()
    values[values == values[values < 255].max()] = 255
    fixed = Image.fromarray(values, mode="P")
    fixed.putpalette(palette)
    fixed.save(path)


def edit_eval_annotation(root):
    image_id = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    path = root / "Annotations" / f"{image_id}.xml"
    path.write_text(path.read_text().replace("</annotation>", "<!-- fixed --></annotation>"))


def edit_train_image(root):
    image_id = (root / "ImageSets" / "Main" / "train.txt").read_text().split()[0]
    path = root / "JPEGImages" / f"{image_id}.jpg"
    with Image.open(path) as image:
        image.rotate(180).save(path)


@pytest.mark.parametrize(
    ("edit", "executed"),
    [
        (edit_split_list, ALL),  # training scores the evaluation split every epoch
        (edit_eval_annotation, ALL),  # its labels too
        (edit_eval_mask, {"train": 0, "infer": 0, "retrieve": 0, "evaluate": 1}),
        (edit_train_image, ALL),
    ],
    ids=["split-list", "eval-annotation", "eval-mask", "train-image"],
)
def test_an_edit_reruns_exactly_the_stages_that_read_it(copied, edit, executed):
    _, root, runs = copied
    edit(root)
    assert run_once(root, runs).executed == executed
    assert sum(run_once(root, runs).executed.values()) == 0  # and then nothing


def test_a_second_preflight_decodes_no_image(copied, tmp_path, monkeypatch):
    from prm_bench.data.voc import VocDataset

    _, root, _ = copied
    calls = []
    original = VocDataset.check
    monkeypatch.setattr(VocDataset, "check", lambda self, i: calls.append(i) or original(self, i))
    plan = load_plan(small_config(root))
    first = preflight(plan, tmp_path / "cache")
    assert len(calls) == 16  # 12 training and 4 evaluation images
    calls.clear()
    assert preflight(plan, tmp_path / "cache").cells[0].keys == first.cells[0].keys
    assert calls == []
    assert first.cells[0].keys != plan.cells[0].keys  # bound to the data, not the config alone


def test_evaluation_images_of_several_sizes_are_refused_when_not_resized(shapes, tmp_path):
    """Issue 23 defect 4: the per-epoch scoring stacked them and failed after training,
    naming no file."""
    root = resized_copy(shapes, tmp_path, "Segmentation/val.txt", (40, 32))
    with pytest.raises(DataError, match=r"evaluation images .* have 2 sizes"):
        preflight(load_plan(small_config(root)))
    preflight(load_plan(small_config(root, data={"image_size": 48})))  # resized: accepted


def test_a_file_gallery_s_files_are_in_the_proposals_key_only(shapes, tmp_path):
    import shutil

    from prm_bench.data import open_dataset
    from prm_bench.instances.proposals import cache_gallery
    from prm_bench.orchestrate.preflight import bind_data

    dataset = open_dataset("shapes", shapes, "val")
    files = cache_gallery("embedded", None, dataset, tmp_path / "rle", {"ids": dataset.ids})
    tree = small_config(shapes, proposals={"gallery": "rle-json", "root": str(tmp_path / "rle")})
    before = bind_data(load_plan(tree)).cells[0].keys
    shutil.copyfile(files[1], files[0])  # another image's proposals over this one's
    after = bind_data(load_plan(tree)).cells[0].keys
    assert [s for s in before if before[s] != after[s]] == ["proposals", "retrieve", "evaluate"]


def test_mixed_precision_means_bf16_on_every_device_and_is_refused_without_it(
    shapes, tmp_path, monkeypatch
):
    """Issue 22 item 5: `train.amp` acted on CUDA only, so one training key held two
    models; it is now bf16 autocast everywhere (the CPU too), off by default."""
    from prm_bench.config import ConfigError
    from prm_bench.orchestrate import preflight as preflight_module
    from prm_bench.orchestrate.runner import RunOptions, run_plan

    plans = {amp: load_plan(small_config(shapes, train={"amp": amp})) for amp in (False, True)}
    assert load_plan(small_config(shapes)).cells[0].config.train.amp is False
    assert plans[False].cells[0].keys["train"] != plans[True].cells[0].keys["train"]
    models = {}
    for amp, plan in plans.items():
        summary = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path / str(amp)))
        key = summary.plan.cells[0].keys["train"]
        folder = tmp_path / str(amp) / plan.name / "store" / "train" / key
        models[amp] = (folder / "model.safetensors").read_bytes()
    assert models[False] != models[True]  # bf16 autocast really ran on the CPU
    monkeypatch.setattr(preflight_module, "bf16_supported", lambda device: False)
    with pytest.raises(ConfigError, match=r"train\.amp: true needs bf16"):
        preflight(plans[True])
    preflight(plans[False])

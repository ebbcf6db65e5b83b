"""Bad input exits 2 with one line naming the file, key or value; interruptions stop
cleanly (DESIGN 5; issue: nothing finished is lost, nothing corrupt is trusted)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from PIL import Image
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.config import ConfigError, load_plan
from prm_bench.data.base import DataError
from prm_bench.orchestrate.preflight import preflight
from prm_bench.orchestrate.worker import Placement, execute_tasks
from prm_bench.stages.errors import StageError
from prm_bench.stages.store import Store, save_npz, write_atomic


@pytest.fixture(scope="module")
def shapes(make_shapes):
    return make_shapes(seed=13, n_train=12, n_val=4, size=48, classes=2)


def tiny(root, **sections) -> dict:
    config = {
        "data": {"name": "shapes", "root": str(root)},
        "backbone": {"name": "test_resnet"},
        "train": {"epochs": 1, "batch_size": 6},
        "infer": {"max_peaks": 3},
        "eval": {"metrics": ["voc-map"]},
    }
    for section, values in sections.items():
        config[section] = {**config.get(section, {}), **values}
    return config


CONFIG_MISTAKES = [
    ("data:\n  name: shapes\ndata:\n  name: voc\n", "key 'data' is given twice"),
    ("grid:\n  zip:\n    train.seed: 3\n", "grid.zip maps section.key names to non-empty lists"),
    ("grid:\n  variants: {a: 5}\n", "grid.variants.a must map section.key names"),
    ("extends: 5\n", "extends must be the path of one config file, got 5"),
    ("extends: [a.yaml]\n", "extends must be the path of one config file"),
    ("extends: nowhere.yaml\n", "(the `extends` of"),
    ("stimulation:\n  options: {win_size: abc}\n", "win_size must be an odd integer"),
    ("eval:\n  iou_thresholds: [0.5, 1.5]\n", "eval.iou_thresholds.1"),
    ("eval:\n  iou_thresholds: [-0.2]\n", "eval.iou_thresholds.0"),
]


@pytest.mark.parametrize(("text", "message"), CONFIG_MISTAKES)
def test_config_mistakes_exit_2_with_one_message(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_plan(path)
    assert message in str(caught.value)
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"], env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_a_config_named_dots_gets_no_run_name_outside_runs(tmp_path):
    path = tmp_path / "...yaml"
    path.write_text("data:\n  name: shapes\n")
    with pytest.raises(ConfigError, match=r"the run name '\.\.'"):
        load_plan(path)


def test_runs_dir_that_is_a_file_exits_2(shapes, tmp_path):
    config = tmp_path / "ok.yaml"
    config.write_text(yaml.safe_dump(tiny(shapes)))
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(
        app, ["run", str(config), "--runs-dir", str(blocker)], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2 and "isafile,notafolder" in "".join(result.output.split())


def test_status_and_report_refuse_a_damaged_or_unfinished_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text('{"cells": [')
    for command in (["status", str(run_dir)], ["report", str(run_dir)]):
        result = CliRunner().invoke(app, command, env={"COLUMNS": "300"})
        assert result.exit_code == 2 and "manifest.json" in "".join(result.output.split())


def test_a_missing_shapes_root_is_an_error_unless_generation_is_asked(tmp_path):
    typo = tmp_path / "shapse"
    with pytest.raises(DataError, match="no shapes dataset at"):
        preflight(load_plan(tiny(typo)))
    assert not typo.exists()  # nothing generated where nobody asked for it


def test_preflight_names_a_truncated_image(shapes, tmp_path):
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(shapes, root)
    image = sorted((root / "JPEGImages").glob("*.jpg"))[0]
    os.truncate(image, image.stat().st_size // 2)
    with pytest.raises(DataError, match=image.name):
        preflight(load_plan(tiny(root)))


def test_preflight_names_an_annotation_of_another_size(shapes, tmp_path):
    import shutil

    root = tmp_path / "shapes"
    shutil.copytree(shapes, root)
    val = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()[0]
    png = root / "SegmentationObject" / f"{val}.png"
    with Image.open(png) as image:
        image.resize((30, 20)).save(png)
    with pytest.raises(DataError, match=f"{val}.png is \\(30, 20\\)"):
        preflight(load_plan(tiny(root)))


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
        preflight(load_plan(tiny(root)))
    preflight(load_plan(tiny(root, data={"image_size": 48})))  # resized: fine


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


def test_store_files_are_readable_by_everyone(tmp_path):
    write_atomic(tmp_path / "a.json", b"{}")
    save_npz(tmp_path / "b.npz", x=np.zeros(2))
    for name in ("a.json", "b.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_an_orphaned_task_records_nothing(shapes, tmp_path):
    store = Store(tmp_path, guard=lambda: (_ for _ in ()).throw(StageError("gone")))
    store.reset("train", "k")
    with pytest.raises(StageError, match="gone"):
        store.complete("train", "k")
    assert not store.is_done("train", "k")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    cell = load_plan(tiny(shapes)).cells[0]
    where = Placement("cpu", threads=2, slot=0, parent=dead.pid)
    (outcome,) = execute_tasks("train", [cell], str(tmp_path / "store"), where)
    assert not outcome.ok and "orphaned" in outcome.error
    assert not Store(tmp_path / "store").is_done("train", cell.keys["train"])


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_the_run_with_exit_130_and_it_resumes(shapes, tmp_path, number):
    config = tmp_path / "stop.yaml"
    config.write_text(yaml.safe_dump(tiny(shapes, grid={"retrieval.terms": ["full", "no-class"]})))
    command = [sys.executable, "-m", "prm_bench", "run", str(config),
               "--runs-dir", str(tmp_path / "runs")]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "runs" / "stop" / "run.log"
    deadline = time.time() + 120
    while time.time() < deadline and not (log.is_file() and "train:" in log.read_text()):
        time.sleep(0.05)
    process.send_signal(number)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    assert "run the same command again to resume" in output and "Traceback" not in output
    assert "interrupted" in log.read_text()
    assert "FAILED" not in log.read_text()  # an interrupt is never a cell failure
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr

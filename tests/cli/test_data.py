import json
import shutil
from dataclasses import asdict

import numpy as np
import pytest
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.data import open_dataset
from prm_bench.data.base import check_disjoint
from prm_bench.data.shapes import ShapesSpec
from prm_bench.data.voc import VocDataset

CONFIG = ShapesSpec(seed=7, n_train=10, n_val=6, size=64, classes=4, n_tune=3)


@pytest.fixture(scope="module")
def shapes_root(make_shapes):
    return make_shapes(**asdict(CONFIG))


def test_cli_generates_the_dataset(tmp_path):
    out = tmp_path / "cli"
    args = ["data", "shapes", str(out), "--n-train", "4", "--n-val", "2", "--size", "48"]
    result = CliRunner().invoke(app, [*args, "--n-tune", "3", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    assert len(VocDataset(out, "val", segmentation=True)) == 2
    assert len(VocDataset(out, "tune", segmentation=True)) == 3
    bad = CliRunner().invoke(app, ["data", "shapes", str(tmp_path / "x"), "--classes", "9"])
    assert bad.exit_code == 2 and "classes must be in 1..6" in bad.output


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


def test_proposal_files_convert_once_into_an_rle_cache_that_reads_back_the_same(
    shapes_root, tmp_path
):
    from benchmarks.proposals import mcg_file
    from prm_bench.instances.proposals.formats import read_mcg, read_rle_json

    mats = tmp_path / "mcg"
    mats.mkdir()
    ids = open_dataset("shapes", shapes_root, "val").ids
    for n, image_id in enumerate(ids):
        mcg_file(mats / f"{image_id}.mat", proposals=25, superpixels=9, size=(64, 64), seed=n)
    cache = tmp_path / "cache"
    words = ["data", "proposals", str(shapes_root), "mcg", "--dataset", "shapes", "--proposals",
             str(mats), "--cache", str(cache), "--top-n", "10", "--jobs", "2",
             "--out", str(tmp_path / "q.json")]  # fmt: skip
    result = CliRunner().invoke(app, words)
    assert result.exit_code == 0, result.output
    for image_id in ids:
        expected = read_mcg(mats / f"{image_id}.mat", top_n=10)
        np.testing.assert_array_equal(read_rle_json(cache / f"{image_id}.json"), expected)
    first = (cache / f"{ids[0]}.json").stat().st_mtime_ns
    assert CliRunner().invoke(app, words).exit_code == 0
    assert (cache / f"{ids[0]}.json").stat().st_mtime_ns == first  # converted once


def test_the_tune_split_follows_the_training_split_s_size_by_default(tmp_path):
    """Issue 24 item 6: `--n-train 40` still made 200 tune images."""
    args = ["data", "shapes", str(tmp_path / "s"), "--n-train", "40", "--n-val", "4"]
    result = CliRunner().invoke(app, [*args, "--size", "48", "--jobs", "1"])
    assert result.exit_code == 0, result.output
    tune = (tmp_path / "s" / "ImageSets" / "Segmentation" / "tune.txt").read_text().split()
    assert len(tune) == 4

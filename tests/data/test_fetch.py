"""`data fetch` and `data prepare` rehearsed end to end on loopback (127.0.0.1 only): the
README's VOC commands as pasted (with --mirror), then the VOC and COCO configs with tiny
overrides, then their reports; and the four faults: a cut download that resumes, a
corrupted archive, a 404 and a full disk."""

import re
import shutil
from collections import namedtuple
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.data.sources import SOURCES
from tests.data.rehearsal import Mirror, coco_archives, copy_configs, rehearsal_source, voc_archives

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "backbone": {"name": "test_resnet", "weights": None},
    "train": {"epochs": 1, "batch_size": 4, "optimizer": "adamw", "lr": 0.002},
    "data": {"image_size": 48},
    "infer": {"peak_threshold": 0, "max_peaks": 4},
    "grid": {},
}
Rehearsal = namedtuple("Rehearsal", "work mirror")


@pytest.fixture(scope="module")
def shapes(make_shapes):
    return make_shapes(seed=31, n_train=8, n_val=4, n_tune=3, size=48, classes=2)


def invoke(*words: str):
    return CliRunner().invoke(app, list(words), env={"COLUMNS": "300"})


@pytest.fixture
def voc(shapes, tmp_path, monkeypatch):
    """A fresh working folder (the configs, no data) and a mirror of VOC-side archives,
    which the real source names stand for while the test runs."""
    archives = voc_archives(shapes, tmp_path / "build")
    mirror = Mirror()
    names = {
        "voc2012": "VOCtrainval_11-May-2012.tar",
        "sbd": "benchmark.tgz",
        "mcg-voc2012": "MCG-Pascal-Segmentation_trainvaltest_2012-proposals.tgz",
        "weights": "resnet50-rehearsal.pth",
    }
    with ExitStack() as stack:
        for source, (data, provides) in archives.items():
            mirror.files[names[source]] = data
            unpack = None if source == "weights" else "tar"
            part = (names[source], data, unpack, provides)
            stack.enter_context(SOURCES.temporarily(source, rehearsal_source(source, [part])))
        work = tmp_path / "work"
        work.mkdir()
        copy_configs(REPO, work)
        monkeypatch.chdir(work)
        yield Rehearsal(work, mirror)
    mirror.close()


def readme_commands(section: str) -> list[list[str]]:
    """The prm-bench commands of the README's code block under `section`."""
    text = (REPO / "README.md").read_text()
    block = text.split(section, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        for command in line.split("#")[0].split("&&"):
            if command.strip().startswith("prm-bench"):
                commands.append(command.split()[1:])
    return commands


def test_the_readme_voc_commands_fetch_prepare_run_and_report(voc):
    commands = readme_commands("### PASCAL VOC 2012")
    fetch, prepare, run = commands[:3]
    assert fetch[:2] == ["data", "fetch"] and prepare[:2] == ["data", "prepare"]
    assert run[:2] == ["run", "ablations/voc2012.yaml"]
    nothing = invoke("run", "ablations/voc2012.yaml", "--dry-run", "--runs-dir", "runs")
    assert nothing.exit_code == 2 and "5 inputs are missing" in nothing.output
    flat = "".join(nothing.output.split())  # rich wraps long paths anywhere
    for command in ("fetch voc2012", "prepare voc2012", "fetch mcg-voc2012", "fetch weights"):
        expected = f"prm-bench data {command} --root {voc.work / 'data'}"
        assert "".join(expected.split()) in flat, command
    assert not (voc.work / "runs").exists() or not list((voc.work / "runs").iterdir())
    voc.mirror.cut.add("VOCtrainval_11-May-2012.tar")  # the first download drops half-way
    fetched = invoke(*fetch, "--mirror", voc.mirror.url)
    assert fetched.exit_code == 0, fetched.output
    resumed = [start for name, start in voc.mirror.requests if name.startswith("VOCtrainval")]
    assert resumed[0] == 0 and resumed[1] > 0  # the second request resumed with a Range
    assert (voc.work / "data" / "VOCdevkit" / "VOC2012" / "JPEGImages").is_dir()
    assert not list((voc.work / "data" / ".downloads").glob("*"))  # archives removed
    again = invoke(*fetch, "--mirror", voc.mirror.url)
    assert again.exit_code == 0 and again.output.count("in place") == 4
    assert len(voc.mirror.requests) == len(resumed) + 3  # the second fetch asked for nothing
    prepared = invoke(*prepare)
    assert prepared.exit_code == 0, prepared.output
    lists = voc.work / "data" / "VOCdevkit" / "VOC2012" / "ImageSets" / "Segmentation"
    train_aug = set(lists.joinpath("train_aug.txt").read_text().split())
    train, val, tune = (
        set(lists.joinpath(f"{s}.txt").read_text().split()) for s in ("train", "val", "tune")
    )
    assert train_aug == train | tune and not train_aug & val
    assert "already up to date" in invoke(*prepare).output
    dry = invoke("run", "ablations/voc2012.yaml", "--dry-run", "--runs-dir", "runs")
    assert "backbone.weights" in dry.output and dry.exit_code == 2  # the paper's .pth only
    config = {"extends": "voc2012.yaml", **TINY}
    (voc.work / "ablations" / "rehearsal.yaml").write_text(yaml.safe_dump(config))
    ran = invoke("run", "ablations/rehearsal.yaml", "--runs-dir", "runs", "--device", "cpu")
    assert ran.exit_code == 0, ran.output
    results = pd.read_csv(voc.work / "runs" / "rehearsal" / "results.csv")
    assert {"mAP@0.5", "abo"} <= set(results["metric"])
    report = invoke("report", "runs/rehearsal", "--resamples", "100")
    assert report.exit_code == 0, report.output
    assert (voc.work / "runs" / "rehearsal" / "report" / "README.md").is_file()


def test_a_corrupted_archive_is_refused_and_nothing_is_unpacked(voc):
    name = "VOCtrainval_11-May-2012.tar"
    good = voc.mirror.files[name]
    voc.mirror.files[name] = good[:100] + bytes([good[100] ^ 0xFF]) + good[101:]  # one byte
    result = invoke("data", "fetch", "voc2012", "--root", "data", "--mirror", voc.mirror.url)
    assert result.exit_code == 2 and "Traceback" not in result.output
    flat = "".join(result.output.split())
    assert f"{name}iscorrupt(MD5" in flat and "itwasdeleted" in flat
    assert not (voc.work / "data" / "VOCdevkit").exists()
    assert not list((voc.work / "data" / ".downloads").glob("*"))


def test_a_missing_file_on_the_server_names_the_url_and_status(voc):
    del voc.mirror.files["benchmark.tgz"]
    result = invoke("data", "fetch", "sbd", "--root", "data", "--mirror", voc.mirror.url)
    assert result.exit_code == 2
    assert re.search(r"benchmark\.tgz: HTTP 404", "".join(result.output.split("\n")))


def test_a_root_without_the_space_is_refused_before_any_download(voc, monkeypatch):
    usage = shutil.disk_usage(voc.work)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage._replace(free=1000))
    result = invoke("data", "fetch", "voc2012", "--root", "data", "--mirror", voc.mirror.url)
    assert result.exit_code == 2 and "free some space" in result.output
    assert voc.mirror.requests == []


def test_archives_already_on_disk_are_taken_with_from(voc, tmp_path):
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / "benchmark.tgz").write_bytes(voc.mirror.files["benchmark.tgz"])
    result = invoke("data", "fetch", "sbd", "--root", "data", "--from", str(offline))
    assert result.exit_code == 0, result.output
    assert (voc.work / "data" / "benchmark_RELEASE" / "dataset" / "train.txt").is_file()
    assert voc.mirror.requests == [] and (offline / "benchmark.tgz").is_file()


def test_the_coco_config_runs_on_fetched_coco_archives(shapes, tmp_path, monkeypatch):
    archives = coco_archives(shapes, tmp_path / "build")
    mirror = Mirror()
    names = {
        "train2014": "train2014.zip",
        "val2014": "val2014.zip",
        "annotations": "annotations_trainval2014.zip",
        "mcg-coco2014": "MCG-COCO-val2014-proposals.tgz",
    }
    for key, (data, _) in archives.items():
        mirror.files[names[key]] = data
    coco = [
        (names[k], archives[k][0], "zip", archives[k][1])
        for k in ("train2014", "val2014", "annotations")
    ]
    mcg = [
        (names["mcg-coco2014"], *archives["mcg-coco2014"][:1], "tar", archives["mcg-coco2014"][1])
    ]
    work = tmp_path / "work"
    work.mkdir()
    copy_configs(REPO, work)
    monkeypatch.chdir(work)
    try:
        with (
            SOURCES.temporarily("coco2014", rehearsal_source("coco2014", coco)),
            SOURCES.temporarily("mcg-coco2014", rehearsal_source("mcg-coco2014", mcg)),
        ):
            fetched = invoke(
                "data",
                "fetch",
                "coco2014",
                "mcg-coco2014",
                "--root",
                "data",
                "--mirror",
                mirror.url,
            )
    finally:
        mirror.close()
    assert fetched.exit_code == 0, fetched.output
    config = {"extends": "coco2014.yaml", **TINY, "train": {**TINY["train"], "optimizer": "adamw"}}
    config["eval"] = {"metrics": ["pointing", "voc-map", "coco-map"]}
    (work / "ablations" / "coco-rehearsal.yaml").write_text(yaml.safe_dump(config))
    ran = invoke("run", "ablations/coco-rehearsal.yaml", "--runs-dir", "runs", "--device", "cpu")
    assert ran.exit_code == 0, ran.output
    results = pd.read_csv(work / "runs" / "coco-rehearsal" / "results.csv")
    assert {"pointing_mAP", "mAP@0.5", "coco_mAP@0.5"} <= set(results["metric"])
    report = invoke("report", "runs/coco-rehearsal", "--resamples", "100")
    assert report.exit_code == 0, report.output


@pytest.mark.parametrize("unpack", ["zip", "tar"])
def test_an_archive_member_outside_the_root_is_refused(tmp_path, unpack):
    import io
    import tarfile
    import zipfile

    from prm_bench.data.fetch import FetchError, FetchOptions, fetch_archive
    from prm_bench.data.sources import Archive

    buffer = io.BytesIO()
    if unpack == "zip":
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("../escaped.txt", b"x")
    else:
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            info = tarfile.TarInfo("../escaped.txt")
            info.size = 1
            archive.addfile(info, io.BytesIO(b"x"))
    offline = tmp_path / "offline"
    offline.mkdir()
    (offline / f"evil.{unpack}").write_bytes(buffer.getvalue())
    archive = Archive(f"http://unreachable.invalid/evil.{unpack}", None, None, unpack, ".", "x")
    with pytest.raises(FetchError, match=r"outside|cannot be unpacked"):
        fetch_archive(tmp_path / "root", archive, FetchOptions(from_dir=offline))
    assert not (tmp_path / "escaped.txt").exists()


def test_an_unpublished_checksum_is_recorded_on_the_first_fetch_and_checked_after(voc):
    name = "MCG-Pascal-Segmentation_trainvaltest_2012-proposals.tgz"
    mcg = SOURCES.get("mcg-voc2012").archives[0]
    words = ["data", "fetch", "mcg-voc2012", "--root", "data", "--mirror", voc.mirror.url]
    with SOURCES.temporarily(
        "mcg-voc2012", SOURCES.get("mcg-voc2012").__class__(
            "mcg-voc2012", "unpublished", (mcg.__class__(**{**mcg.__dict__, "checksum": None,
                                                             "size": None}),))
    ):  # fmt: skip
        first = invoke(*words)
        assert first.exit_code == 0 and "nochecksumispublished" in "".join(first.output.split())
        shutil.rmtree(voc.work / "data" / "MCG-Pascal-Segmentation_trainvaltest_2012-proposals")
        data = voc.mirror.files[name]
        voc.mirror.files[name] = data[:-4] + bytes([data[-4] ^ 1]) + data[-3:]  # changed upstream
        second = invoke(*words)
    assert second.exit_code == 2 and "iscorrupt(SHA256" in "".join(second.output.split())

import signal
import subprocess
import sys
import time

import pytest
import yaml
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.config import ConfigError, load_plan
from tests.conftest import small_config

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
    config.write_text(yaml.safe_dump(small_config(shapes)))
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(
        app, ["run", str(config), "--runs-dir", str(blocker)], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 2 and "isafile,notafolder" in "".join(result.output.split())


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_stops_the_run_with_exit_130_and_it_resumes(shapes, tmp_path, number):
    config = tmp_path / "stop.yaml"
    config.write_text(
        yaml.safe_dump(small_config(shapes, grid={"retrieval.terms": ["full", "no-class"]}))
    )
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


def test_an_unknown_device_or_executor_is_refused_by_the_command_line(shapes, tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes)))
    for option, value in (("--device", "tpu"), ("--executor", "ray")):
        result = CliRunner().invoke(app, ["run", str(config), option, value, "--dry-run"])
        assert result.exit_code == 2 and "Invalid value" in result.output, result.output
        assert "Traceback" not in result.output


def test_several_overrides_follow_one_set_flag(shapes, tmp_path, monkeypatch):
    import prm_bench.cli.run as command

    planned = []
    monkeypatch.setattr(command, "_print_plan", lambda plan, run_dir: planned.append(plan))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes)))
    runs = ["--runs-dir", str(tmp_path / "runs"), "--dry-run"]
    both = CliRunner().invoke(
        app, ["run", str(config), "--set", "train.epochs=2", "infer.max_peaks=5", *runs]
    )
    assert both.exit_code == 0, both.output
    apart = CliRunner().invoke(
        app, ["run", str(config), "--set", "train.epochs=2", "--set", "infer.max_peaks=5", *runs]
    )
    assert apart.exit_code == 0, apart.output
    first, second = (p.cells[0].config for p in planned)
    assert first == second and (first.train.epochs, first.infer.max_peaks) == (2, 5)
    stray = CliRunner().invoke(app, ["run", str(config), "--set", "train.epochs=2", "oops", *runs])
    assert stray.exit_code == 2 and "unexpected argument 'oops'" in stray.output


def test_another_config_of_the_same_stem_does_not_replace_a_run(shapes, tmp_path):
    """Issue 23 defect 10: runs/<stem> belongs to the config that made it."""
    runs = tmp_path / "runs"
    first, second = tmp_path / "a" / "study.yaml", tmp_path / "b" / "study.yaml"
    for path, terms in ((first, "full"), (second, "no-instance")):
        path.parent.mkdir()
        tree = small_config(shapes, grid={"retrieval.terms": [terms]})
        path.write_text(yaml.safe_dump(tree))
    assert CliRunner().invoke(app, ["run", str(first), "--runs-dir", str(runs)]).exit_code == 0
    results = (runs / "study" / "results.csv").read_bytes()
    refused = CliRunner().invoke(app, ["run", str(second), "--runs-dir", str(runs)])
    assert refused.exit_code == 2 and "Traceback" not in refused.output
    assert "holdstherunof" in "".join(refused.output.split())
    assert (runs / "study" / "results.csv").read_bytes() == results
    named = ["run", str(second), "--runs-dir", str(runs), "--set", "run.name=study-b"]
    assert CliRunner().invoke(app, [*named, "--dry-run"]).exit_code == 0
    again = CliRunner().invoke(app, ["run", str(first), "--runs-dir", str(runs), "--dry-run"])
    assert again.exit_code == 0  # its own config still runs there


def test_a_dry_run_writes_nothing_and_says_what_a_run_would_generate(tmp_path):
    """Issue 24 item 1: the dry run generated 2,600 images and created runs/."""
    config = tmp_path / "fresh.yaml"
    root = tmp_path / "data" / "shapes"
    config.write_text(yaml.safe_dump({"data": {"root": str(root), "generate": True}}))
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["run", str(config), "--dry-run", "--runs-dir", str(runs)])
    assert result.exit_code == 0, result.output
    assert "wouldgeneratetheshapesdataset" in "".join(result.output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh.yaml"]  # no data/, no runs/


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--set", "backbone.name=timm:resnet5O"], "didyoumeanresnet50"),
        (["--set", "backbone.name=timm:vit_tiny_patch16_224"], "Attentionlayers"),
        (["--set", "trian.epochs=2"], "--settrian.epochs=2:trian:unknownkey;didyoumean'train'?"),
        (["--set", "train.epoch=2"], "didyoumean'epochs'?(keyshere:optimizer,lr"),
        # an item of a list the --set gave is blamed on the --set, not the file
        (["--set", "eval.metrics=[voc-mAP]"], "--seteval.metrics=[voc-mAP]:eval.metrics.0:"),
    ],
    ids=["timm-typo", "transformer", "section-typo", "key-typo", "list-item"],
)
def test_what_every_cell_would_fail_on_is_refused_at_plan_time(shapes, tmp_path, extra, named):
    """Issue 24 items 2 and 3: a dry run accepted these and the run failed once per cell;
    an unknown key now names the --set that gave it, the closest key and all keys."""
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes)))
    for dry in (["--dry-run"], []):
        result = CliRunner().invoke(
            app, ["run", str(config), "--runs-dir", str(tmp_path / "runs"), *extra, *dry]
        )
        assert result.exit_code == 2, result.output
        assert named in "".join(result.output.split()) and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_cuda_without_cuda_is_refused_before_any_compute(shapes, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes)))
    result = CliRunner().invoke(app, ["run", str(config), "--device", "cuda", "--dry-run"])
    assert result.exit_code == 2 and "noCUDAdevice" in "".join(result.output.split())


def test_failures_are_said_once_per_reason_and_no_results_are_announced(capsys):
    from prm_bench.cli import run as run_command

    run_command._print_failures({0: "boom", 1: "boom", 2: "other"})
    out = capsys.readouterr().out
    assert out.count("boom") == 1 and "cells 0, 1 failed" in out and "cell 2 failed" in out


def test_a_variant_with_overrides_gets_its_own_run_directory(shapes, tmp_path):
    """Issue 24 item 6: a `--set` variant replaced runs/<name>/results.csv."""
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes)))
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert CliRunner().invoke(app, ["run", str(config), *runs]).exit_code == 0
    plain = (tmp_path / "runs" / "study" / "results.csv").read_bytes()
    variant = ["run", str(config), *runs, "--set", "retrieval.alpha=0.5", "--set", "run.jobs=1"]
    assert CliRunner().invoke(app, variant).exit_code == 0
    assert (tmp_path / "runs" / "study" / "results.csv").read_bytes() == plain
    assert (tmp_path / "runs" / "study+retrieval.alpha-0.5" / "results.csv").is_file()


def test_a_dry_run_after_a_run_reads_the_file_index_and_decodes_nothing(
    shapes, tmp_path, monkeypatch
):
    """A dry run writes nothing, yet an unchanged tree is not decoded again: it reads
    the index the run wrote (and leaves it as it was)."""
    from prm_bench.data.voc import VocDataset

    config = tmp_path / "small.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes)))
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert CliRunner().invoke(app, ["run", str(config), *runs]).exit_code == 0
    (index,) = (tmp_path / "runs" / ".cache").rglob("*.tsv")
    before = index.read_bytes()
    calls = []
    original = VocDataset.check
    monkeypatch.setattr(VocDataset, "check", lambda self, i: calls.append(i) or original(self, i))
    dry = CliRunner().invoke(app, ["run", str(config), *runs, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert calls == [] and index.read_bytes() == before


def test_errors_and_plans_print_user_values_as_they_are(shapes, tmp_path):
    """The console read `[cell ...]` and `[voc-mAP]` in messages as markup and dropped
    them: a bad cell's error lost the cell it named."""
    config = tmp_path / "cells.yaml"
    config.write_text(yaml.safe_dump(small_config(shapes, grid={"train.lr": [0.1, -1.0]})))
    result = CliRunner().invoke(app, ["run", str(config), "--dry-run"])
    assert result.exit_code == 2
    assert "[celltrain.lr=-1.0]:train.lr:" in "".join(result.output.split()), result.output
    config.write_text(yaml.safe_dump(small_config(shapes, grid={"eval.metrics": [["abo"]]})))
    result = CliRunner().invoke(app, ["run", str(config), "--dry-run", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 0 and "cell 0: eval.metrics=['abo']" in result.output

"""`prm-bench tune`: the tuning split, the search space, shared stages, resume, best.yaml,
test-once and the report section."""

import socket
import subprocess
import sys

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.config import ConfigError, load_plan
from prm_bench.config.keys import stage_keys
from prm_bench.data import open_dataset
from prm_bench.data.base import DataError
from prm_bench.metrics.bootstrap import paired_bootstrap
from prm_bench.orchestrate import runner as runner_module
from prm_bench.orchestrate.preflight import preflight
from prm_bench.orchestrate.rundir import plan_from_manifest, store_of
from prm_bench.orchestrate.runner import RunInterrupted, RunOptions
from prm_bench.orchestrate.tune import TuneRequest, TuneSummary, tune, write_best
from prm_bench.stages.evaluate import read_statistics
from prm_bench.stages.splits import open_split
from tests.orchestrate.tuning import config_for

optuna = pytest.importorskip("optuna")


def write_config(tmp_path, tree) -> str:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(tree))
    return str(path)


def with_data(root, **data) -> dict:
    return {**config_for(root), "data": {"name": "shapes", "root": str(root), **data}}


@pytest.fixture
def root(study_root):
    """The shapes tree of the study (with a tune split)."""
    return study_root


def test_the_tuning_split_is_never_the_evaluation_split(root, tmp_path):
    with pytest.raises(ConfigError, match="tune_split 'val' must differ"):
        load_plan(with_data(root, tune_split="val"))
    with pytest.raises(ConfigError, match="no tune_split"):
        load_plan({"data": {"root": str(root), "evaluate_on": "tune"}})
    # a list file that shares images with the evaluation split is refused before compute
    shared = tmp_path / "shared.txt"
    shared.write_text("".join(f"{i}\n" for i in open_dataset("shapes", root, "val").ids[:2]))
    plan = load_plan(with_data(root, tune_split=str(shared)))
    with pytest.raises(DataError, match="tuning images are in the evaluation split"):
        preflight(plan)


def test_evaluating_on_tune_changes_only_the_evaluated_stages(root):
    base = load_plan(config_for(root), use_grid=False).cells[0].config
    tuned = base.model_copy(update={"data": base.data.model_copy(update={"evaluate_on": "tune"})})
    a, b = stage_keys(base), stage_keys(tuned)
    assert a["train"] == b["train"]
    assert all(a[s] != b[s] for s in ("infer", "proposals", "retrieve", "evaluate"))
    assert open_split(tuned.data, "evaluated").ids == open_dataset("shapes", root, "tune").ids


def test_a_bad_search_space_exits_2_without_a_traceback(root, tmp_path):
    tree = config_for(root, {"retrieval.alpha": {"low": 2.0, "high": 0.1}})
    result = CliRunner().invoke(
        app, ["tune", write_config(tmp_path, tree), "--trials", "2", "--runs-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "low2.0isabovehigh0.1" in "".join(result.output.split())
    assert "Traceback" not in result.output
    bad_metric = CliRunner().invoke(
        app, ["tune", write_config(tmp_path, config_for(root)), "--metric", "pointing_mAP",
              "--runs-dir", str(tmp_path)],
    )  # fmt: skip
    assert bad_metric.exit_code == 2 and "pointing_mAP" in bad_metric.output


def counting_stages(monkeypatch) -> dict:
    counts: dict[str, int] = {}
    original = runner_module.execute_tasks

    def counted(stage, configs, *args, **kwargs):  # stages run, whether grouped or not
        counts[stage] = counts.get(stage, 0) + len(configs)
        return original(stage, configs, *args, **kwargs)

    monkeypatch.setattr(runner_module, "execute_tasks", counted)
    return counts


def test_a_retrieval_study_trains_and_infers_once_whatever_the_trials(root, tmp_path, monkeypatch):
    counts = counting_stages(monkeypatch)
    plan = load_plan(config_for(root), use_grid=False)
    summary = tune(plan, TuneRequest(trials=4, evaluate=True), RunOptions(tmp_path))
    assert summary.trials == 4
    # trials: 1 train, 1 inference on tune, 4 retrievals; test: 1 inference on val, and
    # retrieve + evaluate of default and tuned (one each, or one if tuned == default)
    assert counts["train"] == 1 and counts["infer"] == 2
    assert counts["retrieve"] == counts["evaluate"] and 5 <= counts["retrieve"] <= 6
    assert summary.executed["train"] == 1 and summary.executed["infer"] == 1
    assert summary.executed["retrieve"] == summary.executed["evaluate"] == 4
    # more trials on the same study run only the new ones, and no stage upstream
    counts.clear()
    more = tune(plan, TuneRequest(trials=6), RunOptions(tmp_path))
    assert more.trials == 6 and counts == {"retrieve": 2, "evaluate": 2}
    # best.yaml extends the config and reproduces the tuned cell of the test
    best = load_plan(tmp_path / "study" / "best.yaml")
    assert len(best.cells) == 1 and best.name == "study-best"
    tuned_params = best.cells[0].config.retrieval
    assert tuned_params.alpha == pytest.approx(more.best_params["retrieval.alpha"])
    assert tuned_params.confidence == more.best_params["retrieval.confidence"]
    trials = pd.read_csv(tmp_path / "study" / "tuning" / "trials.csv")
    assert len(trials) == 6 and (trials["state"] == "COMPLETE").all()


def test_an_interrupted_best_yaml_write_leaves_the_last_one_whole(root, tmp_path, monkeypatch):
    plan = load_plan(config_for(root), use_grid=False)
    first = TuneSummary(tmp_path, 0.25, {"retrieval.alpha": 0.5}, 3, 8, 0)
    path = write_best(plan, first, tmp_path, "mAP@0.5")
    before = path.read_bytes()

    def killed(descriptor):  # the process dies before the new file is on disk
        raise KeyboardInterrupt

    monkeypatch.setattr("prm_bench.atomic.os.fsync", killed)
    better = TuneSummary(tmp_path, 0.5, {"retrieval.alpha": 2.0}, 9, 12, 0)
    with pytest.raises(KeyboardInterrupt):
        write_best(plan, better, tmp_path, "mAP@0.5")
    assert path.read_bytes() == before
    assert load_plan(path).cells[0].config.retrieval.alpha == 0.5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("best")] == ["best.yaml"]


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_study_killed_mid_trial_resumes_to_the_same_study(root, tmp_path, monkeypatch):
    plan = load_plan(config_for(root), use_grid=False)
    clean = tune(plan, TuneRequest(trials=4), RunOptions(tmp_path / "clean"))
    original = runner_module.run_plan
    calls = {"n": 0}

    def killed_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RunInterrupted("interrupted")
        return original(*args, **kwargs)

    monkeypatch.setattr("prm_bench.orchestrate.tune.run_plan", killed_third)
    with pytest.raises(RunInterrupted):
        tune(plan, TuneRequest(trials=4), RunOptions(tmp_path / "killed"))
    monkeypatch.setattr("prm_bench.orchestrate.tune.run_plan", original)
    # and a trial left RUNNING by a process killed with -9 (no chance to record anything)
    storage = f"sqlite:///{tmp_path / 'killed' / 'study' / 'tuning' / 'study.db'}"
    study = optuna.load_study(study_name="study", storage=storage)
    orphan = study.ask()
    orphan.set_user_attr("owner", f"{socket.gethostname()}:{dead_pid()}:gone")
    resumed = tune(plan, TuneRequest(trials=4), RunOptions(tmp_path / "killed"))

    def finished(run_dir) -> pd.DataFrame:
        frame = pd.read_csv(run_dir / "study" / "tuning" / "trials.csv")
        done = frame[frame["state"] == "COMPLETE"].drop(columns=["number", "duration"])
        return done.reset_index(drop=True)

    pd.testing.assert_frame_equal(finished(tmp_path / "clean"), finished(tmp_path / "killed"))
    assert resumed.best_params == clean.best_params
    assert resumed.best_value == clean.best_value
    states = pd.read_csv(tmp_path / "killed" / "study" / "tuning" / "trials.csv")["state"]
    # the killed trials are recorded as interrupted, not failed, and sampled again
    assert list(states).count("INTERRUPTED") == 2 and "FAIL" not in list(states)
    assert resumed.failed == 0


def test_the_report_shows_default_vs_tuned_with_a_ci(root, tmp_path):
    """A study whose one choice differs from the default (class-score confidence, on the
    ground-truth gallery, so the ranking meets hits and misses): the report's effects and
    verdicts are the paired bootstrap of the stored statistics, and a metric the choice
    cannot move (ABO ignores confidences) is named as left out."""
    search = {"retrieval.confidence": {"choices": ["class"]}}
    tree = {**config_for(root, search), "proposals": {"gallery": "gt"}}  # hits and misses
    plan = load_plan(tree, ["train.epochs=3"], use_grid=False)
    summary = tune(plan, TuneRequest(trials=2, evaluate=True), RunOptions(tmp_path))
    assert summary.best_params == {"retrieval.confidence": "class"}
    result = CliRunner().invoke(
        app, ["report", str(tmp_path / "study"), "--out", str(tmp_path / "report"),
              "--resamples", "200"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    text = (tmp_path / "report" / "README.md").read_text()
    assert "## Tuned on `tune`, tested once on `val`" in text
    assert "so left out: `abo`" in text
    table = pd.read_csv(tmp_path / "report" / "tables" / "tuning_test.csv")
    assert "mAP@0.5" in set(table["metric"])
    test_dir = tmp_path / "study" / "tuning" / "test"
    cells = {c.axes["variant"]: c for c in plan_from_manifest(test_dir).cells}
    store = store_of(test_dir)
    stats = {name: read_statistics(store, c.keys["evaluate"]) for name, c in cells.items()}
    results = pd.read_csv(test_dir / "results.csv")
    for row in table.itertuples():
        values = results[results["metric"] == row.metric].set_index("cell")["value"]
        assert row.default == round(100 * values[cells["default"].index], 1)
        assert row.tuned == round(100 * values[cells["tuned"].index], 1)
        interval = paired_bootstrap([stats["tuned"]], [stats["default"]], row.metric, 200)
        assert row._4 == (
            f"{100 * interval.effect:+.1f} [{100 * interval.low:+.1f}, {100 * interval.high:+.1f}]"
        )
        assert row._5 == interval.verdict()
    assert (tmp_path / "report" / "figures" / "tuning_history.png").is_file()
    assert (tmp_path / "report" / "figures" / "tuning_history.pdf").is_file()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_damaged_study_file_exits_2_naming_it(root, tmp_path, damage):
    """Issue 23 defect 9: a garbage or truncated study.db is refused, and a 0-byte one
    beside a recorded study is not silently restarted."""
    config = write_config(tmp_path, config_for(root))
    command = ["tune", config, "--trials", "1", "--runs-dir", str(tmp_path)]
    assert CliRunner().invoke(app, command).exit_code == 0
    database = tmp_path / "study" / "tuning" / "study.db"
    size = database.stat().st_size
    if damage == "garbage":
        database.write_bytes(bytes((i * 37 + 11) % 256 for i in range(size)))
    elif damage == "truncated":  # the header survives, the pages do not
        database.write_bytes(database.read_bytes()[: size // 3])
    else:
        database.write_bytes(b"")
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2, result.output
    assert "study.db" in "".join(result.output.split())
    assert "Traceback" not in result.output

"""The reproduction-gap study (issue 25): its config section, the leak option, and the
report section on constructed statistics with known answers and on a real tiny run."""

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.config import ConfigError, load_plan
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.report import build_report
from prm_bench.report.gap import GapCells, gap_table, interaction_weights, row_weights
from prm_bench.stages.splits import open_training_data
from tests.conftest import tiny_config

ROWS = [
    {"cause": "A", "released": "a0", "alternative": "a1", "variant": "flip-a", "paper": True},
    {"cause": "B", "released": "b0", "alternative": "b1", "variant": "flip-b", "paper": True},
    {"cause": "C", "released": "c0", "alternative": "c1", "variant": "same"},
    {"cause": "D", "released": "d0 (in flip-a)", "alternative": "d1 (the base)",
     "variant": "released", "against": "flip-a"},
    {"cause": "Leak", "released": "no", "alternative": "yes", "variant": "leak"},
]  # fmt: skip
VARIANTS = ["released", "flip-a", "flip-b", "same", "leak", "paper"]


def study_config(root=".", rows=ROWS, **gap) -> dict:
    variants = {name: {} for name in VARIANTS}
    variants["leak"] = {"data.leak": "train-on-eval"}
    variants["flip-a"] = {"retrieval.confidence": "peak"}
    return {
        "data": {"name": "shapes", "root": str(root)},
        "grid": {"train.seed": [0, 1], "variants": variants},
        "gap": {"metrics": ["prm_correct"], "primary": "prm_correct", "rows": rows, **gap},
    }


def ratio(values) -> dict:
    values = np.asarray(values, float)
    return {"prm_correct/num": values, "prm_correct/den": np.ones(len(values))}


def constructed(plan, shift: dict[str, float]) -> dict[int, dict]:
    """Per cell: one seed's base statistics (40 images) plus its variant's shift."""
    rng = np.random.default_rng(0)
    base = {seed: rng.random(40) * 0.5 for seed in (0, 1)}
    return {
        c.index: ratio(base[c.config.train.seed] + shift.get(c.axes["variant"], 0.0))
        for c in plan.cells
    }


def test_the_table_gives_each_cause_its_known_effect_and_verdict():
    """flip-a +0.10, flip-b +0.20 (paper: +0.30, additive), `same` 0 (negligible within
    1 point), D is the base against flip-a (-0.10), the leak +0.05 and marked."""
    plan = load_plan(study_config())
    shift = {"flip-a": 0.1, "flip-b": 0.2, "leak": 0.05, "paper": 0.3}
    stats = constructed(plan, shift)
    cells = GapCells(plan, stats.get)
    table, effects = gap_table(plan.gap, cells, resamples=200)
    effect = {row: e["prm_correct"].effect for row, e in zip("ABCDL", effects, strict=True)}
    assert effect == pytest.approx({"A": 0.1, "B": 0.2, "C": 0.0, "D": -0.1, "L": 0.05})
    verdicts = table["verdict (prm_correct)"].tolist()
    assert verdicts == ["matters", "matters", "negligible", "matters", "matters"]
    assert table["cause"].tolist()[-1] == "Leak (LEAK)"
    small = GapCells(plan, constructed(plan, {"flip-a": 0.005}).get)
    assert gap_table(plan.gap, small, resamples=200)[0]["verdict (prm_correct)"][0] == (
        "matters (inside +-1)"  # +0.5 points on every image: real, and inside the margin
    )
    assert table["effect on prm_correct [95% CI]"][2] == "+0.0 [+0.0, +0.0]"
    check = cells.contrast(interaction_weights(plan.gap), "prm_correct", 200)
    assert check.effect == pytest.approx(0.0, abs=1e-12)
    assert check.low == pytest.approx(0.0, abs=1e-9) and check.high == pytest.approx(0, abs=1e-9)
    joint = GapCells(plan, constructed(plan, {**shift, "paper": 0.5}).get)
    interacting = joint.contrast(interaction_weights(plan.gap), "prm_correct", 200)
    assert interacting.effect == pytest.approx(0.2) and interacting.low == pytest.approx(0.2)


def test_the_contrast_weights_by_hand():
    plan = load_plan(study_config())
    rows = plan.gap.rows
    assert row_weights(plan.gap, rows[0]) == {"flip-a": 1.0, "released": -1.0}
    assert row_weights(plan.gap, rows[3]) == {"released": 1.0, "flip-a": -1.0}
    # (paper - base) - (flip-a - base) - (flip-b - base)
    assert interaction_weights(plan.gap) == {
        "paper": 1.0, "released": 1.0, "flip-a": -1.0, "flip-b": -1.0
    }  # fmt: skip


def test_a_study_that_names_a_missing_variant_is_refused():
    rows = [*ROWS, {"cause": "E", "released": "e0", "alternative": "e1", "variant": "nope"}]
    with pytest.raises(ConfigError, match=r"gap names the variants nope, which grid\.variants"):
        load_plan(study_config(rows=rows))
    with pytest.raises(ConfigError, match=r"gap\.margin: Input should be greater than 0"):
        load_plan(study_config(margin=0))


def test_the_leak_is_refused_on_the_command_line(shapes_root, tmp_path):
    with pytest.raises(ConfigError, match=r"data\.leak trains on the evaluation images"):
        load_plan(tiny_config(shapes_root), ["data.leak=train-on-eval"])
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{name: shapes, root: {shapes_root}}}\n")
    result = CliRunner().invoke(app, ["run", str(config), "--set", "data.leak=train-on-eval"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "refusedonthecommandline" in "".join(result.output.split()), result.output


def test_the_leak_trains_on_the_evaluation_images_and_only_its_training_key_changes(
    shapes_root,
):
    clean, leak = (
        load_plan(
            {
                **tiny_config(shapes_root),
                "data": {"name": "shapes", "root": str(shapes_root), "leak": value},
            }
        ).cells[0]
        for value in ("none", "train-on-eval")
    )
    assert clean.keys["train"] != leak.keys["train"]
    assert clean.keys["proposals"] == leak.keys["proposals"]
    train, evaluation = open_training_data(leak.config.data)
    plain, _ = open_training_data(clean.config.data)
    assert train.ids == plain.ids + evaluation.ids
    first = evaluation.ids[0]
    np.testing.assert_array_equal(train.image(first), evaluation.image(first))
    np.testing.assert_array_equal(train.labels(first), evaluation.labels(first))


def test_a_real_tiny_study_gets_its_section_figure_and_leak_marks(shapes_root, tmp_path):
    rows = [
        {"cause": "6. Instance confidence", "released": "retrieval score",
         "alternative": "peak value", "variant": "confidence-peak", "paper": True},
        {"cause": "5. Background-mask resize", "released": "legacy", "alternative": "bicubic",
         "variant": "bicubic", "paper": True},
        {"cause": "1. Proposal quality", "released": "embedded", "alternative": "gt+embedded",
         "variant": "gallery"},
        {"cause": "2. Leak", "released": "train", "alternative": "train + eval",
         "variant": "leak"},
    ]  # fmt: skip
    config = tiny_config(shapes_root, retrieval={"resize_mode": "legacy"})
    config["grid"] = {
        "train.seed": [0, 1],
        "variants": {
            "released": {},
            "confidence-peak": {"retrieval.confidence": "peak"},
            "bicubic": {"retrieval.resize_mode": "bicubic"},
            "gallery": {"proposals.gallery": "gt+embedded"},
            "leak": {"data.leak": "train-on-eval"},
            "paper": {"retrieval.confidence": "peak", "retrieval.resize_mode": "bicubic"},
        },
    }
    config["gap"] = {"rows": rows, "margin": 1.0}
    config["eval"] = {"metrics": ["voc-map"]}
    plan = load_plan(config)
    summary = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert not summary.failed_cells
    assert summary.executed["train"] == 4  # 2 seeds x (base, leak): the rest share them
    out = build_report(tmp_path / plan.name, tmp_path / "report", resamples=200)
    text = (out / "README.md").read_text()
    assert "## Reproduction gap" in text and (out / "figures" / "gap_waterfall.png").is_file()
    assert "- **Leak:** cells" in text  # the header
    assert "2. Leak (LEAK)" in text and "Interaction check on mAP@0.5" in text
    table = pd.read_csv(out / "tables" / "gap.csv")
    assert (
        len(table) == 4
        and table["verdict (mAP@0.5)"].isin(["matters", "negligible", "inconclusive"]).all()
    )
    recall = table["gallery recall@0.5"].fillna("").tolist()
    low, high = (float(v) for v in recall[2].split(" -> "))
    assert high == 100.0 and low < high  # gt+embedded holds every ground-truth mask
    assert recall[:2] == ["", ""] and recall[3] == ""

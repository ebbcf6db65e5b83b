import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from prm_bench.cli import app
from prm_bench.config import load_plan
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.report import build_report
from tests.conftest import tiny_config


def test_report_of_a_real_run_writes_tables_and_figures(shapes_root, tmp_path):
    grid = [
        {"zip": {"method.name": ["prm", "cam-rect"], "stimulation.name": ["peak", "gap"]}},
        {"retrieval.terms": ["full", "no-instance"]},
    ]
    plan = load_plan(tiny_config(shapes_root, grid=grid))
    run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    out = build_report(tmp_path / plan.name, tmp_path / "report")
    text = (out / "README.md").read_text()
    assert (
        "T1/T4. Instance and semantic segmentation" in text and "T5. Retrieval-term subsets" in text
    )
    # shapes is not the paper's data: its numbers are a labelled reference, never a diff
    assert "mAP@0.5 VOC ref." in text and "The paper's claims" in text
    assert "mAP@0.5 diff" not in text and "a reference on another dataset" in text
    # every metric computed appears somewhere (issue 24 item 9): pointing, PRM quality
    every = pd.read_csv(out / "tables" / "every_metric.csv")
    assert {"pointing_mAP", "prm_correct", "mIoU", "abo"} <= set(every.columns)
    assert "## Every metric, per cell" in text
    claims = pd.read_csv(out / "tables" / "claims.csv").set_index("claim")
    instance = claims.loc["Removing the instance-aware term lowers mAP^r@0.5"]
    assert instance["verdict"] in (
        "holds",
        "contradicted",
        "inconclusive",
        "inconclusive (after Holm)",
    )
    assert instance["Holm p"] and 0 <= float(instance["Holm p"]) <= 1
    low, high = (float(v) for v in instance["95% CI"].strip("[]").split(","))
    assert low <= float(instance["measured effect"]) <= high
    assert "paired bootstrap over images (one seed) with 1000 seeded resamples" in text
    for name in (
        "t1_instance",
        "t5_terms",
        "training_curves",
        "pr_curves",
        "qualitative",
        "claims",
    ):
        for suffix in (".png", ".pdf"):
            assert (out / "figures" / f"{name}{suffix}").stat().st_size > 1000
        with Image.open(out / "figures" / f"{name}.png") as image:
            assert image.size[0] > 300 and image.size[1] > 200
    assert (out / "tables" / "t1_instance.tex").read_text().startswith("\\begin{table}")
    assert "\\toprule" in (out / "tables" / "t5_terms.tex").read_text()
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "not a prm-bench run directory" in result.output


INTERRUPTED_REPORT = """
import sys
from prm_bench.report import figures
original, calls = figures.save, []
def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        raise KeyboardInterrupt
    return original(*args, **kwargs)
figures.save = interrupted
from prm_bench.cli import app
app(["report", sys.argv[1], "--out", sys.argv[2], "--resamples", "100"])
"""


def test_an_interrupted_report_says_so_and_leaves_only_whole_files(shapes_root, tmp_path):
    """Issue 23 defect 10: exit 130 with a message; no 0-byte or partial file."""
    import subprocess
    import sys

    plan = load_plan(tiny_config(shapes_root, grid={"retrieval.terms": ["full", "no-instance"]}))
    run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    out = tmp_path / "report"
    done = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_REPORT, str(tmp_path / plan.name), str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 130, done.stderr
    assert "interrupted" in done.stdout and "Traceback" not in done.stdout + done.stderr
    written = [p for p in out.rglob("*") if p.is_file()]
    assert written and all(p.stat().st_size > 0 for p in written)
    assert not [p for p in written if p.name.startswith(".")]  # no temporary left behind


def test_a_report_of_a_partly_failed_run_names_the_missing_cells(shapes_root, tmp_path):
    """Issue 24 item 9: a failed cell left a report that looked complete."""
    grid = {"variants": {"good": {}, "broken": {"backbone.weights": str(tmp_path / "no.pt")}}}
    plan = load_plan(tiny_config(shapes_root, grid=grid))
    summary = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert list(summary.failed_cells) == [1]
    text = (build_report(tmp_path / plan.name, tmp_path / "report") / "README.md").read_text()
    assert "**1 of 2 cells have no results**" in text
    assert "cell 1 (variant=broken)" in text and "no.pt does not exist" in text

from typer.testing import CliRunner

from prm_bench.cli import app


def test_status_and_report_refuse_a_damaged_or_unfinished_run(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "manifest.json").write_text('{"cells": [')
    for command in (["status", str(run_dir)], ["report", str(run_dir)]):
        result = CliRunner().invoke(app, command, env={"COLUMNS": "300"})
        assert result.exit_code == 2 and "manifest.json" in "".join(result.output.split())

"""Positions of long loops (issue 22 item 2): live files for the terminal's bars, a plain
line every N seconds for logs, and the bars that mirror the files."""

import io
import json

from rich.console import Console
from rich.progress import Progress

from prm_bench import progress
from prm_bench.cli.live import LiveBars


def test_a_meter_keeps_a_live_file_and_says_a_line_every_n_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("PRM_BENCH_PROGRESS_SECONDS", "0")
    monkeypatch.setattr(progress, "LIVE_SECONDS", 0.0)
    said: list[str] = []
    progress.install(said.append, tmp_path / "live")
    try:
        with progress.meter("infer abc", 4, first=1) as position:
            position.tick(2, "images")
            record = json.loads((tmp_path / "live" / "infer-abc.json").read_text())
            assert {k: record[k] for k in ("label", "done", "total", "first", "detail")} == {
                "label": "infer abc", "done": 2, "total": 4, "first": 1, "detail": "images"
            }  # fmt: skip
            position.tick(3, "images")
            position.tick(4, "images")  # the end is no line: the stage says it is done
        assert not (tmp_path / "live" / "infer-abc.json").exists()  # gone with the loop
    finally:
        progress.install(None)
    # no line at the first tick (no pace yet), one at the next, none at the end
    assert len(said) == 1 and said[0].startswith("infer abc: 3/4 images, left 0:00:0")


def test_without_an_installed_folder_a_meter_writes_nothing(tmp_path):
    progress.install(None)
    with progress.meter("train k", 3) as position:
        position.tick(1)
    assert position.path is None and not list(tmp_path.iterdir())


def test_the_bars_follow_the_live_files(tmp_path):
    live = tmp_path / "live"
    live.mkdir()
    entry = {"label": "train k1", "done": 3, "total": 10, "first": 2,
             "detail": "epoch 1/2 batch 3/5 loss 0.6931 12.0 images/s"}  # fmt: skip
    (live / "train-k1.json").write_text(json.dumps(entry))
    (live / "broken.json").write_text("{")  # replaced while read: skipped
    display = Progress(console=Console(file=io.StringIO()), auto_refresh=False)
    bars = LiveBars(display, live)
    bars.refresh()
    (task,) = display.tasks
    assert task.description == "  train k1 epoch 1/2 batch 3/5 loss 0.6931 12.0 images/s"
    assert (task.completed, task.total) == (3, 10)
    (live / "train-k1.json").write_text(json.dumps({**entry, "done": 7}))
    bars.refresh()
    assert display.tasks[0].completed == 7
    (live / "train-k1.json").unlink()
    bars.refresh()
    assert not display.tasks

"""Cells that share an inference and a gallery are retrieved in one pass: the same files
as one cell at a time, a failing cell alone, and one prepared gallery per preparation."""

import pytest

from prm_bench.config import load_plan
from prm_bench.config.keys import stage_keys
from prm_bench.orchestrate.runner import RunOptions, Task, group_tasks, run_plan
from prm_bench.stages import retrieve as retrieve_stage
from prm_bench.stages.store import Store
from tests.test_runner import tiny

GRID = {
    "retrieval.terms": ["full", "no-instance", "class-only", "instance+boundary"],
    "retrieval.confidence": ["retrieval", "class", "peak"],
}
EXTRA = [  # the same inference and gallery, other preparations, resolution and a baseline
    {"retrieval.top_n": [7], "retrieval.contour_width": [3]},
    {"retrieval.resolution": ["input"], "retrieval.nms_threshold": [None]},
    {"method.name": ["cam-proposal"]},
]


@pytest.fixture(scope="module")
def grouped_run(shapes_root, tmp_path_factory):
    # the network sees 48 px: the input resolution scores at another size than the image's
    plan = load_plan(tiny(shapes_root, grid=[GRID, *EXTRA], data={"image_size": 48}))
    run_dir = tmp_path_factory.mktemp("grouped")
    summary = run_plan(plan.with_run(jobs=1), RunOptions(run_dir))
    assert not summary.failed_cells
    return plan, Store(run_dir / plan.name / "store")


def test_cells_retrieved_together_write_the_files_each_writes_alone(grouped_run, tmp_path):
    plan, store = grouped_run
    alone = Store(tmp_path / "alone")
    for cell in plan.cells:  # one inference for every cell: copy it, then retrieve alone
        keys = stage_keys(cell.config)
        for stage in ("train", "infer"):
            if not alone.is_done(stage, keys[stage]):
                target = alone.path(stage, keys[stage])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(store.path(stage, keys[stage]), target_is_directory=True)
        retrieve_stage.run(cell.config, alone, keys, None)
    assert len(plan.cells) == 15 and len({stage_keys(c.config)["infer"] for c in plan.cells}) == 1
    for cell in plan.cells:
        key = stage_keys(cell.config)["retrieve"]
        together = (store.path("retrieve", key) / retrieve_stage.RESULTS).read_bytes()
        assert together == (alone.path("retrieve", key) / retrieve_stage.RESULTS).read_bytes()
        assert store.record("retrieve", key)["group"] == 15  # one task retrieved them all


def test_each_preparation_keeps_its_own_prepared_galleries(grouped_run):
    plan, store = grouped_run
    proposals = store.path("proposals", stage_keys(plan.cells[0].config)["proposals"])
    folders = sorted((proposals / retrieve_stage.PREPARED).iterdir())
    # default preparation at image size, top_n 7 / width 3, and the input resolution
    assert len(folders) == 3
    assert all(len(list(f.glob("*.npz"))) == 6 for f in folders)  # the 6 val images


def test_a_failing_cell_fails_alone_in_its_group(shapes_root, tmp_path, monkeypatch):
    plan = load_plan(tiny(shapes_root, grid=GRID))
    broken = stage_keys(plan.cells[4].config)["retrieve"]
    original = retrieve_stage._instances

    def failing(cell, image):
        if cell.key == broken:
            raise RuntimeError("injected retrieval failure")
        return original(cell, image)

    monkeypatch.setattr(retrieve_stage, "_instances", failing)
    summary = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert set(summary.failed_cells) == {4}
    assert "injected retrieval failure" in summary.failed_cells[4]
    store = Store(tmp_path / plan.name / "store")
    assert not store.is_done("retrieve", broken)
    assert summary.executed["evaluate"] == len(plan.cells) - 1
    monkeypatch.undo()  # mended: the rerun retrieves only the failed cell
    again = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    assert not again.failed_cells and again.executed["retrieve"] == 1


def test_groups_follow_what_cells_share_and_split_to_keep_workers_busy(shapes_root):
    plan = load_plan(tiny(shapes_root, grid={**GRID, "infer.upsample": [1, 2]}))
    cells = {cell.index: cell for cell in plan.cells}
    tasks = [Task("retrieve", c.keys["retrieve"], [i], False) for i, c in cells.items()]
    for width, sizes in ((1, [12, 12]), (2, [12, 12]), (4, [6, 6, 6, 6]), (5, [6, 6, 6, 3, 3])):
        groups = group_tasks(tasks, cells, width)
        assert sorted(map(len, groups), reverse=True) == sizes
        for group in groups:  # a group never mixes inferences
            assert len({stage_keys(cells[t.cells[0]].config)["infer"] for t in group}) == 1
    assert sorted(t.key for g in groups for t in g) == sorted(t.key for t in tasks)
    trains = [Task("train", "k", [0], False), Task("train", "j", [1], False)]
    assert group_tasks(trains, cells, 1) == [[trains[0]], [trains[1]]]


def test_galleries_built_on_the_embedded_proposals_compute_them_once(
    shapes_root, tmp_path, monkeypatch
):
    import prm_bench.instances.proposals as proposals

    calls = []
    original = proposals.embedded_proposals

    def counted(image, params):
        calls.append(image.shape)
        return original(image, params)

    monkeypatch.setattr(proposals, "embedded_proposals", counted)
    grid = {"proposals.gallery": ["embedded", "gt+embedded"]}
    summary = run_plan(
        load_plan(tiny(shapes_root, grid=grid)).with_run(jobs=1), RunOptions(tmp_path)
    )
    assert not summary.failed_cells and summary.executed["retrieve"] == 2
    assert len(calls) == 6  # the 6 val images, once, for both galleries

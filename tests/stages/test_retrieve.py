"""Cells that share an inference and a gallery are retrieved in one pass: the same files
as one cell at a time, a failing cell alone, and one prepared gallery per preparation."""

import numpy as np
import pytest

from prm_bench.config import load_plan
from prm_bench.instances.proposals.embedded import embedded_proposals
from prm_bench.instances.retrieval import retrieve
from prm_bench.orchestrate.preflight import bind_data
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.stages import retrieve as retrieve_stage
from prm_bench.stages.store import Store
from tests.conftest import tiny_config

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
    plan = bind_data(
        load_plan(tiny_config(shapes_root, grid=[GRID, *EXTRA], data={"image_size": 48}))
    )
    run_dir = tmp_path_factory.mktemp("grouped")
    summary = run_plan(plan.with_run(jobs=1), RunOptions(run_dir))
    assert not summary.failed_cells
    return plan, Store(run_dir / plan.name / "store")


def test_cells_retrieved_together_write_the_files_each_writes_alone(grouped_run, tmp_path):
    plan, store = grouped_run
    alone = Store(tmp_path / "alone")
    for cell in plan.cells:  # one inference for every cell: copy it, then retrieve alone
        keys = cell.keys
        for stage in ("train", "infer"):
            if not alone.is_done(stage, keys[stage]):
                target = alone.path(stage, keys[stage])
                target.parent.mkdir(parents=True, exist_ok=True)
                target.symlink_to(store.path(stage, keys[stage]), target_is_directory=True)
        retrieve_stage.run(cell.config, alone, keys, None)
    assert len(plan.cells) == 15 and len({c.keys["infer"] for c in plan.cells}) == 1
    for cell in plan.cells:
        key = cell.keys["retrieve"]
        together = (store.path("retrieve", key) / retrieve_stage.RESULTS).read_bytes()
        assert together == (alone.path("retrieve", key) / retrieve_stage.RESULTS).read_bytes()
        assert store.record("retrieve", key)["group"] == 15  # one task retrieved them all


def test_each_preparation_keeps_its_own_prepared_galleries(grouped_run):
    plan, store = grouped_run
    proposals = store.path("proposals", plan.cells[0].keys["proposals"])
    folders = sorted((proposals / retrieve_stage.PREPARED).iterdir())
    # default preparation at image size, top_n 7 / width 3, and the input resolution
    assert len(folders) == 3
    assert all(len(list(f.glob("*.npz"))) == 6 for f in folders)  # the 6 val images


def test_a_failing_cell_fails_alone_in_its_group(shapes_root, tmp_path, monkeypatch):
    plan = bind_data(load_plan(tiny_config(shapes_root, grid=GRID)))
    broken = plan.cells[4].keys["retrieve"]
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
        load_plan(tiny_config(shapes_root, grid=grid)).with_run(jobs=1), RunOptions(tmp_path)
    )
    assert not summary.failed_cells and summary.executed["retrieve"] == 2
    assert len(calls) == 6  # the 6 val images, once, for both galleries


def test_a_prepared_gallery_from_the_cache_scores_as_a_fresh_one(tmp_path):
    from prm_bench.data.shapes import ShapesSpec, draw_image
    from prm_bench.instances.gallery import prepare_gallery
    from prm_bench.instances.retrieval_options import RetrievalConfig
    from prm_bench.stages.retrieve import Preparation, prepared_gallery

    image, *_ = draw_image(ShapesSpec(size=64), 1)
    proposals, _ = embedded_proposals(image)
    params = RetrievalConfig()
    calls = []

    def source():
        calls.append(1)
        return proposals

    path = tmp_path / "prepared" / "a.npz"
    made = Preparation(params, (64, 64), "image a")
    first = prepared_gallery(path, source, made)
    again = prepared_gallery(path, source, made)
    assert len(calls) == 1 and again.key == first.key  # the second came from the file
    fresh = prepare_gallery(proposals, (64, 64), params)
    for name in ("masks", "contours"):
        for field in ("starts", "ends", "offsets"):
            assert np.array_equal(
                getattr(getattr(again, name), field), getattr(getattr(fresh, name), field)
            )
    assert np.array_equal(again.valid, fresh.valid)
    prms = np.random.default_rng(0).random((3, 64, 64))
    peaks = np.array([[0, 0, 1, 1], [0, 1, 2, 2], [0, 0, 3, 3]])
    crm = np.random.default_rng(1).random((1, 2, 4, 4))
    assert [i["proposal"] for i in retrieve(prms, peaks, crm, again, params)] == [
        i["proposal"] for i in retrieve(prms, peaks, crm, proposals, params)
    ]
    small = Preparation(params, (32, 32), "image a")
    prepared_gallery(path, source, small)  # another PRM size: prepared anew
    assert len(calls) == 2
    path.write_bytes(b"garbage")  # an unreadable cache is prepared again
    assert prepared_gallery(path, source, small).size == (32, 32)
    assert len(calls) == 3
    # a valid file prepared from other source files (another image's) is not trusted
    assert prepared_gallery(path, source, Preparation(params, (32, 32), "image b"))
    assert len(calls) == 4

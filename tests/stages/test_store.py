import hashlib

import numpy as np
import pytest

from prm_bench.stages.store import Store, load_npz, save_npz, write_atomic


def test_store_marks_done_only_with_intact_files(tmp_path):
    store = Store(tmp_path)
    folder = store.reset("train", "abc")
    write_atomic(folder / "model.bin", b"x" * 100)
    assert not store.is_done("train", "abc")
    store.complete("train", "abc", {"note": 1})
    assert store.is_done("train", "abc")
    entry = store.record("train", "abc")["files"]["model.bin"]
    assert entry["size"] == 100 and entry["sha256"] == hashlib.sha256(b"x" * 100).hexdigest()
    (folder / "model.bin").write_bytes(b"y" * 100)  # same size, other content
    assert not Store(tmp_path).is_done("train", "abc")
    (folder / "model.bin").write_bytes(b"x" * 100)
    assert Store(tmp_path).is_done("train", "abc")
    (folder / "model.bin").write_bytes(b"x" * 40)  # truncated
    assert not store.is_done("train", "abc")
    (folder / "model.bin").unlink()
    assert not store.is_done("train", "abc")
    assert not list(folder.glob(".*"))  # no temporary file left behind


def test_npz_round_trip_refuses_pickles(tmp_path):
    save_npz(tmp_path / "a.npz", x=np.arange(5), y=np.ones((2, 2), np.float16))
    loaded = load_npz(tmp_path / "a.npz")
    assert np.array_equal(loaded["x"], np.arange(5)) and loaded["y"].dtype == np.float16
    np.savez(tmp_path / "bad.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz(tmp_path / "bad.npz")


def test_a_stage_missing_a_required_output_is_not_recorded_as_done(tmp_path):
    store = Store(tmp_path)
    folder = store.reset("evaluate", "k")
    with pytest.raises(FileNotFoundError, match=r"evaluate k did not write metrics\.json"):
        store.complete("evaluate", "k", required=["metrics.json"])
    assert not store.is_done("evaluate", "k")
    write_atomic(folder / "metrics.json", b"{}")
    store.complete("evaluate", "k", required=["metrics.json"])
    assert store.is_done("evaluate", "k")


def test_store_files_are_readable_by_everyone(tmp_path):
    write_atomic(tmp_path / "a.json", b"{}")
    save_npz(tmp_path / "b.npz", x=np.zeros(2))
    for name in ("a.json", "b.npz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644

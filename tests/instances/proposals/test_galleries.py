import base64
import json

import numpy as np
import pytest
import scipy.io

from prm_bench.data.base import DataError
from prm_bench.data.voc import VocDataset
from prm_bench.instances.proposals import GALLERIES, open_gallery
from prm_bench.registry import UnknownNameError


def demo_entry(mask: np.ndarray) -> dict:
    flat = np.concatenate([[0], mask.ravel().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    runs = np.stack([edges[0::2], edges[1::2] - edges[0::2]], axis=1).astype(np.uint32)
    return {"data": base64.b64encode(runs.tobytes()).decode(), "shape": list(mask.shape)}


def test_missing_files_and_bad_content_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match=r"proposal folder .* does not exist"):
        open_gallery("mcg", tmp_path / "nope")
    gallery = open_gallery("mcg", tmp_path)
    with pytest.raises(DataError, match=r"proposal file .*img9\.mat does not exist"):
        gallery("img9")
    scipy.io.savemat(tmp_path / "img2.mat", {"other": np.zeros(2)})
    with pytest.raises(DataError, match="has no superpixels, labels"):
        gallery("img2")
    with pytest.raises(UnknownNameError, match="did you mean 'mcg'"):
        open_gallery("mgc", tmp_path)


@pytest.fixture(scope="module")
def shapes(make_shapes):
    root = make_shapes(seed=1, n_train=2, n_val=6, size=64, classes=3)
    return root, VocDataset(root, "val", segmentation=True)


def test_gt_gallery_is_the_ground_truth_and_gt_plus_puts_it_first(shapes, tmp_path):
    _, dataset = shapes
    for image_id in dataset.ids:
        truth = np.stack([i.mask for i in dataset.instances(image_id)])
        assert np.array_equal(open_gallery("gt", dataset=dataset)(image_id), truth)
        extra = np.zeros((2, 64, 64), dtype=bool)
        extra[0, :10, :10] = extra[1, 20:, 20:] = True
        (tmp_path / f"{image_id}.json").write_text(json.dumps([demo_entry(m) for m in extra]))
    combined = open_gallery("gt+prm-demo-json", tmp_path, dataset)
    for image_id in dataset.ids:
        truth = open_gallery("gt", dataset=dataset)(image_id)
        assert np.array_equal(combined(image_id), np.concatenate([truth, extra]))


def test_every_listed_gallery_resolves():
    assert GALLERIES.names() == ["mcg", "cob", "rle-json", "prm-demo-json", "embedded", "gt"]
    assert "gt+mcg" in GALLERIES


@pytest.mark.parametrize("name", [*GALLERIES.names(), "gt+embedded", "gt+mcg"])
def test_every_gallery_declares_what_it_needs(name):
    traits = GALLERIES.get(name)
    assert traits.needs_truth == name.startswith("gt")
    assert traits.needs_root == (
        name.removeprefix("gt+") in ("mcg", "cob", "rle-json", "prm-demo-json")
    )
    assert traits.store_cache == name.endswith("embedded")


def test_file_galleries_read_only_the_top_n_they_are_asked_for(tmp_path):
    from benchmarks.proposals import mcg_file

    mcg_file(tmp_path / "a.mat", proposals=40, superpixels=20, size=(30, 20))
    full = open_gallery("mcg", tmp_path)("a")
    top = open_gallery("mcg", tmp_path, top_n=7)("a")
    assert len(full) == 40 and np.array_equal(top, full[:7])

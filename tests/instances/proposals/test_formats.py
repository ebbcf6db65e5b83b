import base64
import json

import numpy as np
import pytest
import scipy.io
from pycocotools import mask as mask_utils

from benchmarks.proposals import mcg_file
from prm_bench.instances.proposals import open_gallery
from prm_bench.instances.proposals.formats import read_mcg

SUPERPIXELS = np.array(
    [
        [1, 1, 2, 2],
        [1, 1, 2, 2],
        [3, 3, 4, 4],
    ],
    dtype=np.uint16,
)


def masks_of(groups: list[list[int]]) -> np.ndarray:
    return np.stack([np.isin(SUPERPIXELS, g) for g in groups])


def test_mcg_mat_gives_superpixel_unions_sorted_by_score(tmp_path):
    groups = [[1], [2, 4], [1, 2, 3]]
    cell = np.empty((3, 1), dtype=object)
    for i, g in enumerate(groups):
        cell[i, 0] = np.array(g, dtype=np.float64).reshape(1, -1)
    scipy.io.savemat(
        tmp_path / "img1.mat",
        {"superpixels": SUPERPIXELS, "labels": cell, "scores": np.array([[0.2], [0.9], [0.5]])},
    )
    masks = open_gallery("mcg", tmp_path)("img1")
    assert masks.dtype == bool
    assert np.array_equal(masks, masks_of([[2, 4], [1, 2, 3], [1]]))


@pytest.mark.parametrize("layout", ["array", "cell"])
def test_cob_maskmat_as_array_or_cell(tmp_path, layout):
    expected = masks_of([[1, 3], [4]])
    if layout == "array":
        maskmat = np.moveaxis(expected, 0, -1)
    else:
        maskmat = np.empty((2, 1), dtype=object)
        for i, m in enumerate(expected):
            maskmat[i, 0] = m
    scipy.io.savemat(tmp_path / "img1.mat", {"maskmat": maskmat})
    assert np.array_equal(open_gallery("cob", tmp_path)("img1"), expected)


def test_rle_json_with_scores_is_sorted(tmp_path):
    expected = masks_of([[1], [2, 3], [4]])
    entries = []
    for mask, score in zip(expected, [0.1, 0.8, 0.3], strict=True):
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        entries.append({"segmentation": rle, "score": score})
    (tmp_path / "img1.json").write_text(json.dumps(entries))
    assert np.array_equal(open_gallery("rle-json", tmp_path)("img1"), expected[[1, 2, 0]])


def demo_entry(mask: np.ndarray) -> dict:
    flat = np.concatenate([[0], mask.ravel().astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    runs = np.stack([edges[0::2], edges[1::2] - edges[0::2]], axis=1).astype(np.uint32)
    return {"data": base64.b64encode(runs.tobytes()).decode(), "shape": list(mask.shape)}


def test_prm_demo_json_runs_decode_to_the_masks(tmp_path):
    expected = masks_of([[1, 4], [2], [1, 2, 3, 4]])
    (tmp_path / "img1.json").write_text(json.dumps([demo_entry(m) for m in expected]))
    assert np.array_equal(open_gallery("prm-demo-json", tmp_path)("img1"), expected)


@pytest.mark.parametrize("v73", [False, True])
def test_mcg_top_n_equals_the_first_masks_of_a_full_read(tmp_path, v73):
    path = mcg_file(tmp_path / "a.mat", proposals=300, superpixels=60, size=(50, 70), v73=v73)
    full = read_mcg(path)
    assert full.shape == (300, 50, 70)
    np.testing.assert_array_equal(read_mcg(path, top_n=40), full[:40])
    assert len(read_mcg(path, top_n=1000)) == 300


def test_mcg_v73_reads_as_the_same_file_in_v5(tmp_path):
    shape = {"proposals": 50, "superpixels": 30, "size": (40, 30), "seed": 3}
    v5 = read_mcg(mcg_file(tmp_path / "a.mat", **shape))
    v73 = read_mcg(mcg_file(tmp_path / "b.mat", v73=True, **shape))
    np.testing.assert_array_equal(v5, v73)
    # and the masks are the unions of the superpixels the labels list, best score first
    content = scipy.io.loadmat(tmp_path / "a.mat")
    best = int(np.argmax(content["scores"].ravel()))
    ids = content["labels"].ravel()[best].ravel()
    np.testing.assert_array_equal(v5[0], np.isin(content["superpixels"], ids))

import base64
import json

import numpy as np
import pytest
import scipy.io
from pycocotools import mask as mask_utils

from prm_bench.data.base import DataError
from prm_bench.data.voc import VocDataset
from prm_bench.geometry.masks import mask_iou
from prm_bench.instances.proposals import GALLERIES, open_gallery
from prm_bench.instances.proposals.embedded import (
    EmbeddedParams,
    embedded_proposals,
    merge_hierarchy,
)
from prm_bench.instances.proposals.quality import gallery_quality
from prm_bench.registry import UnknownNameError

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


def test_merge_hierarchy_adds_one_union_of_two_regions_per_merge():
    labels = np.array([[0, 0, 1, 1], [2, 2, 3, 3], [2, 4, 4, 3]])
    lab = np.random.default_rng(0).random((3, 4, 3)) * 50
    members = merge_hierarchy(labels, lab)
    n = 5
    assert members.shape == (2 * n - 1, n)  # a connected graph merges down to one region
    assert np.array_equal(members[:n], np.eye(n, dtype=bool))
    assert members[-1].all()
    for k in range(n, len(members)):
        earlier = members[:k]
        parts = [i for i in range(k) if (earlier[i] & ~members[k]).sum() == 0]
        # the new region is exactly the union of two disjoint earlier regions
        assert any(
            np.array_equal(earlier[i] | earlier[j], members[k])
            and not (earlier[i] & earlier[j]).any()
            for i in parts
            for j in parts
            if i < j
        )


def test_embedded_proposals_respect_their_contract(shapes):
    _, dataset = shapes
    params = EmbeddedParams(top_n=30)
    for image_id in dataset.ids:
        image = dataset.image(image_id)
        masks, scores = embedded_proposals(image, params)
        assert masks.dtype == bool and masks.shape[1:] == image.shape[:2]
        assert 0 < len(masks) <= 30
        assert (np.diff(scores) <= 0).all()
        area = masks.mean(axis=(1, 2))
        assert ((area >= params.min_area) & (area < params.max_area)).all()
        overlap = mask_iou(masks, masks)
        np.fill_diagonal(overlap, 0)
        assert overlap.max() <= params.dedup_iou
        again, _ = embedded_proposals(image, params)
        assert np.array_equal(again, masks)


def test_embedded_gallery_finds_the_shapes(shapes):
    _, dataset = shapes
    quality = gallery_quality(dataset, open_gallery("embedded", dataset=dataset))
    assert quality["recall@0.5"] >= 0.8
    assert quality["proposals_per_image"] <= 100


def test_embedded_cache_equals_fresh_and_heals(shapes, tmp_path):
    _, dataset = shapes
    fresh = open_gallery("embedded", dataset=dataset)
    cached = open_gallery("embedded", tmp_path, dataset)
    image_id = dataset.ids[0]
    first = cached(image_id)
    files = list(tmp_path.rglob(f"{image_id}.json"))
    assert len(files) == 1
    assert np.array_equal(first, fresh(image_id))
    assert np.array_equal(cached(image_id), first)  # read back from the cache
    files[0].write_text(files[0].read_text()[:20])  # a truncated entry is recomputed
    assert np.array_equal(cached(image_id), first)
    assert files[0].read_text().endswith("]")


def test_gallery_quality_on_a_hand_made_gallery(shapes):
    _, dataset = shapes
    image_id = dataset.ids[0]
    truth = np.stack([i.mask for i in dataset.instances(image_id)])
    # The gallery: the ground truth, except that instance 0 keeps only its first half of
    # pixels; that proposal's IoU with instance 0 is then |half| / |instance 0|.
    gallery = truth.copy()
    ys, xs = np.nonzero(truth[0])
    keep = len(ys) // 2
    gallery[0] = False
    gallery[0][ys[:keep], xs[:keep]] = True
    result = gallery_quality(dataset, lambda _: gallery, [image_id])
    best = np.ones(len(truth))
    best[0] = keep / len(ys)
    assert result["abo"] == pytest.approx(best.mean())
    assert result["recall@0.7"] == pytest.approx((best >= 0.7).mean())
    assert result["recall@0.5"] == pytest.approx((best >= 0.5).mean())
    assert result["instances"] == len(truth)
    perfect = gallery_quality(dataset, open_gallery("gt", dataset=dataset))
    assert perfect["recall@0.5"] == perfect["recall@0.7"] == perfect["abo"] == 1.0


@pytest.mark.parametrize("name", [*GALLERIES.names(), "gt+embedded", "gt+mcg"])
def test_every_gallery_declares_what_it_needs(name):
    traits = GALLERIES.get(name)
    assert traits.needs_truth == name.startswith("gt")
    assert traits.needs_root == (
        name.removeprefix("gt+") in ("mcg", "cob", "rle-json", "prm-demo-json")
    )
    assert traits.store_cache == name.endswith("embedded")


def test_every_method_declares_what_it_needs():
    from prm_bench.instances.methods import METHODS

    assert METHODS.names() == ["prm", "cam-rect", "cam-ellipse", "cam-proposal"]
    needs = {n: METHODS.get(n).needs_proposals for n in METHODS.names()}
    assert needs == {"prm": True, "cam-rect": False, "cam-ellipse": False, "cam-proposal": True}
    assert [n for n in METHODS.names() if METHODS.get(n).uses_retrieval] == ["prm"]

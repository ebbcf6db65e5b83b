import numpy as np
import pytest

from prm_bench.data.voc import VocDataset
from prm_bench.geometry.masks import mask_iou
from prm_bench.instances.proposals import open_gallery
from prm_bench.instances.proposals.embedded import (
    EmbeddedParams,
    embedded_proposals,
    merge_hierarchy,
)
from prm_bench.instances.proposals.quality import gallery_quality


@pytest.fixture(scope="module")
def shapes(make_shapes):
    root = make_shapes(seed=1, n_train=2, n_val=6, size=64, classes=3)
    return root, VocDataset(root, "val", segmentation=True)


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
    intact = files[0].read_bytes()
    files[0].write_text(files[0].read_text()[:20])  # a truncated entry is recomputed
    assert np.array_equal(cached(image_id), first)
    assert files[0].read_bytes() == intact
    # a valid entry of another image copied over this one's is not trusted either
    other = dataset.ids[1]
    cached(other)
    files[0].write_bytes(next(tmp_path.rglob(f"{other}.json")).read_bytes())
    assert np.array_equal(cached(image_id), first)
    assert files[0].read_bytes() == intact

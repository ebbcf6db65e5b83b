import numpy as np
import pytest

from prm_bench.data.voc import VocDataset
from prm_bench.instances.proposals import open_gallery
from prm_bench.instances.proposals.quality import gallery_quality


@pytest.fixture(scope="module")
def shapes(make_shapes):
    root = make_shapes(seed=1, n_train=2, n_val=6, size=64, classes=3)
    return root, VocDataset(root, "val", segmentation=True)


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

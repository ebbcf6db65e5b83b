import numpy as np
import torch

from prm_bench.config import load_plan
from prm_bench.instances.proposals.embedded import embedded_proposals
from prm_bench.instances.retrieval import retrieve
from prm_bench.model.backbones import build_classifier
from prm_bench.stages.infer import infer_image, pack_prms, unpack_prms
from prm_bench.stages.inputs import image_tensor


def test_packed_prms_are_close_and_sum_to_one():
    prms = torch.rand(3, 40, 30) ** 6
    prms = prms / prms.sum(dim=(1, 2), keepdim=True)
    values, scale = pack_prms(prms)
    assert values.dtype == np.float16 and values.max() <= 1.0
    restored = unpack_prms(values, scale)
    np.testing.assert_allclose(restored.sum(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(restored, prms.numpy(), rtol=2e-3, atol=1e-9)
    empty_values, empty_scale = pack_prms(torch.zeros(0, 4, 4))
    assert unpack_prms(empty_values, empty_scale).shape == (0, 4, 4)


def test_retrieval_from_stored_prms_picks_what_fresh_prms_pick(tmp_path):
    from prm_bench.data.shapes import ShapesSpec, draw_image
    from prm_bench.model.backprop import peak_response_maps

    config = (
        load_plan({"infer": {"upsample": 2, "peak_filter": "none", "max_peaks": 6}}).cells[0].config
    )
    model = build_classifier("resnet10t", 5).eval()
    for index in range(3):
        image, *_ = draw_image(ShapesSpec(size=96), index)
        stored = infer_image(
            model, image, config.infer, config.stimulation, None, torch.device("cpu")
        )
        peaks = torch.as_tensor(stored["peaks"]).long()
        fresh = peak_response_maps(model, image_tensor(image, None), peaks, upsample=2).numpy()
        restored = unpack_prms(stored["prm_values"], stored["prm_scale"])
        proposals, _ = embedded_proposals(image)
        a = retrieve(fresh, stored["peaks"], stored["crm"], proposals, {})
        b = retrieve(restored, stored["peaks"], stored["crm"], proposals, {})
        assert [(i["proposal"], i["peaks"]) for i in a] == [(i["proposal"], i["peaks"]) for i in b]

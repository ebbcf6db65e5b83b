import pytest

from prm_bench.report.claims import CLAIMS


def test_paper_effects_are_computed_from_the_paper_numbers():
    effects = {c.text: c.paper_effect() for c in CLAIMS}
    assert effects["PRM beats CAM + proposals on mAP^r@0.5"] == pytest.approx(26.8 - 7.8)
    assert effects["Peak stimulation gives better PRMs than GAP (CAM)"] == pytest.approx(8.3)
    assert effects["ResNet beats VGG on mAP^r@0.5"] == pytest.approx(4.0)
    assert effects["The boundary-aware term raises mAP^r@0.5"] == 2.5  # stated in words
    assert effects["Peak stimulation beats GAP on mAP^r@0.5"] is None

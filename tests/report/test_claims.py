import pytest

from prm_bench.report.claims import CLAIMS


def test_paper_effects_are_computed_from_the_paper_numbers():
    effects = {c.text: c.paper_effect() for c in CLAIMS}
    assert effects["PRM beats CAM + proposals on mAP^r@0.5"] == pytest.approx(26.8 - 7.8)
    assert effects["Peak stimulation gives better PRMs than GAP (CAM)"] == pytest.approx(8.3)
    assert effects["ResNet beats VGG on mAP^r@0.5"] == pytest.approx(4.0)
    assert effects["The boundary-aware term raises mAP^r@0.5"] == 2.5  # stated in words
    assert effects["Peak stimulation beats GAP on mAP^r@0.5"] is None


def test_holm_demotes_verdicts_that_only_chance_across_the_family_explains():
    """Issue 24 item 12: two claims each 'holding' at p 0.03 and 0.04 are, as a family of
    two, not enough (Holm: 0.06 and 0.06)."""
    import pandas as pd

    from prm_bench.metrics.bootstrap import Interval
    from prm_bench.report.claims import _corrected

    intervals = [Interval(0.02, 0.001, 0.04, 1000, 0.95, "m", p_value=p) for p in (0.03, 0.04)]
    claims = pd.DataFrame({"verdict": ["holds", "holds"]})
    corrected = _corrected(claims, [*intervals])
    assert list(corrected["Holm p"]) == ["0.060", "0.060"]
    assert list(corrected["verdict"]) == ["inconclusive (after Holm)"] * 2
    strong = [Interval(0.02, 0.01, 0.04, 1000, 0.95, "m", p_value=p) for p in (0.001, 0.002)]
    kept = _corrected(pd.DataFrame({"verdict": ["holds", "holds"]}), strong)
    assert list(kept["verdict"]) == ["holds", "holds"]

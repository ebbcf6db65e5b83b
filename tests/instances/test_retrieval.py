import numpy as np
import pytest
import torch
from pydantic import ValidationError

from prm_bench.instances.background import legacy_resize
from prm_bench.instances.gallery import prepare_gallery
from prm_bench.instances.retrieval import SharedSums, retrieval_scores, retrieve
from prm_bench.instances.retrieval_options import TERMS, RetrievalConfig
from prm_bench.registry import UnknownNameError
from tests.instances.conftest import H, W, reference_contour, scene


def reference_scores(masks, prms, crm, peaks, params: RetrievalConfig) -> np.ndarray:
    """One proposal at a time, straight from the formula of DESIGN 2.5."""
    terms = TERMS.get(params.terms)
    scores = np.full((len(prms), min(len(masks), params.top_n)), -np.inf)
    for k, (prm, peak) in enumerate(zip(prms, peaks, strict=True)):
        c = peak[1]
        if params.resize_mode == "legacy":
            resized = legacy_resize(crm[0, c], (H, W))
        else:
            resized = torch.nn.functional.interpolate(
                torch.tensor(crm[0, c])[None, None], size=(H, W), mode="bicubic"
            )[0, 0].numpy()
        q = resized < params.bg_factor * resized.mean()
        for p, mask in enumerate(masks[: params.top_n]):
            area = mask.mean()
            if not params.min_area <= area < params.max_area:
                continue
            edge = reference_contour(mask, params.contour_width)
            value = 0.0
            if terms.instance:
                value += params.alpha * prm[mask].sum()
            if terms.boundary:
                value += prm[edge].sum()
            if terms.klass:
                value -= params.beta * q[mask].sum()
            scores[k, p] = value
    return scores


@pytest.mark.parametrize("terms", TERMS.names())
@pytest.mark.parametrize("resize_mode", ["bicubic", "legacy"])
def test_scores_and_choices_equal_the_per_proposal_loop(terms, resize_mode):
    masks, prms, crm, peaks = scene()
    params = RetrievalConfig(terms=terms, resize_mode=resize_mode, beta=0.01, top_n=10)
    gallery = prepare_gallery(masks, (H, W), params)
    fast = retrieval_scores(prms, peaks, crm, gallery, params)
    slow = reference_scores(masks, prms, crm, peaks, params)
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)
    assert np.array_equal(fast.argmax(1), slow.argmax(1))
    instances = retrieve(prms, peaks, crm, masks, params.model_copy(update={"nms_threshold": None}))
    chosen = {i["peaks"][0]: i["proposal"] for i in instances}
    assert chosen == {k: int(slow[k].argmax()) for k in range(len(prms))}


def test_ties_pick_the_first_proposal_and_invalid_ones_are_skipped():
    prm = np.zeros((1, H, W))
    prm[0, 5, 5] = 1.0
    masks = np.zeros((4, H, W), dtype=bool)
    masks[0, 5, 5] = True  # area 1 / 480 is below min_area 0.01
    masks[1, 4:7, 4:7] = True
    masks[2, 4:7, 4:7] = True  # the same as 1: a tie
    masks[3] = True  # too large
    params = {"min_area": 0.01, "terms": "instance-only", "nms_threshold": None}
    (instance,) = retrieve(prm, np.array([[0, 0, 1, 1]]), np.zeros((1, 1, 3, 3)), masks, params)
    assert instance["proposal"] == 1
    assert instance["retrieval_score"] == pytest.approx(0.8)
    assert (
        retrieve(prm, np.array([[0, 0, 1, 1]]), np.zeros((1, 1, 3, 3)), masks[[0, 3]], params) == []
    )


def test_nms_keeps_the_best_and_merges_suppressed_peaks():
    masks = np.zeros((3, H, W), dtype=bool)
    masks[0, 2:10, 2:10] = True
    masks[1, 3:10, 2:10] = True  # IoU 56 / 64 with proposal 0
    masks[2, 14:20, 10:18] = True
    prms = np.zeros((3, H, W))
    prms[0, 5, 5] = 1.0  # -> proposal 0 (a tie with 1: the first wins), score 0.8
    prms[1, 4:9, 3:12] = 1.0 / 45  # 25 of its 45 cells inside proposal 0: score 0.8 * 25 / 45
    prms[2, 16, 12] = 1.0
    peaks = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    crm = np.zeros((1, 2, 3, 3))
    base = {"terms": "instance-only"}
    kept = retrieve(prms, peaks, crm, masks, base)
    assert [i["peaks"] for i in kept] == [[0, 1], [2]]
    assert [i["proposal"] for i in kept] == [0, 2]
    unmerged = retrieve(prms, peaks, crm, masks, {**base, "merge": False})
    assert [i["peaks"] for i in unmerged] == [[0], [2]]
    every = retrieve(prms, peaks, crm, masks, {**base, "nms_threshold": None})
    assert len(every) == 3
    scores = [i["retrieval_score"] for i in every]
    assert scores == sorted(scores, reverse=True)


def reference_nms(instances: list[dict], threshold: float) -> list[list[int]]:
    """Greedy NMS written out: each candidate against every kept mask, in order."""
    kept: list[dict] = []
    for candidate in instances:
        for other in kept:
            inter = np.logical_and(candidate["mask"], other["mask"]).sum()
            union = np.logical_or(candidate["mask"], other["mask"]).sum()
            if union and np.float32(inter) / np.float32(union) >= np.float32(threshold):
                other["peaks"] += candidate["peaks"]
                break
        else:
            kept.append({**candidate, "peaks": list(candidate["peaks"])})
    return [k["peaks"] for k in kept]


@pytest.mark.parametrize("seed", range(6))
def test_nms_equals_the_written_out_greedy_loop(seed):
    # many peaks over few overlapping proposals: several pick the same one
    masks, prms, crm, peaks = scene(seed, proposals=6, peaks=12)
    params = {"terms": "instance-only", "nms_threshold": None}
    every = retrieve(prms, peaks, crm, masks, params)
    for threshold in (0.0, 0.2, 0.3, 0.6, 1.0):
        kept = retrieve(prms, peaks, crm, masks, {**params, "nms_threshold": threshold})
        assert [i["peaks"] for i in kept] == reference_nms(every, threshold)


def test_peaks_on_one_proposal_merge_into_one_instance():
    masks, prms, crm, _ = scene(0, proposals=2)
    peaks = np.zeros((len(prms), 4), dtype=int)
    prms[:] = masks[0] / masks[0].sum()  # every PRM lies on proposal 0
    kept = retrieve(prms, peaks, crm, masks, {"terms": "instance-only"})
    assert [i["peaks"] for i in kept] == [list(range(len(prms)))]


def test_confidence_options():
    masks, prms, crm, peaks = scene(2)
    class_scores = np.array([[0.3, -0.2, 0.9]])
    by_retrieval = retrieve(prms, peaks, crm, masks, {"nms_threshold": None})
    by_class = retrieve(prms, peaks, crm, masks, {"nms_threshold": None, "confidence": "class"},
                        class_scores=class_scores)  # fmt: skip
    by_peak = retrieve(prms, peaks, crm, masks, {"nms_threshold": None, "confidence": "peak"})
    # the order and the masks follow the retrieval score whatever the confidence
    assert [i["peaks"] for i in by_class] == [i["peaks"] for i in by_retrieval]
    for r, c, p in zip(by_retrieval, by_class, by_peak, strict=True):
        k = r["peaks"][0]
        assert r["score"] == r["retrieval_score"]
        assert c["score"] == class_scores[0, peaks[k, 1]]
        assert p["score"] == crm[0, peaks[k, 1], peaks[k, 2], peaks[k, 3]]
    with pytest.raises(ValueError, match="needs the class scores"):
        retrieve(prms, peaks, crm, masks, {"confidence": "class"})


def test_bad_parameters_are_refused():
    with pytest.raises(ValidationError, match="unknown retrieval terms 'no-instanse'"):
        RetrievalConfig(terms="no-instanse")
    with pytest.raises(ValidationError, match="resize_mode"):
        RetrievalConfig(resize_mode="bilinear")
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        RetrievalConfig(alhpa=1.0)
    with pytest.raises(UnknownNameError):
        TERMS.get("everything")


def test_shared_sums_give_each_setting_the_scores_it_computes_alone():
    masks, prms, crm, peaks = scene(6, proposals=9)
    gallery = prepare_gallery(masks, (H, W))
    shared = SharedSums(prms, crm)
    for terms in ("full", "no-class", "class-only", "boundary-only"):
        for alpha, beta, bg in ((0.8, 1e-5, 0.95), (2.0, 0.3, 0.5)):
            params = {"terms": terms, "alpha": alpha, "beta": beta, "bg_factor": bg}
            alone = retrieval_scores(prms, peaks, crm, gallery, params)
            np.testing.assert_array_equal(
                retrieval_scores(prms, peaks, crm, gallery, params, shared), alone
            )
            for nms in (0.3, 0.05, None):  # NMS shares the chosen proposals' IoUs
                setting = {**params, "nms_threshold": nms}
                together = retrieve(prms, peaks, crm, gallery, setting, shared=shared)
                assert [(i["proposal"], i["peaks"], i["mask"].tobytes()) for i in together] == [
                    (i["proposal"], i["peaks"], i["mask"].tobytes())
                    for i in retrieve(prms, peaks, crm, gallery, setting)
                ]
    nothing = SharedSums(np.zeros((0, H, W)), crm)  # an image without peaks
    assert retrieve(np.zeros((0, H, W)), np.zeros((0, 4), int), crm, gallery, shared=nothing) == []

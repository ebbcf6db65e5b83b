"""Instance mask retrieval: pick a proposal for each peak response map (DESIGN 2.5).

    score(S) = alpha * sum(R * S)  +  sum(R * contour(S))  -  beta * sum(Q_c * S)
               instance-aware         boundary-aware          class-aware

A gallery is prepared once per image (masks at PRM resolution as runs of consecutive
pixels, contours, areas, validity) and reused by every peak and every grid cell; every
PRM x proposal sum is a difference of the PRM's prefix sums at run ends, so scoring costs
O(K * (H * W + runs)), never a loop over proposals. Each PRM takes its best proposal (the first on a
tie); class-agnostic mask NMS then runs in descending retrieval-score order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from prm_bench.geometry.masks import mask_iou
from prm_bench.geometry.pixel_runs import prefix_sums
from prm_bench.instances.background import background_masks
from prm_bench.instances.gallery import PreparedGallery, gallery_key, prepare_gallery
from prm_bench.instances.retrieval_options import TERMS, RetrievalConfig, retrieval_config
from prm_bench.model.peaks import upsample_maps


def _as_numpy(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


class Memo(dict):
    """Values made on first use of their key, then kept."""

    def get_or_make(self, key: tuple, make: Callable[[], Any]) -> Any:
        """The value of `key`, made by `make()` the first time."""
        if key not in self:
            self[key] = make()
        return self[key]


class SharedSums:
    """The sums one image's retrievals share, computed on first use and kept: the PRMs'
    sums over every proposal and contour, per prepared gallery, the background masks'
    overlaps, per (gallery, bg_factor, resize_mode, classes), the class maps upsampled
    to the peaks' grid, and the chosen proposals' dense masks and IoUs. Every grid cell
    that scores the same PRMs (term subsets, alpha, beta, confidences, NMS) reuses them;
    a cell's scores are the same numbers whether it shares them or not."""

    def __init__(
        self,
        peak_response_maps: np.ndarray | torch.Tensor,
        class_response_maps: np.ndarray | torch.Tensor,
    ) -> None:
        prms = _as_numpy(peak_response_maps)
        pixels = int(np.prod(prms.shape[1:]))  # (0, H, W) when the image has no peak
        self.prms = prms.astype(np.float64, copy=False).reshape(len(prms), pixels)
        self.class_response_maps = class_response_maps
        self._memo = Memo()

    def prm_sums(self, gallery: PreparedGallery, which: str) -> np.ndarray:
        """(K, P) sums of each PRM over each proposal's `masks` or `contours`."""
        prefix = self._memo.get_or_make(("prefix",), lambda: prefix_sums(self.prms))
        return self._memo.get_or_make(
            (which, gallery.key), lambda: getattr(gallery, which).sums(prefix)
        )

    def upsampled_maps(self, factor: int) -> np.ndarray:
        """The class response maps upsampled by `factor` (the grid peaks were found on)."""

        def make() -> np.ndarray:
            maps = torch.as_tensor(_as_numpy(self.class_response_maps))
            return upsample_maps(maps, factor).numpy()

        return self._memo.get_or_make(("upsampled", factor), make)

    def mask(self, gallery: PreparedGallery, index: int) -> np.ndarray:
        """Proposal `index` of `gallery` as an (H, W) bool mask, made once and read-only:
        every retrieval that picks it shares it."""

        def make() -> np.ndarray:
            dense = gallery.dense(index)
            dense.flags.writeable = False
            return dense

        return self._memo.get_or_make(("mask", gallery.key, index), make)

    def mask_ious(self, gallery: PreparedGallery, chosen: np.ndarray) -> np.ndarray:
        """IoU matrix of the proposals `chosen` (sorted indices) of `gallery`: the NMS of
        every retrieval that picks the same proposals shares it."""

        def make() -> np.ndarray:
            masks = np.stack([self.mask(gallery, int(p)) for p in chosen])
            return mask_iou(masks, masks)

        return self._memo.get_or_make(("ious", gallery.key, *chosen.tolist()), make)

    def background_overlap(
        self, gallery: PreparedGallery, present: np.ndarray, params: RetrievalConfig
    ) -> np.ndarray:
        """(len(present), P) pixels of each proposal in the background mask Q_c of each
        class of `present`."""

        def make() -> np.ndarray:
            crm = _as_numpy(self.class_response_maps)[0][present]
            q = background_masks(crm, gallery.size, params.bg_factor, params.resize_mode)
            return gallery.masks.sums(prefix_sums(q.reshape(len(present), -1)))

        key = ("background", gallery.key, params.bg_factor, params.resize_mode, *present)
        return self._memo.get_or_make(key, make)


def retrieval_scores(
    peak_response_maps: np.ndarray | torch.Tensor,
    peaks: np.ndarray | torch.Tensor,
    class_response_maps: np.ndarray | torch.Tensor,
    gallery: PreparedGallery,
    params: RetrievalConfig | dict | None = None,
    shared: SharedSums | None = None,
) -> np.ndarray:
    """Retrieval score of every PRM x proposal pair, (K, P); invalid proposals get -inf.
    `shared` holds sums already computed for these PRMs (by other settings).

    Takes six parameters: the formula's inputs (PRMs, peaks, class maps), the gallery,
    the options, and the sums shared with other settings.
    """
    params = retrieval_config(params)
    terms = TERMS.get(params.terms)
    shared = shared or SharedSums(peak_response_maps, class_response_maps)
    classes = _as_numpy(peaks)[:, 1].astype(int)
    scores = np.zeros((len(shared.prms), len(gallery.masks)))
    if len(gallery.masks) == 0:
        return scores
    if terms.instance:
        scores += params.alpha * shared.prm_sums(gallery, "masks")
    if terms.boundary:
        scores += shared.prm_sums(gallery, "contours")
    if terms.klass:
        present = np.unique(classes)
        overlap = shared.background_overlap(gallery, present, params)
        for row, c in enumerate(present):
            scores[classes == c] -= params.beta * overlap[row]
    scores[:, ~gallery.valid] = -np.inf
    return scores


def retrieve(
    peak_response_maps: np.ndarray | torch.Tensor,
    peaks: np.ndarray | torch.Tensor,
    class_response_maps: np.ndarray | torch.Tensor,
    proposals: np.ndarray | PreparedGallery,
    params: RetrievalConfig | dict | None = None,
    *,
    class_scores: np.ndarray | torch.Tensor | None = None,
    upsample: int = 1,
    shared: SharedSums | None = None,
) -> list[dict[str, Any]]:
    """Instances of one image from its PRMs and a proposal gallery.

    Args:
        peak_response_maps: (K, H, W), one per peak.
        peaks: (K, 4) rows (batch, class, y, x) as from `find_peaks`.
        class_response_maps: (1, C, h, w).
        proposals: (P, H', W') bool, or a gallery from `prepare_gallery`.
        params: `RetrievalConfig` or a dict of its fields.
        class_scores: (1, C) class scores, needed for `confidence="class"`.
        upsample: factor of the grid the peaks were found on (for `confidence="peak"`).
        shared: sums of these PRMs kept from other retrievals of the image (`SharedSums`).

    Returns:
        Instances in descending retrieval-score order, each a dict with `mask` (H, W)
        bool (read-only: retrievals that share `shared` share it), `class`, `score` (the
        confidence), `retrieval_score`, `proposal` (index into the proposals) and `peaks`
        (indices of the PRMs merged into it).

    Takes eight parameters: the formula's inputs and options, then three keyword-only.
    """
    params = retrieval_config(params)
    gallery = _gallery_of(proposals, tuple(int(s) for s in peak_response_maps.shape[-2:]), params)
    peaks_np = _as_numpy(peaks).astype(int)
    if len(peaks_np) == 0 or len(gallery.masks) == 0:
        return []
    shared = shared or SharedSums(peak_response_maps, class_response_maps)
    scores = retrieval_scores(peak_response_maps, peaks_np, class_response_maps, gallery,
                              params, shared)  # fmt: skip
    best = scores.argmax(axis=1)
    best_score = np.take_along_axis(scores, best[:, None], axis=1)[:, 0]
    order = [k for k in np.argsort(-best_score, kind="stable") if np.isfinite(best_score[k])]
    confidence = _confidence(params, peaks_np, best_score, shared, class_scores, upsample)
    chosen = np.unique(best[order])
    masks = [shared.mask(gallery, int(p)) for p in chosen]
    # NMS compares only chosen proposals: their IoUs, once
    nms = params.nms_threshold is not None and len(chosen)
    overlap = shared.mask_ious(gallery, chosen) if nms else None
    rows = np.searchsorted(chosen, best)
    return [
        {
            "mask": masks[rows[k]],
            "class": int(peaks_np[k, 1]),
            "score": float(confidence[k]),
            "retrieval_score": float(best_score[k]),
            "proposal": int(best[k]),
            "peaks": merged,
        }
        for k, merged in _suppress(order, rows, overlap, params)
    ]


def _gallery_of(
    proposals: np.ndarray | PreparedGallery, size: tuple[int, int], params: RetrievalConfig
) -> PreparedGallery:
    if not isinstance(proposals, PreparedGallery):
        return prepare_gallery(proposals, size, params)
    if proposals.key != gallery_key(params, size):
        raise ValueError("the prepared gallery was made for other parameters or PRM size")
    return proposals


def _suppress(
    order: list[int], rows: np.ndarray, overlap: np.ndarray | None, params: RetrievalConfig
) -> list[tuple[int, list[int]]]:
    """Class-agnostic mask NMS in `order` (descending retrieval score): each kept PRM with
    the PRMs merged into it. `rows[k]` is PRM k's chosen proposal's row of `overlap`, the
    IoUs of the chosen proposals (None: no NMS)."""
    kept: list[tuple[int, list[int]]] = []
    kept_rows: list[int] = []
    for k in order:
        if overlap is not None and kept:
            hit = np.flatnonzero(overlap[rows[k], kept_rows] >= params.nms_threshold)
            if len(hit):
                if params.merge:
                    kept[hit[0]][1].append(int(k))
                continue
        kept_rows.append(int(rows[k]))
        kept.append((int(k), [int(k)]))
    return kept


def _confidence(
    params: RetrievalConfig,
    peaks: np.ndarray,
    retrieval: np.ndarray,
    shared: SharedSums,
    class_scores: np.ndarray | torch.Tensor | None,
    upsample: int,
) -> np.ndarray:
    """The confidence of each PRM for AP ranking, as `params.confidence` says.

    Takes six parameters: the options, the peaks and their retrieval scores, and what
    the other two confidences read (the shared upsampled maps, the class scores, the
    sub-pixel factor).
    """
    if params.confidence == "retrieval":
        return retrieval
    if params.confidence == "class":
        if class_scores is None:
            raise ValueError('confidence="class" needs the class scores of the image')
        return _as_numpy(class_scores)[0, peaks[:, 1]].astype(np.float64)
    maps = shared.upsampled_maps(upsample)
    return maps[0, peaks[:, 1], peaks[:, 2], peaks[:, 3]].astype(np.float64)

"""Inference stage: class response maps, peaks and peak response maps per evaluation image.

Per image it writes one compressed npz: `crm` (1, C, h, w) float32, `scores` (1, C),
`peaks` (K, 4), and the PRMs at the image's own size as float16 maps scaled to a maximum
of 1 plus a float32 scale each (`prm_values` * `prm_scale` restores them). Images already
written are skipped, so an interrupted stage resumes where it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prm_bench.backbones import build_classifier, load_checkpoint
from prm_bench.backprop import peak_response_maps
from prm_bench.config import ExperimentConfig
from prm_bench.peaks import class_scores, find_peaks, select_peaks, upsample_maps
from prm_bench.stages.common import image_tensor, open_split
from prm_bench.stages.store import Store, load_npz, save_npz
from prm_bench.stages.train import CHECKPOINT


def pack_prms(prms: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """PRMs (K, H, W) -> (float16 maps scaled to max 1, float32 scales)."""
    if len(prms) == 0:
        return np.zeros(prms.shape, np.float16), np.zeros(0, np.float32)
    scale = prms.flatten(1).amax(dim=1).clamp(min=torch.finfo(torch.float32).tiny)
    values = (prms / scale[:, None, None]).to(torch.float16)
    return values.cpu().numpy(), scale.float().cpu().numpy()


def unpack_prms(values: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Inverse of `pack_prms`, as float64 maps renormalised to sum 1."""
    prms = values.astype(np.float64) * scale[:, None, None]
    total = prms.sum(axis=(1, 2))
    return prms / np.where(total > 0, total, 1.0)[:, None, None]


def read_image(folder: Path, image_id: str) -> dict[str, np.ndarray]:
    """The stored inference of one image, with PRMs unpacked."""
    stored = load_npz(folder / f"{image_id}.npz")
    stored["prms"] = unpack_prms(stored.pop("prm_values"), stored.pop("prm_scale"))
    return stored


def infer_image(
    model: torch.nn.Module, image: np.ndarray, config: ExperimentConfig, device: torch.device
) -> dict[str, np.ndarray]:
    """CRMs, class scores, peaks and PRMs (at the image's size) of one RGB image."""
    options = config.infer
    x = image_tensor(image, config.data.image_size, model.spec).to(device)
    with torch.no_grad():
        crm = model(x)
        scores = class_scores(crm, config.stimulation.name, **config.stimulation.options)
    peaks = find_peaks(crm, options.win_size, options.peak_filter, options.upsample)
    peaks = select_peaks(
        peaks, crm, scores, options.class_threshold, options.peak_threshold, options.upsample
    )
    if len(peaks) > options.max_peaks:
        values = upsample_maps(crm, options.upsample)[tuple(peaks.T)]
        keep = values.argsort(descending=True, stable=True)[: options.max_peaks]
        peaks = peaks[keep.sort().values]
    prms = peak_response_maps(model, x, peaks, upsample=options.upsample, strategy=options.strategy)
    height, width = image.shape[:2]
    if prms.shape[-2:] != (height, width) and len(prms):
        prms = F.interpolate(
            prms[:, None], size=(height, width), mode="bilinear", align_corners=False
        )[:, 0]
        prms = prms.clamp(min=0)
        prms = prms / prms.sum(dim=(1, 2), keepdim=True).clamp(min=torch.finfo(prms.dtype).tiny)
    if not len(prms):
        prms = torch.zeros((0, height, width))
    values, scale = pack_prms(prms)
    return {
        "crm": crm.float().cpu().numpy(),
        "scores": scores.float().cpu().numpy(),
        "peaks": peaks.cpu().numpy().astype(np.int32),
        "prm_values": values,
        "prm_scale": scale,
    }


def run(
    config: ExperimentConfig, store: Store, key: str, train_key: str, device: torch.device
) -> Path:
    """Infer every evaluation image of a cell with its trained model."""
    folder = store.reset("infer", key)
    dataset = open_split(config, "eval")
    classes = store.record("train", train_key)["classes"]
    model = build_classifier(
        config.backbone.name, len(classes), output_stride=config.backbone.output_stride
    )
    load_checkpoint(model, store.path("train", train_key) / CHECKPOINT)
    model = model.to(device).eval()
    start = time.perf_counter()
    for image_id in dataset.ids:
        path = folder / f"{image_id}.npz"
        if path.is_file():
            continue
        save_npz(path, **infer_image(model, dataset.image(image_id), config, device))
    info = {"images": dataset.ids, "seconds": time.perf_counter() - start}
    store.complete("infer", key, info, [f"{image_id}.npz" for image_id in dataset.ids])
    return folder

"""Inference stage: class response maps, peaks and peak response maps per evaluation image.

Per image it writes one compressed npz: `crm` (1, C, h, w) float32, `scores` (1, C),
`peaks` (K, 4), `image_size` (H, W), and the PRMs at the network's input size as float16
maps scaled to a maximum of 1 plus a float32 scale each (`prm_values` * `prm_scale`
restores them); `read_image` resizes them to the image when asked. Images already
written are skipped, so an interrupted stage resumes where it stopped.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import numpy as np
import torch

from prm_bench.config import ExperimentConfig, InferConfig, StimulationConfig
from prm_bench.model.backbones import build_classifier, load_checkpoint
from prm_bench.model.backprop import peak_response_maps, resize_prms
from prm_bench.model.peaks import class_scores, find_peaks, select_peaks, strongest_peaks
from prm_bench.progress import meter, report
from prm_bench.stages.inputs import image_tensor
from prm_bench.stages.splits import open_split
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


def read_image(folder: Path, image_id: str, at_image_size: bool = False) -> dict[str, np.ndarray]:
    """The stored inference of one image, with PRMs unpacked: at the network's input size,
    or resized to the image's own size (`at_image_size`)."""
    stored = load_npz(folder / f"{image_id}.npz")
    stored["prms"] = unpack_prms(stored.pop("prm_values"), stored.pop("prm_scale"))
    if at_image_size:
        size = tuple(int(v) for v in stored["image_size"])
        stored["prms"] = resize_prms(stored["prms"], size).numpy()
    return stored


def infer_image(
    model: torch.nn.Module,
    image: np.ndarray,
    options: InferConfig,
    stimulation: StimulationConfig,
    image_size: int | None,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """CRMs, class scores, peaks and PRMs (at the network's input size) of one RGB image.

    Args:
        model: the trained classifier, in eval mode, on `device`.
        image: (H, W, 3) uint8.
        options: peak finding and backpropagation options.
        stimulation: the aggregation the model was trained with (its class scores).
        image_size: the square input size of the network (None: the image's own).
        device: where to compute.

    Takes six parameters: the model and image, the inference and stimulation options,
    the input size and the device.
    """
    x = image_tensor(image, image_size).to(device)  # uint8: the model normalises
    with torch.no_grad():
        crm = model(x)
        scores = class_scores(crm, stimulation.name, **stimulation.options)
    peaks = find_peaks(crm, options.win_size, options.peak_filter, options.upsample)
    peaks = select_peaks(
        peaks,
        crm,
        scores,
        options.class_threshold,
        options.peak_threshold,
        options.upsample,
        relative=options.peak_threshold_mode == "relative",
    )
    peaks = strongest_peaks(peaks, crm, options.max_peaks, options.upsample)
    prms = peak_response_maps(
        model,
        x,
        peaks,
        upsample=options.upsample,
        strategy=options.strategy,
        chunk_size=options.chunk_size,
        max_memory_mb=options.max_memory_mb,
    )
    values, scale = pack_prms(prms)
    return {
        "crm": crm.float().cpu().numpy(),
        "scores": scores.float().cpu().numpy(),
        "peaks": peaks.cpu().numpy().astype(np.int32),
        "prm_values": values,
        "prm_scale": scale,
        "image_size": np.array(image.shape[:2], dtype=np.int64),
    }


STORED = {"crm", "scores", "peaks", "prm_values", "prm_scale", "image_size"}


def _intact(path: Path) -> bool:
    """Whether a per-image file exists and reads back whole (every array decompresses
    with a valid CRC); a truncated or overwritten file is inferred again."""
    if not path.is_file():
        return False
    try:
        return set(load_npz(path)) == STORED
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def run(config: ExperimentConfig, store: Store, keys: dict[str, str], device: torch.device) -> Path:
    """Infer every evaluation image of a cell with its trained model."""
    key, train_key = keys["infer"], keys["train"]
    folder = store.reset("infer", key)
    dataset = open_split(config.data, "evaluated")
    classes = store.record("train", train_key)["classes"]
    model = build_classifier(
        config.backbone.name, len(classes), output_stride=config.backbone.output_stride
    )
    load_checkpoint(model, store.path("train", train_key) / CHECKPOINT)
    model = model.to(device).eval()
    start = time.perf_counter()
    with meter(f"infer {key}", len(dataset.ids)) as position:
        for done, image_id in enumerate(dataset.ids, 1):
            path = folder / f"{image_id}.npz"
            if _intact(path):
                continue  # written whole by an interrupted run of this stage
            if path.exists():
                report(f"infer {key}: {path.name} is damaged: inferring it again")
            store.check()
            inferred = infer_image(
                model,
                dataset.image(image_id),
                config.infer,
                config.stimulation,
                config.data.image_size,
                device,
            )
            save_npz(path, **inferred)
            position.tick(done, "images")
    info = {"images": dataset.ids, "seconds": time.perf_counter() - start, "device": device.type}
    store.complete("infer", key, info, [f"{image_id}.npz" for image_id in dataset.ids])
    return folder

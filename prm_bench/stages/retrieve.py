"""Retrieval stage: instances per evaluation image, written as a COCO results file.

For a method that uses retrieval (`prm`) each image's PRMs pick proposals
(`prm_bench.retrieval`); for a CAM baseline the stored class response maps give boxes
(`prm_bench.baselines`). Embedded
proposals are cached in the store under the proposals key, shared by every cell that uses
the same data and gallery.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from pycocotools import mask as mask_utils

from prm_bench.baselines import cam_baseline
from prm_bench.config import ExperimentConfig
from prm_bench.masks import encode_rle
from prm_bench.methods import METHODS
from prm_bench.proposals import gallery_traits, open_gallery
from prm_bench.retrieval import (
    PreparedGallery,
    RetrievalConfig,
    gallery_key,
    prepare_gallery,
    resize_nearest,
    retrieve,
)
from prm_bench.stages.common import open_split
from prm_bench.stages.infer import read_image
from prm_bench.stages.store import Store, load_npz, save_npz, write_json

RESULTS = "results.json"
PREPARED = "prepared"  # per image, the gallery prepared for scoring (shared by cells)


def prepared_gallery(
    path: Path,
    proposals: Callable[[], np.ndarray],
    size: tuple[int, int],
    params: RetrievalConfig,
) -> PreparedGallery:
    """An image's gallery prepared for PRMs of `size`: read from `path` when it was
    prepared with the same parameters, else prepared from `proposals()` and saved there.

    Preparing (resizing, contours, runs) costs several times the scoring itself, and every
    cell that shares the data and gallery shares it; an unreadable file is prepared again.
    """
    expected = gallery_key(params, size)
    if path.is_file():
        try:
            cached = PreparedGallery.from_arrays(load_npz(path))
            if cached.key == expected:
                return cached
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
    gallery = prepare_gallery(proposals(), size, params)
    save_npz(path, **gallery.to_arrays())
    return gallery


def run(config: ExperimentConfig, store: Store, keys: dict[str, str], device: torch.device) -> Path:
    """Retrieve the instances of every evaluation image of a cell (on the CPU: `device`
    is part of the stage contract only)."""
    folder = store.reset("retrieve", keys["retrieve"])
    traits = gallery_traits(config.proposals.gallery)
    method = METHODS.get(config.method.name)
    dataset = open_split(config, "evaluated", segmentation=traits.needs_truth)
    root = (
        store.path("proposals", keys["proposals"]) if traits.store_cache else config.proposals.root
    )
    gallery = (
        open_gallery(config.proposals.gallery, root, dataset) if method.needs_proposals else None
    )
    inferred = store.path("infer", keys["infer"])
    start = time.perf_counter()
    results = []
    at_image_size = config.retrieval.resolution == "image"
    prepared = store.path("proposals", keys["proposals"]) / PREPARED
    for image_id in dataset.ids:
        stored = read_image(inferred, image_id, at_image_size=at_image_size)
        size = tuple(int(v) for v in stored["image_size"])
        if method.uses_retrieval:
            proposals = prepared_gallery(
                prepared / f"{image_id}.npz",
                lambda i=image_id: gallery(i),
                stored["prms"].shape[1:],
                config.retrieval,
            )
            instances = retrieve(
                stored["prms"],
                stored["peaks"],
                stored["crm"],
                proposals,
                config.retrieval,
                class_scores=stored["scores"],
                upsample=config.infer.upsample,
            )
        else:
            instances = cam_baseline(
                config.method.name,
                stored["crm"],
                stored["scores"],
                size,
                gallery(image_id) if gallery is not None else None,
                config.method.baseline,
            )
        instances = [{**i, "mask": resize_nearest(i["mask"][None], size)[0]} for i in instances]
        for instance in instances:
            results.append(
                {
                    "image_id": image_id,
                    "category_id": instance["class"],
                    "score": float(instance["score"]),
                    "segmentation": encode_rle(instance["mask"]),
                    "peaks": instance["peaks"],
                    "proposal": instance["proposal"],
                }
            )
    write_json(folder / RESULTS, results)
    info = {"instances": len(results), "seconds": time.perf_counter() - start}
    store.complete("retrieve", keys["retrieve"], info, [RESULTS])
    return folder


def read_results(folder: Path, image_ids: list[str]) -> list[list[dict]]:
    """Per image (in `image_ids` order) the stored instances with decoded masks."""
    by_image: dict[str, list[dict]] = {i: [] for i in image_ids}
    for entry in json.loads((folder / RESULTS).read_text()):
        if entry["image_id"] not in by_image:
            continue
        rle = {**entry["segmentation"], "counts": entry["segmentation"]["counts"].encode()}
        by_image[entry["image_id"]].append(
            {
                "mask": mask_utils.decode(rle).astype(bool),
                "class": entry["category_id"],
                "score": entry["score"],
            }
        )
    return [by_image[i] for i in image_ids]

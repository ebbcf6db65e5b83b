"""Retrieval stage: instances per evaluation image, written as a COCO results file.

For a method that uses retrieval (`prm`) each image's PRMs pick proposals
(`prm_bench.instances.retrieval`); for a CAM baseline the stored class response maps give boxes
(`prm_bench.instances.baselines`).

The cells of a grid that share an inference and a gallery (term subsets, alpha, beta,
confidences, NMS, baselines) are retrieved together (`run_cells`): each image's stored
inference is read once, its prepared gallery is read (or prepared) once per preparation,
the PRMs' sums over the proposals are computed once (`SharedSums`), and each cell's
results file is written as if it had run alone. Prepared galleries are kept in the store
with the proposals, one file per image and preparation, shared by every run and cell.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pycocotools import mask as mask_utils

from prm_bench.config import ExperimentConfig, config_hash
from prm_bench.data.base import Dataset
from prm_bench.data.fingerprint import FileIndex
from prm_bench.geometry.masks import encode_rle
from prm_bench.geometry.pixel_runs import one_torch_thread
from prm_bench.hashing import json_digest
from prm_bench.instances.baselines import cam_baseline
from prm_bench.instances.gallery import (
    PreparedGallery,
    gallery_key,
    prepare_gallery,
    resize_nearest,
)
from prm_bench.instances.methods import METHODS
from prm_bench.instances.proposals import GALLERIES, open_gallery
from prm_bench.instances.retrieval import Memo, SharedSums, retrieve
from prm_bench.instances.retrieval_options import RetrievalConfig
from prm_bench.progress import meter, report
from prm_bench.stages.errors import StageError, describe_failure
from prm_bench.stages.infer import read_image
from prm_bench.stages.splits import computed_proposals, open_split
from prm_bench.stages.store import Store, load_npz, save_npz, write_json

RESULTS = "results.json"
PREPARED = "prepared"  # per image and preparation, the gallery ready for scoring


def prepared_path(folder: Path, image_id: str, params: RetrievalConfig, size: tuple) -> Path:
    """Where an image's gallery prepared with `params` for PRMs of `size` is kept:
    `<proposals>/prepared/<preparation hash>/<image id>.npz`."""
    preparation = config_hash("prepared", json.dumps(gallery_key(params, size)))
    return folder / PREPARED / preparation / f"{image_id}.npz"


@dataclass(frozen=True)
class Preparation:
    """What an image's prepared gallery is made from: the parameters, the PRM size and
    the digest of the files its proposals come from (`GallerySpec.sources`)."""

    params: RetrievalConfig
    size: tuple[int, int]
    source: str


def prepared_gallery(
    path: Path, proposals: Callable[[], np.ndarray], made: Preparation
) -> PreparedGallery:
    """An image's gallery prepared for PRMs of `made.size`: read from `path` when it was
    prepared with the same parameters from the same source files, else prepared from
    `proposals()` and saved there.

    Preparing (resizing, contours, runs) costs several times the scoring itself, and every
    cell that shares the data and gallery shares it; a damaged file, or one prepared from
    other files (another image's, an older dataset's), is prepared again and named.
    """
    expected = gallery_key(made.params, made.size)
    if path.is_file():
        try:
            arrays = load_npz(path)
            cached = PreparedGallery.from_arrays(arrays)
            if cached.key == expected and str(arrays.get("source")) == made.source:
                return cached
            why = "was prepared from other files"
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            why = "is damaged"
        report(f"prepared gallery {path} {why}: preparing it again")
    gallery = prepare_gallery(proposals(), made.size, made.params)
    save_npz(path, **gallery.to_arrays(), source=np.array(made.source))
    return gallery


def shared_by(keys: dict[str, str]) -> tuple[str, str]:
    """What cells retrieved together share: their inference and their proposals."""
    return keys["infer"], keys["proposals"]


@dataclass
class _Cell:
    """One cell of a retrieval group and what it has produced so far."""

    config: ExperimentConfig
    key: str
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


class _Image:
    """One evaluation image as the cells of a group see it: each input read or computed
    once, on first use, and shared."""

    def __init__(
        self, image_id: str, inferred: Path, gallery: Any, proposals: tuple[Path, Callable]
    ) -> None:
        self.image_id, self.inferred, self.gallery = image_id, inferred, gallery
        # the proposals' store folder, and the digest of an image's source files
        self.proposals, self.source = proposals
        self._memo = Memo()

    def stored(self, at_image_size: bool) -> dict[str, np.ndarray]:
        """The image's inference, PRMs at the image's or the network's input size."""
        return self._memo.get_or_make(
            ("stored", at_image_size),
            lambda: read_image(self.inferred, self.image_id, at_image_size=at_image_size),
        )

    def raw_proposals(self) -> np.ndarray:
        """The gallery's proposals of the image, as stored."""
        return self._memo.get_or_make(("raw",), lambda: self.gallery(self.image_id))

    def prepared(self, size: tuple[int, int], params: RetrievalConfig) -> PreparedGallery:
        """The gallery prepared for PRMs of `size` with `params`."""

        def make() -> PreparedGallery:
            path = prepared_path(self.proposals, self.image_id, params, size)
            source = self._memo.get_or_make(("source",), lambda: self.source(self.image_id))
            made = Preparation(params, size, source)
            return prepared_gallery(path, self.raw_proposals, made)

        return self._memo.get_or_make(("prepared", gallery_key(params, size)), make)

    def shared_sums(self, at_image_size: bool) -> SharedSums:
        """The PRM sums the retrieval settings of the group share."""
        stored = self.stored(at_image_size)
        return self._memo.get_or_make(
            ("sums", at_image_size), lambda: SharedSums(stored["prms"], stored["crm"])
        )

    def encoded(self, key: tuple, mask: Callable[[], np.ndarray]) -> dict[str, Any]:
        """A chosen proposal at the image's size, COCO-RLE encoded once per image."""
        return self._memo.get_or_make(("rle", *key), lambda: encode_rle(mask()))


def _instances(cell: _Cell, image: _Image) -> list[dict[str, Any]]:
    """The results-file entries of one cell for one image."""
    config = cell.config
    at_image_size = config.retrieval.resolution == "image"
    stored = image.stored(at_image_size)
    size = tuple(int(v) for v in stored["image_size"])
    if METHODS.get(config.method.name).uses_retrieval:
        gallery = image.prepared(stored["prms"].shape[1:], config.retrieval)
        found = retrieve(
            stored["prms"],
            stored["peaks"],
            stored["crm"],
            gallery,
            config.retrieval,
            class_scores=stored["scores"],
            upsample=config.infer.upsample,
            shared=image.shared_sums(at_image_size),
        )
        masks = [
            image.encoded(
                (gallery.key, i["proposal"]),
                lambda m=i["mask"]: resize_nearest(m[None], size)[0],
            )
            for i in found
        ]
    else:
        proposals = image.raw_proposals() if image.gallery is not None else None
        found = cam_baseline(
            config.method.name,
            stored["crm"],
            stored["scores"],
            size,
            proposals,
            config.method.baseline,
        )
        masks = [encode_rle(resize_nearest(i["mask"][None], size)[0]) for i in found]
    return [
        {
            "image_id": image.image_id,
            "category_id": i["class"],
            "score": float(i["score"]),
            "segmentation": mask,
            "peaks": i["peaks"],
            "proposal": i["proposal"],
        }
        for i, mask in zip(found, masks, strict=True)
    ]


def run_cells(
    configs: list[ExperimentConfig], store: Store, keys: list[dict[str, str]], device: torch.device
) -> list[str | None]:
    """Retrieve the instances of several cells that share an inference and a gallery
    (`shared_by`) in one pass over the images; per cell, None or why it failed (a
    failing cell does not stop the others, and its stage is not recorded)."""
    if len({shared_by(k) for k in keys}) != 1:
        raise ValueError("cells retrieved together must share their inference and proposals")
    first, ids = configs[0], keys[0]
    traits = GALLERIES.get(first.proposals.gallery)
    dataset = open_split(first.data, "evaluated", segmentation=traits.needs_truth)
    root = computed_proposals(first.data, store) if traits.store_cache else first.proposals.root
    gallery = _gallery(configs, root, dataset)
    inferred = store.path("infer", ids["infer"])
    proposals = store.path("proposals", ids["proposals"])
    cells = [_Cell(c, k["retrieve"]) for c, k in zip(configs, keys, strict=True)]
    folders = {cell.key: store.reset("retrieve", cell.key) for cell in cells}
    index = FileIndex(None)  # a digest per source file (a COCO json is hashed once)

    def source(image_id: str) -> str:
        files = traits.sources(root, dataset, image_id)
        return json_digest([image_id, *(index.digest(p) for p in files)])

    label = f"retrieve {cells[0].key}" + (f"+{len(cells) - 1}" if len(cells) > 1 else "")
    with one_torch_thread(), meter(label, len(dataset.ids)) as position:
        for done, image_id in enumerate(dataset.ids, 1):
            image = _Image(image_id, inferred, gallery, (proposals, source))
            for cell in (c for c in cells if c.error is None):
                start = time.perf_counter()
                try:
                    cell.results += _instances(cell, image)
                except Exception as err:  # one cell's failure must not stop the others
                    cell.error = describe_failure(err)
                cell.seconds += time.perf_counter() - start
            position.tick(done, f"images, {len(cells)} cells")
    for cell in cells:
        if cell.error is None:
            write_json(folders[cell.key] / RESULTS, cell.results)
            info = {"instances": len(cell.results), "seconds": cell.seconds, "group": len(cells)}
            store.complete("retrieve", cell.key, info, [RESULTS])
    return [cell.error for cell in cells]


def _gallery(configs: list[ExperimentConfig], root: Path | None, dataset: Dataset) -> Any:
    """The cells' gallery, or None when none of their methods reads proposals. When only
    retrievals read it, file galleries read no more than the largest `top_n` (an MCG file
    holds 5,000 proposals; retrieval scores the first 100)."""
    readers = [c for c in configs if METHODS.get(c.method.name).needs_proposals]
    if not readers:
        return None
    retrieving = all(METHODS.get(c.method.name).uses_retrieval for c in readers)
    top_n = max(c.retrieval.top_n for c in readers) if retrieving else None
    return open_gallery(configs[0].proposals.gallery, root, dataset, top_n)


def run(config: ExperimentConfig, store: Store, keys: dict[str, str], device: torch.device) -> Path:
    """Retrieve the instances of every evaluation image of a cell (on the CPU: `device`
    is part of the stage contract only)."""
    (error,) = run_cells([config], store, [keys], device)
    if error is not None:
        raise StageError(error)
    return store.path("retrieve", keys["retrieve"])


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

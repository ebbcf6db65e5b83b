"""Proposal galleries: where the candidate instance masks of an image come from (DESIGN 2.5).

Each registry entry is a factory `factory(root, dataset) -> Gallery`; a `Gallery` maps an
image id to a (P, H, W) bool array of proposals, best first. File galleries read one file
per image from `root` (`<root>/<image_id><suffix>`); `gt` is the image's ground-truth
instances (the paper's upper bound); `gt+<name>` puts the ground truth in front of another
gallery (recall forced to 100%).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from prm_bench.atomic import write_atomic
from prm_bench.data.base import DataError, Dataset
from prm_bench.masks import encode_rle
from prm_bench.proposals.embedded import EmbeddedParams, embedded_proposals
from prm_bench.proposals.formats import read_cob, read_mcg, read_prm_demo_json, read_rle_json
from prm_bench.registry import Registry

Gallery = Callable[[str], np.ndarray]
GalleryFactory = Callable[[Path | None, Dataset | None], Gallery]


@dataclass(frozen=True)
class GalleryTraits:
    """What a gallery needs, as data (each factory carries one as `.traits`).

    Attributes:
        needs_root: reads files from `proposals.root`.
        needs_truth: reads the dataset's instance masks (the split must be opened with
            segmentation ground truth).
        store_cache: computed, and cached in the run's store (the root is the store's
            proposals folder, not a config path).
    """

    needs_root: bool = False
    needs_truth: bool = False
    store_cache: bool = False


def gallery_traits(name: str) -> GalleryTraits:
    """The traits of a registered gallery (including `gt+<name>`)."""
    return GALLERIES.get(name).traits  # type: ignore[attr-defined]


GALLERIES: Registry[GalleryFactory] = Registry(
    "gallery",
    """Proposal galleries: `factory(root, dataset)` returns a function mapping an image id
    to proposals (P, H, W) bool, best first. Any entry X also exists as `gt+X`.""",
)


def _file_gallery(suffix: str, reader: Callable[[Path], np.ndarray]) -> GalleryFactory:
    def factory(root: Path | None, dataset: Dataset | None = None) -> Gallery:
        if root is None or not Path(root).is_dir():
            raise DataError(f"proposal folder {root} does not exist (expected <root>/<id>{suffix})")

        def proposals(image_id: str) -> np.ndarray:
            path = Path(root) / f"{image_id}{suffix}"
            if not path.is_file():
                raise DataError(f"proposal file {path} does not exist")
            return reader(path)

        return proposals

    factory.__doc__ = f"Proposals read from <root>/<image id>{suffix} ({reader.__doc__})"
    factory.traits = GalleryTraits(needs_root=True)  # type: ignore[attr-defined]
    return factory


GALLERIES.add("mcg", _file_gallery(".mat", read_mcg))
GALLERIES.add("cob", _file_gallery(".mat", read_cob))
GALLERIES.add("rle-json", _file_gallery(".json", read_rle_json))
GALLERIES.add("prm-demo-json", _file_gallery(".json", read_prm_demo_json))


def embedded_cache_dir(root: Path, params: EmbeddedParams) -> Path:
    """Where the embedded proposals of `params` are cached under `root`."""
    digest = hashlib.sha256(json.dumps(asdict(params), sort_keys=True).encode()).hexdigest()
    return Path(root) / f"embedded-{digest[:12]}"


@GALLERIES.register("embedded")
def embedded_gallery(
    root: Path | None = None,
    dataset: Dataset | None = None,
    params: EmbeddedParams | None = None,
) -> Gallery:
    """Training-free proposals computed from the image, cached under `root` as COCO RLE
    json (one file per image, written atomically); no cache when `root` is None."""
    if dataset is None:
        raise DataError("the embedded gallery needs the dataset whose images it segments")
    params = params or EmbeddedParams()
    cache = embedded_cache_dir(root, params) if root is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)

    def proposals(image_id: str) -> np.ndarray:
        path = cache / f"{image_id}.json" if cache is not None else None
        if path is not None and path.is_file():
            try:
                return read_rle_json(path)
            except DataError:
                pass  # a damaged cache entry is recomputed
        masks, scores = embedded_proposals(dataset.image(image_id), params)
        if path is not None and len(masks):
            entries = [
                {"segmentation": encode_rle(m), "score": float(s)}
                for m, s in zip(masks, scores, strict=True)
            ]
            write_atomic(path, json.dumps(entries).encode())
        return masks

    return proposals


embedded_gallery.traits = GalleryTraits(store_cache=True)  # type: ignore[attr-defined]


@GALLERIES.register("gt")
def ground_truth_gallery(root: Path | None = None, dataset: Dataset | None = None) -> Gallery:
    """The image's ground-truth instance masks, in annotation order."""
    if dataset is None:
        raise DataError("the gt gallery needs the dataset whose instances it returns")

    def proposals(image_id: str) -> np.ndarray:
        masks = [instance.mask for instance in dataset.instances(image_id)]
        if not masks:
            height, width = dataset.image(image_id).shape[:2]
            return np.zeros((0, height, width), dtype=bool)
        return np.stack(masks)

    return proposals


ground_truth_gallery.traits = GalleryTraits(needs_truth=True)  # type: ignore[attr-defined]


def _with_ground_truth(name: str) -> GalleryFactory:
    inner = GALLERIES.get(name)

    def factory(root: Path | None = None, dataset: Dataset | None = None) -> Gallery:
        truth, others = ground_truth_gallery(root, dataset), inner(root, dataset)

        def proposals(image_id: str) -> np.ndarray:
            gt, rest = truth(image_id), others(image_id)
            if rest.shape[1:] != gt.shape[1:] and len(gt):
                raise DataError(
                    f"{name} proposals of {image_id} are {rest.shape[1:]} but the image is "
                    f"{gt.shape[1:]}"
                )
            return np.concatenate([gt, rest]) if len(rest) else gt

        return proposals

    factory.traits = replace(inner.traits, needs_truth=True)  # type: ignore[attr-defined]
    return factory


GALLERIES.add_prefix("gt+", _with_ground_truth)


def open_gallery(
    name: str, root: str | Path | None = None, dataset: Dataset | None = None
) -> Gallery:
    """Resolve a gallery by name (e.g. `mcg`, `gt`, `gt+mcg`) for a root and dataset."""
    return GALLERIES.get(name)(Path(root) if root is not None else None, dataset)

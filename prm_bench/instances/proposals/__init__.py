"""Proposal galleries: where the candidate instance masks of an image come from (DESIGN 2.5).

Each registry entry is a factory `factory(root, dataset) -> Gallery`; a `Gallery` maps an
image id to a (P, H, W) bool array of proposals, best first. File galleries read one file
per image from `root` (`<root>/<image_id><suffix>`); `gt` is the image's ground-truth
instances (the paper's upper bound); `gt+<name>` puts the ground truth in front of another
gallery (recall forced to 100%).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from prm_bench.atomic import write_atomic
from prm_bench.data.base import DataError, Dataset
from prm_bench.geometry.masks import encode_rle
from prm_bench.hashing import file_digest, json_digest
from prm_bench.instances.proposals.embedded import EmbeddedParams, embedded_proposals
from prm_bench.instances.proposals.formats import (
    masks_of_entries,
    read_cob,
    read_mcg,
    read_prm_demo_json,
    read_rle_json,
)
from prm_bench.progress import report
from prm_bench.registry import Registry

Gallery = Callable[[str], np.ndarray]
GalleryFactory = Callable[[Path | None, Dataset | None], Gallery]


@dataclass(frozen=True)
class GallerySpec:
    """A proposal gallery, described as data.

    Attributes:
        name: the registry name (`proposals.gallery` in configs).
        open: `open(root, dataset) -> Gallery`.
        description: one line for `prm-bench list`.
        needs_root: reads files from `proposals.root`.
        needs_truth: reads the dataset's instance masks (the split must be opened with
            segmentation ground truth).
        store_cache: computed, and cached in the run's store (the root is the store's
            proposals folder, not a config path).
        suffix: for a file gallery, the suffix of its files `<root>/<image id><suffix>`
            (their content is part of the proposals' stage key).
        sources: `sources(root, dataset, image_id)`, the files an image's proposals are
            made from; a prepared gallery records their digest and is remade when it
            differs (a cache file copied from another image is never trusted).
    """

    name: str
    open: GalleryFactory
    description: str
    needs_root: bool = False
    needs_truth: bool = False
    store_cache: bool = False
    suffix: str | None = None
    sources: Callable[[Path | None, Dataset, str], list[str]] = lambda root, dataset, i: []

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list`."""
        needs = [n for n, on in (("root", self.needs_root), ("ground truth", self.needs_truth),
                                 ("store cache", self.store_cache)) if on]  # fmt: skip
        return ", ".join(needs) or "-", self.description


GALLERIES: Registry[GallerySpec] = Registry(
    "gallery",
    """Proposal galleries: each `GallerySpec` opens, for a root and a dataset, a function
    mapping an image id to proposals (P, H, W) bool, best first. Any entry X also exists
    as `gt+X`.""",
)


def _file_gallery(name: str, suffix: str, reader: Callable[..., np.ndarray]) -> GallerySpec:
    def factory(
        root: Path | None, dataset: Dataset | None = None, top_n: int | None = None
    ) -> Gallery:
        if root is None or not Path(root).is_dir():
            raise DataError(f"proposal folder {root} does not exist (expected <root>/<id>{suffix})")

        def proposals(image_id: str) -> np.ndarray:
            path = Path(root) / f"{image_id}{suffix}"
            if not path.is_file():
                raise DataError(f"proposal file {path} does not exist")
            return reader(path, top_n)

        return proposals

    summary = (reader.__doc__ or "").split(";")[0].split("\n\n")[0].replace("\n", " ")
    description = f"Proposals read from <root>/<image id>{suffix} ({summary.rstrip('.')})"

    def sources(root: Path | None, dataset: Dataset, image_id: str) -> list[str]:
        return [str(Path(root) / f"{image_id}{suffix}")]

    return GallerySpec(name, factory, description, needs_root=True, suffix=suffix, sources=sources)


for _name, _suffix, _reader in (
    ("mcg", ".mat", read_mcg),
    ("cob", ".mat", read_cob),
    ("rle-json", ".json", read_rle_json),
    ("prm-demo-json", ".json", read_prm_demo_json),
):
    GALLERIES.add(_name, _file_gallery(_name, _suffix, _reader))


def embedded_cache_dir(root: Path, params: EmbeddedParams) -> Path:
    """Where the embedded proposals of `params` are cached under `root`."""
    return Path(root) / f"embedded-{json_digest(asdict(params), 12, (', ', ': '))}"


def embedded_gallery(
    root: Path | None = None,
    dataset: Dataset | None = None,
    params: EmbeddedParams | None = None,
    top_n: int | None = None,
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
        source = _image_digest(dataset, image_id)
        if path is not None and path.is_file():
            cached = _read_bound(path, source)
            if cached is not None:
                return cached
        masks, scores = embedded_proposals(dataset.image(image_id), params)
        if path is not None and len(masks):
            entries = [
                {"segmentation": encode_rle(m), "score": float(s)}
                for m, s in zip(masks, scores, strict=True)
            ]
            write_atomic(path, json.dumps({"source": source, "proposals": entries}).encode())
        return masks

    return proposals


def _image_digest(dataset: Dataset, image_id: str) -> str:
    """The digest of the files of an image (what proposals computed from it depend on)."""
    return json_digest([file_digest(Path(p)) for p in dataset.files(image_id)["images"]])


def _read_bound(path: Path, source: str) -> np.ndarray | None:
    """The cached proposals at `path` when they were computed from `source`; None (and a
    line saying why) when the file is damaged or was made from other content."""
    try:
        stored = json.loads(path.read_bytes())
        if not isinstance(stored, dict) or stored.get("source") != source:
            why = "was computed from another image, or by an older version"
        else:
            return masks_of_entries(stored["proposals"], path)
    except (OSError, ValueError, KeyError, TypeError, DataError):
        why = "is damaged"
    report(f"proposals cache {path} {why}: computing it again")
    return None


GALLERIES.add(
    "embedded",
    GallerySpec(
        "embedded",
        embedded_gallery,
        "Training-free proposals computed from the image, cached in the store as COCO RLE",
        store_cache=True,
        sources=lambda root, dataset, image_id: dataset.files(image_id)["images"],
    ),
)


def ground_truth_gallery(
    root: Path | None = None, dataset: Dataset | None = None, top_n: int | None = None
) -> Gallery:
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


GALLERIES.add(
    "gt",
    GallerySpec(
        "gt",
        ground_truth_gallery,
        "The image's ground-truth instance masks, in annotation order.",
        needs_truth=True,
        sources=lambda root, dataset, image_id: dataset.files(image_id).get("masks", []),
    ),
)


def _with_ground_truth(name: str) -> GallerySpec:
    inner = GALLERIES.get(name)

    def factory(
        root: Path | None = None, dataset: Dataset | None = None, top_n: int | None = None
    ) -> Gallery:
        truth, others = ground_truth_gallery(root, dataset), inner.open(root, dataset, top_n=top_n)

        def proposals(image_id: str) -> np.ndarray:
            gt, rest = truth(image_id), others(image_id)
            if rest.shape[1:] != gt.shape[1:] and len(gt):
                raise DataError(
                    f"{name} proposals of {image_id} are {rest.shape[1:]} but the image is "
                    f"{gt.shape[1:]}"
                )
            return np.concatenate([gt, rest]) if len(rest) else gt

        return proposals

    def sources(root: Path | None, dataset: Dataset, image_id: str) -> list[str]:
        truth = GALLERIES.get("gt").sources(root, dataset, image_id)
        return [*truth, *inner.sources(root, dataset, image_id)]

    description = f"The ground truth first, then {name}'s proposals"
    return replace(inner, name=f"gt+{name}", open=factory, description=description,
                   needs_truth=True, sources=sources)  # fmt: skip


GALLERIES.add_prefix("gt+", _with_ground_truth)


def open_gallery(
    name: str,
    root: str | Path | None = None,
    dataset: Dataset | None = None,
    top_n: int | None = None,
) -> Gallery:
    """Resolve a gallery by name (e.g. `mcg`, `gt`, `gt+mcg`) for a root and dataset; with
    `top_n`, file galleries read only their best `top_n` proposals (computed and ground
    truth galleries are whole)."""
    root = Path(root) if root is not None else None
    return GALLERIES.get(name).open(root, dataset, top_n=top_n)


def cache_gallery(
    name: str, root: Path | None, dataset: Dataset, out: Path, options: dict
) -> list[Path]:
    """Convert a gallery's proposals into `<out>/<image id>.json` (COCO RLE, best first,
    with descending scores), the `rle-json` gallery, once: a grid then reads compact RLE
    instead of reopening every .mat file. `options`: `top_n` (proposals kept per image),
    `jobs` (worker processes), `ids` (the images; default every image of the dataset).
    Files already there are kept."""
    from joblib import Parallel, delayed

    out.mkdir(parents=True, exist_ok=True)
    ids = options.get("ids") or dataset.ids
    todo = [i for i in ids if not (out / f"{i}.json").is_file()]
    Parallel(n_jobs=options.get("jobs", 1))(
        delayed(_cache_one)(name, root, dataset, out, (i, options.get("top_n"))) for i in todo
    )
    return [out / f"{i}.json" for i in ids]


def _cache_one(
    name: str, root: Path | None, dataset: Dataset, out: Path, item: tuple[str, int | None]
) -> None:
    image_id, top_n = item
    masks = open_gallery(name, root, dataset, top_n=top_n)(image_id)[:top_n]
    entries = [
        {"segmentation": encode_rle(m), "score": float(len(masks) - rank)}
        for rank, m in enumerate(masks)
    ]
    write_atomic(out / f"{image_id}.json", json.dumps(entries).encode())

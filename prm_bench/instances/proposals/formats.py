"""Readers of the proposal file formats in circulation; each returns (P, H, W) bool, best first.

- MCG: a .mat (v5/v7, or v7.3 HDF5) with `superpixels` (H x W label image), `labels` (a
  cell of superpixel-id lists, one per proposal) and `scores`.
- COB: a .mat with `maskmat`: an H x W x P array or a cell of H x W masks.
- COCO RLE json: a list of RLE dicts, or of objects holding one under `segmentation`
  (with an optional `score`).
- The PRM demo json: a list of {"data": base64 of uint32 (start, length) pairs over the
  row-major flattened mask, "shape": [H, W]}.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import scipy.io
from pycocotools import mask as mask_utils

from prm_bench.data.base import DataError


def _load_mat(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        content = scipy.io.loadmat(str(path), squeeze_me=False)
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file this reader cannot take") from err
    except (ValueError, OSError) as err:
        raise DataError(f"{path} is not a readable .mat file: {err}") from err
    missing = [k for k in keys if k not in content]
    if missing:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataError(f"{path} has no {', '.join(missing)} (found: {', '.join(found)})")
    return content


def _by_score(masks: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    if scores is None or len(scores) != len(masks):
        return masks
    return masks[np.argsort(-scores, kind="stable")]


def read_mcg(path: Path, top_n: int | None = None) -> np.ndarray:
    """MCG proposals: the union of each proposal's superpixels, sorted by score; with
    `top_n`, only the best `top_n` are built (a VOC-size file holds 5,000 proposals and
    retrieval scores 100). MATLAB v5/v7 files are read with scipy, v7.3 (HDF5) with h5py."""
    superpixels, groups = _mcg_contents(Path(path), top_n)
    if not groups:
        return np.zeros((0, *superpixels.shape), dtype=bool)
    count = int(max(superpixels.max(), max(int(g.max(initial=0)) for g in groups))) + 1
    member = np.zeros((len(groups), count), dtype=bool)
    for row, group in enumerate(groups):
        member[row, group.astype(np.int64)] = True
    return member[:, superpixels]  # (P, H, W): each proposal's superpixels, looked up


def _best(scores: np.ndarray | None, count: int, top_n: int | None) -> np.ndarray:
    """The proposals to build, best first (file order without scores)."""
    order = np.argsort(-scores, kind="stable") if scores is not None else np.arange(count)
    return order if top_n is None else order[:top_n]


def _mcg_contents(path: Path, top_n: int | None) -> tuple[np.ndarray, list]:
    import h5py

    if h5py.is_hdf5(path):
        return _mcg_hdf5(path, top_n)
    content = _load_mat(path, ("superpixels", "labels"))
    superpixels = np.asarray(content["superpixels"])
    labels = np.asarray(content["labels"], dtype=object).ravel()
    scores = np.asarray(content["scores"], dtype=float).ravel() if "scores" in content else None
    scores = scores if scores is not None and len(scores) == len(labels) else None
    chosen = _best(scores, len(labels), top_n)
    return superpixels, [np.asarray(labels[i]).ravel() for i in chosen]


def _mcg_hdf5(path: Path, top_n: int | None) -> tuple[np.ndarray, list]:
    """A v7.3 MCG file: MATLAB stores arrays column-major, so h5py sees them transposed,
    and a cell is an array of references, each read only when chosen."""
    import h5py

    try:
        with h5py.File(path, "r") as file:
            missing = [k for k in ("superpixels", "labels") if k not in file]
            if missing:
                raise DataError(f"{path} has no {', '.join(missing)} (found: {sorted(file)})")
            superpixels = np.asarray(file["superpixels"]).T
            references = np.asarray(file["labels"]).ravel()
            scores = np.asarray(file["scores"]).ravel().astype(float) if "scores" in file else None
            scores = scores if scores is not None and len(scores) == len(references) else None
            chosen = _best(scores, len(references), top_n)
            groups = [np.asarray(file[references[i]]).ravel() for i in chosen]
    except OSError as err:
        raise DataError(f"{path} is not a readable MATLAB v7.3 file: {err}") from err
    return superpixels, groups


def read_cob(path: Path, top_n: int | None = None) -> np.ndarray:
    """COB proposals from `maskmat` (H x W x P array or cell of masks), sorted by score."""
    content = _load_mat(path, ("maskmat",))
    maskmat = content["maskmat"]
    if maskmat.dtype == object:
        masks = np.stack([np.asarray(m, dtype=bool) for m in maskmat.ravel()])
    elif maskmat.ndim == 3:
        masks = np.moveaxis(maskmat.astype(bool), -1, 0)
    else:
        raise DataError(
            f"{path}: maskmat must be H x W x P or a cell of masks, got {maskmat.shape}"
        )
    scores = np.asarray(content["scores"], dtype=float).ravel() if "scores" in content else None
    return _by_score(masks, scores)[:top_n]


def _read_json(path: Path) -> list:
    try:
        content = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(content, list):
        raise DataError(f"{path} must hold a list of proposals")
    return content


def read_rle_json(path: Path, top_n: int | None = None) -> np.ndarray:
    """COCO RLE proposals, sorted by `score` when every entry has one."""
    return masks_of_entries(_read_json(path), path)[:top_n]


def masks_of_entries(entries: list, path: Path) -> np.ndarray:
    """Proposals (P, H, W) bool of COCO RLE entries read from `path` (named in errors),
    sorted by `score` when every entry has one."""
    if not isinstance(entries, list):
        raise DataError(f"{path}: expected a list of COCO RLE proposals")
    rles, scores = [], []
    for entry in entries:
        rle = entry.get("segmentation", entry)
        if not {"size", "counts"} <= set(rle):
            raise DataError(f"{path}: each proposal must be a COCO RLE with size and counts")
        counts = rle["counts"]
        rles.append(
            {"size": rle["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
        )
        scores.append(entry.get("score"))
    if not rles:
        raise DataError(f"{path} holds no proposal; image size unknown")
    if isinstance(rles[0]["counts"], list):
        rles = [mask_utils.frPyObjects(r, *r["size"]) for r in rles]
    masks = np.moveaxis(mask_utils.decode(rles), -1, 0).astype(bool)
    valid = all(s is not None for s in scores)
    return _by_score(masks, np.asarray(scores, dtype=float) if valid else None)


def read_prm_demo_json(path: Path, top_n: int | None = None) -> np.ndarray:
    """Proposals of the original PRM demo: base64 uint32 (start, length) runs."""
    masks = []
    for entry in _read_json(path):
        height, width = entry["shape"]
        runs = np.frombuffer(base64.b64decode(entry["data"]), dtype=np.uint32).reshape(-1, 2)
        flat = np.zeros(height * width, dtype=bool)
        for start, length in runs:
            flat[start : start + length] = True
        masks.append(flat.reshape(height, width))
    if not masks:
        raise DataError(f"{path} holds no proposal; image size unknown")
    return np.stack(masks)[:top_n]

"""Readers of the proposal file formats in circulation; each returns (P, H, W) bool, best first.

- MCG: a .mat with `superpixels` (H x W label image), `labels` (a cell of superpixel-id
  lists, one per proposal) and `scores`.
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
        raise DataError(f"{path} is a MATLAB v7.3 (HDF5) file; save it with -v7") from err
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


def read_mcg(path: Path) -> np.ndarray:
    """MCG proposals: the union of each proposal's superpixels, sorted by score."""
    content = _load_mat(path, ("superpixels", "labels"))
    superpixels = np.asarray(content["superpixels"])
    groups = [np.asarray(g).ravel() for g in np.asarray(content["labels"], dtype=object).ravel()]
    masks = (
        np.stack([np.isin(superpixels, g) for g in groups])
        if groups
        else np.zeros((0, *superpixels.shape), dtype=bool)
    )
    scores = np.asarray(content["scores"], dtype=float).ravel() if "scores" in content else None
    return _by_score(masks, scores)


def read_cob(path: Path) -> np.ndarray:
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
    return _by_score(masks, scores)


def _read_json(path: Path) -> list:
    try:
        content = json.loads(Path(path).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(content, list):
        raise DataError(f"{path} must hold a list of proposals")
    return content


def read_rle_json(path: Path) -> np.ndarray:
    """COCO RLE proposals, sorted by `score` when every entry has one."""
    entries = _read_json(path)
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


def read_prm_demo_json(path: Path) -> np.ndarray:
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
    return np.stack(masks)

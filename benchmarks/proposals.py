"""Opening an MCG-size proposal file: a VOC image's 5,000 proposals over 800 superpixels
at 500 x 375, MATLAB v5 (scipy) and v7.3 (HDF5, h5py), reading the top 100 as retrieval
does against building every mask. Peak memory is measured in a fresh process each."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import scipy.io


def mcg_file(
    path: Path,
    proposals: int = 5000,
    superpixels: int = 800,
    size: tuple[int, int] = (375, 500),
    v73: bool = False,
    seed: int = 0,
) -> Path:
    """Write an MCG-shaped .mat: `superpixels` (H x W ids from 1), `labels` (a cell of
    id lists) and `scores`; v7.3 as MATLAB writes it (transposed arrays, a cell of
    references into `#refs#`).

    Takes six parameters: the file, the counts and size of its contents, its format and
    the seed that draws them."""
    rng = np.random.default_rng(seed)
    height, width = size
    grid = rng.integers(1, superpixels + 1, size=(height // 25 + 1, width // 25 + 1))
    ids = np.kron(grid, np.ones((25, 25), dtype=np.int64))[:height, :width].astype(np.uint16)
    labels = [
        np.sort(rng.choice(superpixels, rng.integers(1, min(40, superpixels)), replace=False) + 1)
        for _ in range(proposals)
    ]
    scores = rng.random(proposals)
    if not v73:
        cell = np.empty((proposals, 1), dtype=object)
        for i, group in enumerate(labels):
            cell[i, 0] = group.astype(np.float64)[:, None]
        scipy.io.savemat(path, {"superpixels": ids, "labels": cell, "scores": scores[:, None]})
        return path
    with h5py.File(path, "w", userblock_size=512) as file:
        file["superpixels"] = ids.T
        refs = file.create_group("#refs#")
        references = np.empty((1, proposals), dtype=h5py.ref_dtype)
        for i, group in enumerate(labels):
            references[0, i] = refs.create_dataset(str(i), data=group.astype(np.float64)[None]).ref
        file.create_dataset("labels", data=references, dtype=h5py.ref_dtype)
        file["scores"] = scores[None]
    return path


_CHILD = """
import json, resource, sys, time
from prm_bench.instances.proposals.formats import read_mcg
path, top_n = sys.argv[1], None if sys.argv[2] == "all" else int(sys.argv[2])
imported = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
start = time.perf_counter()
masks = read_mcg(path, top_n)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": seconds, "peak_rss_mb": peak, "rss_after_import_mb": imported,
                  "masks": len(masks)}))
"""


def bench_mcg(top_n: int = 100, full: bool = True) -> list[dict]:
    """Seconds and peak RSS of reading the top `top_n` (and, with `full`, every mask) of
    an MCG-size file in v5 and v7.3, each in a fresh process; the top masks of both
    formats equal a full read's first masks."""
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for v73 in (False, True):
            path = mcg_file(Path(folder) / f"mcg{'73' if v73 else '5'}.mat", v73=v73)
            for count in [top_n, *(["all"] if full else [])]:
                out = subprocess.run([sys.executable, "-c", _CHILD, str(path), str(count)],
                                     capture_output=True, text=True, check=True)  # fmt: skip
                measured = json.loads(out.stdout)
                kind = "v7.3" if v73 else "v5"
                rows.append({
                    "label": f"{kind}, {'top ' if count != 'all' else ''}{count} masks",
                    "format": kind, "read": count, "file_mb": path.stat().st_size / 1e6,
                    "seconds": {"read": measured.pop("seconds")}, **measured,
                })  # fmt: skip
    return rows


if __name__ == "__main__":
    print(json.dumps(bench_mcg(), indent=1))

"""Cost of trusting nothing at VOC scale: preflight's full read of every image and
annotation, and the content hashes that the store verifies before reusing a stage.

A synthetic VOC-layout tree of `images` JPEGs at VOC's size (500 x 375, textured so they
compress like photographs) with their XML annotations is built once under a temporary
folder; preflight's `check_split` decodes all of it, with 1 and 4 threads. The store part
hashes an inference folder of VOC val's size (1,449 files of ~150 KB, about 0.22 GB).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from prm_bench.data.base import check_split
from prm_bench.data.voc import VocDataset
from prm_bench.stages.store import Store


def _voc_tree(root: Path, images: int) -> None:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (375, 500, 3), dtype=np.uint8)
    ids = [f"{i:06d}" for i in range(images)]
    for number, image_id in enumerate(ids):
        pixels = np.roll(base, number * 7, axis=1)
        Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=90)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            "<annotation><object><name>cat</name><difficult>0</difficult><bndbox>"
            "<xmin>10</xmin><ymin>20</ymin><xmax>200</xmax><ymax>300</ymax>"
            "</bndbox></object></annotation>"
        )
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")
    (root / "classes.txt").write_text("cat\n")


def bench_integrity(images: int = 10_000, store_files: int = 1449) -> dict:
    """Seconds to check a split of `images` VOC-size images and to verify a store stage."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "VOC2012"
        start = time.perf_counter()
        _voc_tree(root, images)
        built = time.perf_counter() - start
        dataset = VocDataset(root, "train")
        preflight = {}
        for threads in (1, 4):
            start = time.perf_counter()
            check_split(dataset, threads=threads)
            preflight[f"threads_{threads}"] = time.perf_counter() - start
        store = Store(Path(tmp) / "store")
        folder = store.reset("infer", "k")
        rng = np.random.default_rng(1)
        for index in range(store_files):
            (folder / f"{index:06d}.npz").write_bytes(rng.bytes(150_000))
        start = time.perf_counter()
        store.complete("infer", "k")
        record = time.perf_counter() - start
        start = time.perf_counter()
        assert Store(store.root).is_done("infer", "k")  # a fresh store hashes everything
        verify = time.perf_counter() - start
        gigabytes = store_files * 150_000 / 1e9
    return {
        "images": images,
        "tree_build_seconds": built,
        "preflight_check_seconds": preflight,
        "preflight_ms_per_image": {k: v / images * 1e3 for k, v in preflight.items()},
        "store_files": store_files,
        "store_gigabytes": gigabytes,
        "record_seconds": record,
        "verify_seconds": verify,
        "verify_gb_per_second": gigabytes / verify,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_integrity(), indent=1))

"""Cost of trusting nothing: preflight's read of every image and annotation, the content
hashes that the store verifies before reusing a stage, and the file index that keeps an
unchanged tree from being read again.

`integrity`: a synthetic VOC-layout tree of `images` JPEGs at VOC's size (500 x 375,
textured so they compress like photographs) with their XML annotations is built once
under a temporary folder; a first survey (`data.fingerprint.survey` with an empty index:
decode and hash everything) runs with 1 and 4 threads. The store part hashes an inference
folder of VOC val's size (1,449 files of ~150 KB, about 0.22 GB).

`preflight_cache`: a 100,000-image tree (small images: the second check's cost is stats
and the index, not pixels) surveyed cold, then again with the index read back from disk
as the next run would; and SHA-256's rate, which sets the first fingerprint of COCO 2014.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from prm_bench.data.fingerprint import FileIndex, survey
from prm_bench.data.voc import VocDataset
from prm_bench.hashing import file_digest
from prm_bench.stages.store import Store

COCO2014_GB = 19.3  # train2014 (13.5 GB) and val2014 (6.6 GB) images, as downloaded


def _voc_tree(root: Path, images: int, size: tuple[int, int] = (375, 500)) -> None:
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
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
            survey(dataset, FileIndex(None), threads=threads)
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


def _hash_rate(folder: Path, megabytes: int = 512) -> float:
    """SHA-256 throughput of file reads (GB/s), on a file of `megabytes`."""
    path = folder / "blob"
    path.write_bytes(np.random.default_rng(2).bytes(megabytes * 1_000_000))
    start = time.perf_counter()
    file_digest(path)
    return megabytes / 1000 / (time.perf_counter() - start)


def bench_preflight_cache(images: int = 100_000) -> dict:
    """Seconds of a first and a second preflight survey of an `images`-image tree."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "VOC2012"
        start = time.perf_counter()
        _voc_tree(root, images, size=(48, 64))
        built = time.perf_counter() - start
        index_file = Path(tmp) / "cache" / "index.tsv"
        start = time.perf_counter()
        index = FileIndex(index_file)
        first = survey(VocDataset(root, "train"), index)
        index.save()
        cold = time.perf_counter() - start
        start = time.perf_counter()  # what the next run's preflight does: open, read, survey
        dataset = VocDataset(root, "train")
        opened = time.perf_counter()
        index = FileIndex(index_file)
        loaded = time.perf_counter()
        second = survey(dataset, index)
        index.save()
        warm = time.perf_counter() - start
        parts = {"open_split": opened - start, "read_index": loaded - opened,
                 "stat_and_compare": warm - (loaded - start)}  # fmt: skip
        assert second == first and not index.changed
        rate = _hash_rate(Path(tmp))
        return {
            "label": f"{images} images",
            "images": images,
            "tree_build_seconds": built,
            "index_megabytes": index_file.stat().st_size / 1e6,
            "seconds": {"first_check": cold, "second_check": warm},
            "second_check_parts": parts,
            "sha256_gb_per_second": rate,
            "coco2014_first_fingerprint_seconds": COCO2014_GB / rate,
        }


if __name__ == "__main__":
    import json

    print(json.dumps(bench_integrity(), indent=1))

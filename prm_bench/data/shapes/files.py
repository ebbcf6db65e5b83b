"""Writing the `shapes` dataset to disk in the VOC 2012 layout, plus COCO instance files."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from prm_bench.atomic import write_atomic
from prm_bench.data.palette import voc_palette
from prm_bench.data.shapes.draw import (
    FORMAT_VERSION,
    ShapeInstance,
    ShapesSpec,
    draw_image,
)
from prm_bench.geometry.masks import encode_rle, rle_box


def _annotation_xml(
    image_id: str, size: int, names: list[str], instances: list[ShapeInstance]
) -> bytes:
    root = ElementTree.Element("annotation")
    ElementTree.SubElement(root, "folder").text = "VOC2012"
    ElementTree.SubElement(root, "filename").text = f"{image_id}.jpg"
    dims = ElementTree.SubElement(root, "size")
    for tag, value in (("width", size), ("height", size), ("depth", 3)):
        ElementTree.SubElement(dims, tag).text = str(value)
    ElementTree.SubElement(root, "segmented").text = "1"
    for instance in instances:
        obj = ElementTree.SubElement(root, "object")
        ElementTree.SubElement(obj, "name").text = names[instance.label]
        ElementTree.SubElement(obj, "pose").text = "Unspecified"
        ElementTree.SubElement(obj, "truncated").text = "0"
        ElementTree.SubElement(obj, "difficult").text = "0"
        box = ElementTree.SubElement(obj, "bndbox")
        ys, xs = np.nonzero(instance.mask)
        # VOC boxes are 1-based and inclusive.
        for tag, value in (
            ("xmin", xs.min()),
            ("ymin", ys.min()),
            ("xmax", xs.max()),
            ("ymax", ys.max()),
        ):
            ElementTree.SubElement(box, tag).text = str(int(value) + 1)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8")


def _label_png(values: np.ndarray, path: Path) -> None:
    png = Image.fromarray(values, mode="P")
    png.putpalette(voc_palette())
    png.save(path, optimize=False)


def _write_image(config: ShapesSpec, index: int, image_id: str, root: Path) -> list[dict]:
    image, objects, classes, instances = draw_image(config, index)
    Image.fromarray(image).save(root / "JPEGImages" / f"{image_id}.jpg", quality=92)
    _label_png(objects, root / "SegmentationObject" / f"{image_id}.png")
    _label_png(classes, root / "SegmentationClass" / f"{image_id}.png")
    xml = _annotation_xml(image_id, config.size, config.class_names, instances)
    (root / "Annotations" / f"{image_id}.xml").write_bytes(xml)
    records = []
    for instance in instances:
        rle = encode_rle(instance.mask)
        records.append(
            {
                "category_id": instance.label + 1,
                "segmentation": rle,
                "area": int(instance.mask.sum()),
                "bbox": rle_box(rle),
            }
        )
    return records


def split_ids(config: ShapesSpec) -> dict[str, list[str]]:
    """Image ids per split: train, val, then tune (when n_tune > 0); no two share an image."""
    sizes = {"train": config.n_train, "val": config.n_val, "tune": config.n_tune}
    splits, first = {}, 0
    for split, count in sizes.items():
        if count:
            splits[split] = [f"shapes_{i:06d}" for i in range(first, first + count)]
        first += count
    return splits


def _chunks(items: list, n: int) -> Iterator[list]:
    step = max(1, -(-len(items) // n))
    for start in range(0, len(items), step):
        yield items[start : start + step]


def _write_chunk(config: ShapesSpec, ids: list[str], root: Path) -> dict[str, list[dict]]:
    return {
        image_id: _write_image(config, int(image_id.split("_")[1]), image_id, root)
        for image_id in ids
    }


def generate_shapes(out_dir: str | Path, config: ShapesSpec | None = None, jobs: int = -1) -> Path:
    """Write the shapes dataset to `out_dir` in the VOC 2012 layout plus COCO json.

    The tree is built under a temporary name and renamed into place when complete. If
    `out_dir` already holds a tree generated from the same config it is reused as is.

    Args:
        out_dir: the dataset root to create.
        config: what to generate (defaults: ShapesSpec()).
        jobs: worker processes (joblib; -1 = all cores). The output does not depend on it.

    Returns:
        `out_dir` as a Path.
    """
    config = config or ShapesSpec()
    out = Path(out_dir)
    stamp = _stamp(config)
    if out.exists():
        existing = out / "shapes.json"
        found = json.loads(existing.read_text()) if existing.is_file() else None
        if found == stamp:
            return out
        if found is not None and found == _stamp(config, without_tune=True):
            _add_tune_split(out, config, jobs)  # a tree from before the tune split
            return out
        raise FileExistsError(
            f"{out} already exists and is not a shapes tree generated with these arguments; "
            "remove it or choose another directory"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for folder in (
            "JPEGImages",
            "Annotations",
            "SegmentationObject",
            "SegmentationClass",
            "ImageSets/Main",
            "ImageSets/Segmentation",
            "annotations",
        ):
            (tmp / folder).mkdir(parents=True)
        splits = split_ids(config)
        records = _write_images(config, [i for ids in splits.values() for i in ids], tmp, jobs)
        _write_image_sets(tmp, config, splits, records)
        _write_coco(tmp, config, splits, records)
        (tmp / "classes.txt").write_text("\n".join(config.class_names) + "\n")
        (tmp / "shapes.json").write_text(json.dumps(stamp, indent=2) + "\n")
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def ensure_shapes(root: str | Path, config: ShapesSpec | None = None, jobs: int = -1) -> bool:
    """A shapes tree at `root`: generated from `config` (default ShapesSpec()) when
    absent; a tree from before the tune split gets one (train and val untouched). True
    when anything was written."""
    root = Path(root)
    stamp_file = root / "shapes.json"
    if not stamp_file.is_file():
        generate_shapes(root, config, jobs)
        return True
    found = json.loads(stamp_file.read_text())
    if "n_tune" in found:
        return False
    fields = {k: found[k] for k in asdict(ShapesSpec()) if k in found}
    _add_tune_split(root, ShapesSpec(**fields), jobs)
    return True


def shapes_pending(root: str | Path) -> str | None:
    """What `ensure_shapes(root)` would write, in words (a dry run says it instead of
    doing it); None when the tree is there and up to date."""
    root, spec = Path(root), ShapesSpec()
    stamp_file = root / "shapes.json"
    if not stamp_file.is_file():
        images = spec.n_train + spec.n_val + spec.n_tune
        return (
            f"would generate the shapes dataset at {root}: {images} images of "
            f"{spec.size} px ({spec.n_train} train, {spec.n_val} val, {spec.n_tune} tune)"
        )
    try:
        current = "n_tune" in json.loads(stamp_file.read_text())
    except (OSError, ValueError, TypeError):
        current = False
    return None if current else f"would add a tune split of {spec.n_tune} images to {root}"


def _stamp(config: ShapesSpec, without_tune: bool = False) -> dict:
    """What shapes.json records; `without_tune`: as written before the tune split existed."""
    stamp = {"generator": "prm-bench shapes", "version": FORMAT_VERSION, **asdict(config)}
    if without_tune:
        del stamp["n_tune"]
    return stamp


def _write_images(config: ShapesSpec, ids: list[str], root: Path, jobs: int) -> dict:
    from joblib import Parallel, delayed

    workers = (os.cpu_count() or 1) if jobs == -1 else jobs
    parts = Parallel(n_jobs=jobs)(
        delayed(_write_chunk)(config, chunk, root) for chunk in _chunks(ids, workers * 4)
    )
    return {k: v for part in parts for k, v in part.items()}


def _add_tune_split(root: Path, config: ShapesSpec, jobs: int) -> None:
    """Add the tune split to a tree generated before it existed. Only new files are
    written (train and val are untouched) and shapes.json is rewritten last, so an
    interrupted upgrade is redone by the next call."""
    splits = split_ids(config)
    if "tune" in splits:
        records = _write_images(config, splits["tune"], root, jobs)
        _write_image_sets(root, config, {"tune": splits["tune"]}, records, trainval=False)
        _write_coco(root, config, {"tune": splits["tune"]}, records)
    write_atomic(root / "shapes.json", (json.dumps(_stamp(config), indent=2) + "\n").encode())


def _write_image_sets(
    root: Path, config: ShapesSpec, splits: dict, records: dict, trainval: bool = True
) -> None:
    if trainval:
        splits = {**splits, "trainval": splits["train"] + splits["val"]}
    for split, ids in splits.items():
        listing = "".join(f"{i}\n" for i in ids)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text(listing)
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text(listing)
        for label, name in enumerate(config.class_names):
            lines = []
            for image_id in ids:
                present = any(r["category_id"] == label + 1 for r in records[image_id])
                lines.append(f"{image_id} {' 1' if present else '-1'}\n")
            (root / "ImageSets" / "Main" / f"{name}_{split}.txt").write_text("".join(lines))


def _write_coco(root: Path, config: ShapesSpec, splits: dict, records: dict) -> None:
    categories = [
        {"id": i + 1, "name": name, "supercategory": "shape"}
        for i, name in enumerate(config.class_names)
    ]
    for split, ids in splits.items():
        images, annotations = [], []
        for number, image_id in enumerate(ids, start=1):
            images.append(
                {
                    "id": number,
                    "file_name": f"{image_id}.jpg",
                    "width": config.size,
                    "height": config.size,
                }
            )
            for record in records[image_id]:
                annotations.append(
                    {**record, "id": len(annotations) + 1, "image_id": number, "iscrowd": 0}
                )
        coco = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco))

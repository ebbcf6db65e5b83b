"""The embedded `shapes` dataset: a deterministic stand-in for PASCAL VOC (DESIGN 4).

Every image holds 1-6 object instances of a few classes, often several of one class,
partly occluding each other, on a textured background with clutter and distractors. An
object's class is the conjunction of its shape and its hue range: a class shape in another
hue, or a non-class shape in a class hue, is a distractor. So neither colour nor shape
alone decides the class, and instance separation needs more than a colour threshold.

The generator writes the PASCAL VOC 2012 layout (JPEGImages, Annotations, SegmentationClass,
SegmentationObject with a void band around each instance, ImageSets) plus COCO instance
files, so the ordinary VOC and COCO readers are what read it back.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from prm_bench.atomic import write_atomic
from prm_bench.data.palette import VOID, voc_palette
from prm_bench.geometry.masks import encode_rle, rle_box

CLASS_SHAPES = ("circle", "square", "triangle", "star", "cross", "heart")
DISTRACTOR_SHAPES = ("ring", "bar", "crescent")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ShapesSpec:
    """What the generated tree depends on: the same config gives byte-identical files.

    Attributes:
        seed: base seed; each image draws from its own stream derived from it.
        n_train, n_val: images per split.
        n_tune: images of the `tune` split (held out for tuning, DESIGN 3); new images
            after train and val, so adding it leaves those two byte-identical.
        size: image side in pixels.
        classes: number of object classes (first `classes` of CLASS_SHAPES).
        max_instances: most object instances per image (at least 1).
    """

    seed: int = 0
    n_train: int = 2000
    n_val: int = 400
    size: int = 128
    classes: int = 5
    max_instances: int = 6
    n_tune: int = 200

    def __post_init__(self) -> None:
        if not 1 <= self.classes <= len(CLASS_SHAPES):
            raise ValueError(f"classes must be in 1..{len(CLASS_SHAPES)}, got {self.classes}")
        if self.size < 32:
            raise ValueError(f"size must be >= 32 pixels, got {self.size}")
        if self.n_train < 1 or self.n_val < 1:
            raise ValueError("n_train and n_val must be >= 1")
        if self.n_tune < 0:
            raise ValueError(f"n_tune must be >= 0, got {self.n_tune}")
        if not 1 <= self.max_instances <= 12:
            raise ValueError(f"max_instances must be in 1..12, got {self.max_instances}")

    @property
    def class_names(self) -> list[str]:
        """The object classes, in label order (label 1 is the first)."""
        return list(CLASS_SHAPES[: self.classes])


@dataclass
class ShapeInstance:
    """One drawn object: class index (0-based) and its final instance mask."""

    label: int
    mask: np.ndarray


def _polygon(kind: str, radius: float, angle: float) -> np.ndarray:
    """Vertices (N, 2) as (y, x) offsets of a class or distractor outline."""
    if kind in ("circle", "ring", "crescent"):
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = np.full_like(t, radius)
    elif kind == "square":
        t = np.arange(4) * np.pi / 2 + np.pi / 4
        r = np.full(4, radius)
    elif kind == "triangle":
        t = np.arange(3) * 2 * np.pi / 3
        r = np.full(3, radius * 1.1)
    elif kind == "star":
        t = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius * 1.1, radius * 0.45)
    elif kind == "cross":
        a = radius * 0.36
        pts = [(-a, radius), (a, radius), (a, a), (radius, a), (radius, -a), (a, -a)]
        pts += [(a, -radius), (-a, -radius), (-a, -a), (-radius, -a), (-radius, a), (-a, a)]
        xy = np.asarray(pts)
        t, r = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])
    elif kind == "heart":
        s = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        x = 16 * np.sin(s) ** 3
        y = -(13 * np.cos(s) - 5 * np.cos(2 * s) - 2 * np.cos(3 * s) - np.cos(4 * s))
        t, r = np.arctan2(y, x), np.hypot(x, y) * radius / 16
    elif kind == "bar":
        long, short = radius * 1.2, radius * 0.28
        xy = np.asarray([(-long, -short), (long, -short), (long, short), (-long, short)])
        t, r = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])
    else:
        raise ValueError(f"unknown shape {kind!r}")
    t = t + angle
    return np.stack([r * np.sin(t), r * np.cos(t)], axis=1)


def shape_mask(
    kind: str, size: int, cy: float, cx: float, radius: float, angle: float
) -> np.ndarray:
    """Boolean (size, size) mask of one shape centred at (cy, cx)."""
    vertices = _polygon(kind, radius, angle) + np.array([cy, cx])
    mask = np.zeros((size, size), dtype=bool)
    rr, cc = draw_polygon(vertices[:, 0], vertices[:, 1], shape=mask.shape)
    mask[rr, cc] = True
    if kind in ("ring", "crescent"):
        shift = 0.0 if kind == "ring" else 0.45 * radius
        inner = _polygon("circle", radius * (0.55 if kind == "ring" else 0.85), 0.0)
        inner = inner + np.array([cy + shift * np.sin(angle), cx + shift * np.cos(angle)])
        rr, cc = draw_polygon(inner[:, 0], inner[:, 1], shape=mask.shape)
        mask[rr, cc] = False
    return mask


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return np.asarray([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _texture(rng: np.random.Generator, size: int, strength: float) -> np.ndarray:
    """A multiplicative texture field (size, size) around 1: stripes, smooth noise or dots."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    kind = rng.integers(3)
    if kind == 0:
        angle, period = rng.uniform(0, np.pi), rng.uniform(3, 10)
        field = np.sin((yy * np.sin(angle) + xx * np.cos(angle)) * 2 * np.pi / period)
    elif kind == 1:
        coarse = rng.standard_normal((size // 8 + 2, size // 8 + 2))
        field = ndimage.zoom(coarse, 8, order=1)[:size, :size]
        field = field / (np.abs(field).max() + 1e-6)
    else:
        period = rng.uniform(4, 9)
        field = np.cos(yy * 2 * np.pi / period) * np.cos(xx * 2 * np.pi / period)
    return 1.0 + strength * field.astype(np.float32)


class _Painter:
    """Draws one image: background, clutter, distractors, then objects on top."""

    def __init__(self, config: ShapesSpec, rng: np.random.Generator) -> None:
        self.config = config
        self.rng = rng
        self.size = config.size
        self.hues = np.arange(config.classes) / config.classes + rng.uniform(-0.01, 0.01)

    def class_hue(self, label: int) -> float:
        return float((self.hues[label] + self.rng.uniform(-0.035, 0.035)) % 1.0)

    def paint(self, canvas: np.ndarray, mask: np.ndarray, hue: float) -> None:
        rgb = _hsv_to_rgb(hue, self.rng.uniform(0.55, 1.0), self.rng.uniform(0.55, 1.0))
        texture = _texture(self.rng, self.size, self.rng.uniform(0.1, 0.3))
        canvas[mask] = np.clip(rgb[None, :] * texture[mask][:, None], 0, 1)

    def background(self) -> np.ndarray:
        base = _hsv_to_rgb(
            self.rng.uniform(), self.rng.uniform(0, 0.25), self.rng.uniform(0.3, 0.8)
        )
        texture = _texture(self.rng, self.size, self.rng.uniform(0.1, 0.35))
        return np.clip(base[None, None, :] * texture[..., None], 0, 1).astype(np.float32)

    def random_shape(self, kind: str, scale: tuple[float, float]) -> np.ndarray:
        radius = self.rng.uniform(*scale) * self.size
        cy, cx = self.rng.uniform(radius * 0.5, self.size - radius * 0.5, size=2)
        return shape_mask(kind, self.size, cy, cx, radius, self.rng.uniform(0, 2 * np.pi))

    def clutter(self, canvas: np.ndarray) -> None:
        for _ in range(self.rng.integers(4, 12)):
            kind = self.rng.choice([*DISTRACTOR_SHAPES, "circle", "square"])
            mask = self.random_shape(str(kind), (0.015, 0.04))
            self.paint(canvas, mask, self.class_hue(int(self.rng.integers(self.config.classes))))

    def distractors(self, canvas: np.ndarray) -> None:
        for _ in range(self.rng.integers(0, 3)):
            label = int(self.rng.integers(self.config.classes))
            if self.rng.uniform() < 0.5:
                # A non-class shape in a class hue.
                kind = str(self.rng.choice(DISTRACTOR_SHAPES))
                hue = self.class_hue(label)
            else:
                # A class shape in a hue between the class ranges.
                kind = CLASS_SHAPES[label]
                gap = 0.5 / self.config.classes
                hue = float((self.hues[label] + gap + self.rng.uniform(-0.02, 0.02)) % 1.0)
            self.paint(canvas, self.random_shape(kind, (0.07, 0.14)), hue)

    def labels(self) -> list[int]:
        n = int(self.rng.integers(1, self.config.max_instances + 1))
        present = self.rng.choice(
            self.config.classes,
            size=min(self.config.classes, int(self.rng.integers(1, 4))),
            replace=False,
        )
        return sorted(int(self.rng.choice(present)) for _ in range(n))

    def objects(self, canvas: np.ndarray) -> list[ShapeInstance]:
        placed: list[ShapeInstance] = []
        full_area: list[int] = []
        for label in self.labels():
            for _attempt in range(30):
                mask = self.random_shape(CLASS_SHAPES[label], (0.09, 0.2))
                visible = [p.mask & ~mask for p in placed]
                if mask.sum() > 0 and all(
                    v.sum() >= 0.55 * a for v, a in zip(visible, full_area, strict=True)
                ):
                    break
            else:
                continue
            for instance, v in zip(placed, visible, strict=True):
                instance.mask = v
            placed.append(ShapeInstance(label, mask))
            full_area.append(int(mask.sum()))
            self.paint(canvas, mask, self.class_hue(label))
        return placed


def draw_image(
    config: ShapesSpec, index: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[ShapeInstance]]:
    """Draw image `index` of the dataset.

    Returns:
        (image uint8 (S, S, 3), SegmentationObject (S, S) uint8, SegmentationClass
        (S, S) uint8, instances). Label images use 0 for background, 255 for the void
        band; instance k has value k + 1 and its mask excludes the void band.
    """
    rng = np.random.default_rng([config.seed, FORMAT_VERSION, index])
    painter = _Painter(config, rng)
    canvas = painter.background()
    painter.clutter(canvas)
    painter.distractors(canvas)
    instances = painter.objects(canvas)
    objects = np.zeros((config.size, config.size), dtype=np.uint8)
    classes = np.zeros_like(objects)
    void = np.zeros(objects.shape, dtype=bool)
    for k, instance in enumerate(instances):
        objects[instance.mask] = k + 1
        classes[instance.mask] = instance.label + 1
        void |= ndimage.binary_dilation(instance.mask) & ~ndimage.binary_erosion(instance.mask)
    objects[void] = VOID
    classes[void] = VOID
    for k, instance in enumerate(instances):
        instance.mask = objects == k + 1
    image = (canvas * 255 + 0.5).astype(np.uint8)
    return image, objects, classes, instances


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

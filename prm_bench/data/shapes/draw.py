"""Drawing one `shapes` image: its instances, colours, textures and occlusions."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.draw import polygon as draw_polygon

from prm_bench.data.palette import VOID

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
    """Boolean (size, size) mask of one shape centred at (cy, cx).

    Takes six parameters: the shape's kind, the canvas size, and its centre (two),
    radius and angle.
    """
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

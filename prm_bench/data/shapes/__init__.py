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

from prm_bench.data.shapes.draw import (
    CLASS_SHAPES,
    DISTRACTOR_SHAPES,
    FORMAT_VERSION,
    ShapeInstance,
    ShapesSpec,
    draw_image,
    shape_mask,
)
from prm_bench.data.shapes.files import ensure_shapes, generate_shapes, shapes_pending, split_ids

__all__ = [
    "CLASS_SHAPES",
    "DISTRACTOR_SHAPES",
    "FORMAT_VERSION",
    "ShapeInstance",
    "ShapesSpec",
    "draw_image",
    "ensure_shapes",
    "generate_shapes",
    "shape_mask",
    "shapes_pending",
    "split_ids",
]

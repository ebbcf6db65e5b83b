"""COCO reader through pycocotools: image-level labels and instance masks (polygons or RLE)."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools.coco import COCO

from prm_bench.data.base import DataError, Instance, box_of

LAYOUT = "expected a COCO instances json (images, annotations, categories) and an image folder"


class CocoDataset:
    """The images of a COCO instances file.

    Args:
        annotation_file: e.g. annotations/instances_val2014.json.
        image_dir: the folder holding the images' `file_name`s.
        include_crowd: keep crowd annotations as instances (they never count as labels).
    """

    def __init__(
        self, annotation_file: str | Path, image_dir: str | Path, *, include_crowd: bool = False
    ) -> None:
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.include_crowd = include_crowd
        if not self.annotation_file.is_file():
            raise DataError(f"COCO annotation file {self.annotation_file} does not exist; {LAYOUT}")
        if not self.image_dir.is_dir():
            raise DataError(f"COCO image folder {self.image_dir} does not exist; {LAYOUT}")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
                self.coco = COCO(str(self.annotation_file))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{self.annotation_file} is not a COCO instances file: {err}") from err
        if not self.coco.dataset.get("categories"):
            raise DataError(f"{self.annotation_file} has no categories; {LAYOUT}")
        self.category_ids = sorted(self.coco.getCatIds())
        self._label = {cat: i for i, cat in enumerate(self.category_ids)}
        try:
            self.class_names = [self.coco.cats[c]["name"] for c in self.category_ids]
            self._by_name = {
                self.coco.imgs[i]["file_name"].rsplit(".", 1)[0]: i for i in self.coco.imgs
            }
        except (KeyError, TypeError, AttributeError) as err:
            raise DataError(
                f"{self.annotation_file}: every category needs a name and every image a "
                f"file_name (missing {err}); {LAYOUT}"
            ) from None
        self.ids = sorted(self._by_name)
        missing = [
            i
            for i in self.ids
            if not (self.image_dir / self.coco.imgs[self._by_name[i]]["file_name"]).is_file()
        ]
        if missing:
            first = self.image_dir / self.coco.imgs[self._by_name[missing[0]]]["file_name"]
            raise DataError(
                f"{len(missing)} images of {self.annotation_file} are missing (first: {first})"
            )

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, image_id: str) -> np.ndarray:
        """RGB image (H, W, 3) uint8."""
        info = self.coco.imgs[self._by_name[image_id]]
        with Image.open(self.image_dir / info["file_name"]) as image:
            return np.asarray(image.convert("RGB"))

    def _annotations(self, image_id: str) -> list[dict]:
        return self.coco.loadAnns(self.coco.getAnnIds(imgIds=[self._by_name[image_id]]))

    def subset(self, ids: list[str]) -> dict:
        """The instances file's content restricted to the images `ids` (e.g. a tuning
        split held out of train2014)."""
        wanted = {self._by_name[i] for i in ids}
        full = self.coco.dataset
        return {
            **{k: v for k, v in full.items() if k not in ("images", "annotations")},
            "images": [image for image in full["images"] if image["id"] in wanted],
            "annotations": [a for a in full["annotations"] if a["image_id"] in wanted],
        }

    def labels(self, image_id: str) -> np.ndarray:
        """Image-level labels (C,) float32 from the non-crowd annotations."""
        labels = np.zeros(len(self.class_names), dtype=np.float32)
        for ann in self._annotations(image_id):
            if not ann.get("iscrowd", 0):
                labels[self._label[ann["category_id"]]] = 1.0
        return labels

    def check(self, image_id: str) -> tuple[int, int]:
        """Decode the image whole and check its annotations; its (height, width).

        Raises:
            DataError: naming the image file or the annotation that is unusable.
        """
        info = self.coco.imgs[self._by_name[image_id]]
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as image:
                image.load()
                size = image.size[1], image.size[0]
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"{path} cannot be read: {err}") from None
        for ann in self._annotations(image_id):
            if ann.get("category_id") not in self._label:
                raise DataError(
                    f"{self.annotation_file}: annotation {ann.get('id')} of {info['file_name']} "
                    f"has category_id {ann.get('category_id')!r}, not among the categories"
                )
            if not ann.get("iscrowd", 0) and not ann.get("segmentation"):
                raise DataError(
                    f"{self.annotation_file}: annotation {ann.get('id')} of {info['file_name']} "
                    "has no segmentation (instance masks need polygons or RLE)"
                )
        return size

    def files(self, image_id: str) -> dict[str, list[str]]:
        """The paths of one image's files by role: its image (labels and masks are in
        the split's json, see `split_files`)."""
        name = self.coco.imgs[self._by_name[image_id]]["file_name"]
        return {"images": [f"{self.image_dir}/{name}"]}

    def split_files(self) -> dict[str, list[str]]:
        """The instances json: every image's labels and masks."""
        return {"labels": [str(self.annotation_file)], "masks": [str(self.annotation_file)]}

    def void(self, image_id: str) -> np.ndarray | None:
        """COCO marks no void pixels: None."""
        return None

    def instances(self, image_id: str) -> list[Instance]:
        """Instance masks decoded by pycocotools (polygons and RLE alike)."""
        instances = []
        for ann in self._annotations(image_id):
            if ann.get("iscrowd", 0) and not self.include_crowd:
                continue
            mask = self.coco.annToMask(ann).astype(bool)
            instances.append(Instance(self._label[ann["category_id"]], mask, box_of(mask)))
        return instances

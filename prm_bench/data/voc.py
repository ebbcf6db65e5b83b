"""PASCAL VOC 2012 reader (VOCdevkit layout), also used for the generated shapes tree.

Image-level labels come from the Annotations XML of any split list (train, val, trainval
or a user list such as train_aug); instance ground truth of the segmentation splits from
SegmentationObject + SegmentationClass, where void pixels (255) belong to no instance.
"""

from __future__ import annotations

from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from PIL import Image

from prm_bench.data.base import DataError, Instance, box_of
from prm_bench.data.palette import VOID

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
LAYOUT = (
    "expected the VOC 2012 layout: ROOT/{JPEGImages, Annotations, ImageSets/Main, "
    "ImageSets/Segmentation, SegmentationClass, SegmentationObject} (ROOT may also be the "
    "folder holding VOC2012 or VOCdevkit/VOC2012)"
)


def resolve_root(root: str | Path) -> Path:
    """The VOC2012 folder under `root` (root itself, root/VOC2012 or root/VOCdevkit/VOC2012)."""
    root = Path(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    if not root.exists():
        raise DataError(f"dataset root {root} does not exist; {LAYOUT}")
    raise DataError(f"{root} has no JPEGImages folder; {LAYOUT}")


def _decoded_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file after decoding it whole."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.size[1], image.size[0]
    except (OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path} cannot be read: {err}") from None


class VocDataset:
    """One split of a VOC-layout dataset.

    Args:
        root: the VOC2012 folder (or a parent, see `resolve_root`).
        split: a split name of ImageSets/Main (or ImageSets/Segmentation with
            `segmentation=True`), or a path to a file listing image ids.
        segmentation: the split is a segmentation split: instance masks are required.
        classes: class names in label order; default: ROOT/classes.txt if present,
            else the 20 VOC classes.
        include_difficult: count "difficult" objects as present in image labels.
    """

    def __init__(
        self,
        root: str | Path,
        split: str | Path,
        *,
        segmentation: bool = False,
        classes: list[str] | None = None,
        include_difficult: bool = True,
    ) -> None:
        self.root = resolve_root(root)
        self._root_text = str(self.root)  # `files` builds 2-4 paths per image: as text
        self.segmentation = segmentation
        self.include_difficult = include_difficult
        class_file = self.root / "classes.txt"
        if classes is None:
            classes = class_file.read_text().split() if class_file.is_file() else list(VOC_CLASSES)
        self.class_names = list(classes)
        self._index = {name: i for i, name in enumerate(self.class_names)}
        folders = ["JPEGImages", "Annotations"]
        if segmentation:
            folders += ["SegmentationObject", "SegmentationClass"]
        for folder in folders:
            if not (self.root / folder).is_dir():
                raise DataError(f"{self.root / folder} is missing; {LAYOUT}")
        self.split_file = self._split_file(split)
        self.ids = self._read_ids(self.split_file)
        self._check_files()

    def _split_file(self, split: str | Path) -> Path:
        path = Path(split)
        if path.suffix == ".txt" or path.is_file():
            if not path.is_file():
                raise DataError(f"split list {path} does not exist")
            return path
        sets = "Segmentation" if self.segmentation else "Main"
        path = self.root / "ImageSets" / sets / f"{split}.txt"
        if not path.is_file():
            found = sorted(p.stem for p in path.parent.glob("*.txt") if "_" not in p.stem)
            raise DataError(
                f"split file {path} does not exist "
                f"(splits there: {', '.join(found) or 'none'}); {LAYOUT}"
            )
        return path

    @staticmethod
    def _read_ids(path: Path) -> list[str]:
        ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
        if not ids:
            raise DataError(f"split list {path} lists no image")
        if len(set(ids)) != len(ids):
            raise DataError(f"split list {path} lists an image more than once")
        return ids

    def _check_files(self) -> None:
        needed = [("JPEGImages", ".jpg"), ("Annotations", ".xml")]
        if self.segmentation:
            needed += [("SegmentationObject", ".png"), ("SegmentationClass", ".png")]
        for folder, suffix in needed:
            present = {p.stem for p in (self.root / folder).glob(f"*{suffix}")}
            missing = [i for i in self.ids if i not in present]
            if missing:
                raise DataError(
                    f"{len(missing)} images of {self.split_file} have no {folder}/<id>{suffix} "
                    f"(first: {self.root / folder / (missing[0] + suffix)})"
                )

    def __len__(self) -> int:
        return len(self.ids)

    def image(self, image_id: str) -> np.ndarray:
        """RGB image (H, W, 3) uint8."""
        with Image.open(self.root / "JPEGImages" / f"{image_id}.jpg") as image:
            return np.asarray(image.convert("RGB"))

    def objects(self, image_id: str) -> list[tuple[int, bool, tuple[int, int, int, int]]]:
        """(label, difficult, box) of every XML object; boxes 0-based inclusive."""
        path = self.root / "Annotations" / f"{image_id}.xml"
        try:
            tree = ElementTree.parse(path)
        except ElementTree.ParseError as err:
            raise DataError(f"{path} is not valid XML: {err}") from err
        objects = []
        for node in tree.getroot().iter("object"):
            name = (node.findtext("name") or "").strip()
            if name not in self._index:
                raise DataError(
                    f"{path}: unknown class {name!r} (classes: {', '.join(self._index)})"
                )
            difficult = (node.findtext("difficult") or "0").strip() == "1"
            box = tuple(
                int(float(node.findtext(f"bndbox/{k}"))) - 1
                for k in ("xmin", "ymin", "xmax", "ymax")
            )
            objects.append((self._index[name], difficult, box))
        return objects

    def labels(self, image_id: str) -> np.ndarray:
        """Image-level labels (C,) float32: 1 where an object of the class is annotated."""
        labels = np.zeros(len(self.class_names), dtype=np.float32)
        for label, difficult, _ in self.objects(image_id):
            if self.include_difficult or not difficult:
                labels[label] = 1.0
        return labels

    def instances(self, image_id: str) -> list[Instance]:
        """Instances from SegmentationObject (ids 1..N) and SegmentationClass."""
        objects = self._png("SegmentationObject", image_id)
        classes = self._png("SegmentationClass", image_id)
        xml = self.objects(image_id)
        instances = []
        for value in np.unique(objects):
            if value in (0, VOID):
                continue
            mask = objects == value
            label = int(np.bincount(classes[mask]).argmax()) - 1
            if not 0 <= label < len(self.class_names):
                raise DataError(
                    f"SegmentationClass/{image_id}.png gives instance {value} the class value "
                    f"{label + 1}, outside 1..{len(self.class_names)}"
                )
            difficult = xml[value - 1][1] if len(xml) >= value else False
            instances.append(Instance(label, mask, box_of(mask), difficult))
        return instances

    def check(self, image_id: str) -> tuple[int, int]:
        """Read every file of an image whole; its (height, width).

        Raises:
            DataError: naming the file that does not decode, or does not fit the image.
        """
        size = _decoded_size(self.root / "JPEGImages" / f"{image_id}.jpg")
        self.objects(image_id)
        if self.segmentation:
            for folder in ("SegmentationObject", "SegmentationClass"):
                path = self.root / folder / f"{image_id}.png"
                if _decoded_size(path) != size:
                    raise DataError(
                        f"{path} is {_decoded_size(path)[::-1]} (width, height) but its image "
                        f"is {size[::-1]}: the annotation does not belong to that image"
                    )
        return size

    def files(self, image_id: str) -> dict[str, list[str]]:
        """The paths of one image's files by role: `images`, `labels` (its XML) and, for
        a segmentation split, `masks` (SegmentationObject and SegmentationClass)."""
        root = self._root_text
        files = {
            "images": [f"{root}/JPEGImages/{image_id}.jpg"],
            "labels": [f"{root}/Annotations/{image_id}.xml"],
        }
        if self.segmentation:
            files["masks"] = [
                f"{root}/SegmentationObject/{image_id}.png",
                f"{root}/SegmentationClass/{image_id}.png",
            ]
        return files

    def split_files(self) -> dict[str, list[str]]:
        """Files every image shares: the class names, where ROOT/classes.txt gives them."""
        class_file = self.root / "classes.txt"
        return {"labels": [str(class_file)]} if class_file.is_file() else {}

    def void(self, image_id: str) -> np.ndarray:
        """(H, W) bool: the void pixels (255 in SegmentationObject), ignored by metrics."""
        return self._png("SegmentationObject", image_id) == VOID

    def _png(self, folder: str, image_id: str) -> np.ndarray:
        with Image.open(self.root / folder / f"{image_id}.png") as png:
            return np.asarray(png)

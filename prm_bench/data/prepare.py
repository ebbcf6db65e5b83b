"""`prm-bench data prepare voc2012`: the train_aug list the paper trains on.

train_aug = (SBD train | SBD val | VOC segmentation train) - VOC segmentation val: every
image with image-level labels that is not an evaluation image. Its labels are the VOC
XML's (difficult objects included, as the VOC reader reads them), so every listed image
needs its JPEG and its XML. With the real lists that is 10,582 images, holding all 1,464
of VOC's segmentation train and none of its 1,449 val images.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prm_bench.data.base import DataError

VOC = Path("VOCdevkit/VOC2012")
SBD = Path("benchmark_RELEASE/dataset")
LIST = VOC / "ImageSets" / "Segmentation" / "train_aug.txt"  # what prepare_voc2012 writes
# the published sizes: what the real lists give
TRAIN_AUG, VOC_TRAIN, VOC_VAL = 10_582, 1_464, 1_449


@dataclass(frozen=True)
class Prepared:
    """What `prepare_voc2012` wrote and what it found."""

    path: Path
    images: int
    voc_train: int
    voc_val: int
    sbd: int
    written: bool
    real_size: bool  # the lists are VOC's and SBD's published ones


def _ids(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path} does not exist (fetch voc2012 and sbd first)")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def prepare_voc2012(root: Path) -> Prepared:
    """Write `<root>/VOCdevkit/VOC2012/ImageSets/Segmentation/train_aug.txt` (once: an
    identical list is left as it is).

    Raises:
        DataError: a missing list, image or annotation, or lists that break the
            published counts (named in the message).
    """
    root = Path(root)
    lists = root / VOC / "ImageSets" / "Segmentation"
    train, val = _ids(lists / "train.txt"), _ids(lists / "val.txt")
    sbd = set(_ids(root / SBD / "train.txt")) | set(_ids(root / SBD / "val.txt"))
    held = set(val)
    ids = sorted((sbd | set(train)) - held)
    real = len(train) == VOC_TRAIN and len(val) == VOC_VAL
    if real and len(ids) != TRAIN_AUG:
        raise DataError(
            f"train_aug would hold {len(ids)} images, not {TRAIN_AUG}: the SBD lists under "
            f"{root / SBD} are not SBD's train.txt and val.txt"
        )
    if not set(train) <= set(ids) or held & set(ids):
        raise DataError("train_aug must hold all of VOC's segmentation train and no val image")
    missing = [
        f"{folder}/{i}{suffix}"
        for i in ids
        for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".xml"))
        if not (root / VOC / folder / f"{i}{suffix}").is_file()
    ]
    if missing:
        raise DataError(
            f"{len(missing)} files of train_aug are missing under {root / VOC} (e.g. "
            f"{missing[0]}): fetch voc2012 again"
        )
    path = root / LIST
    text = "".join(f"{i}\n" for i in ids)
    written = not path.is_file() or path.read_text() != text
    if written:
        path.write_text(text)
    return Prepared(path, len(ids), len(train), len(val), len(sbd), written, real)

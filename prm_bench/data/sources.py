"""Where the paper's inputs come from, kept as data: every archive's URL and mirrors, its
byte size, its checksum, how it unpacks and what it leaves under the data root
(`prm-bench data fetch --list`). The fetcher (`data/fetch.py`) reads nothing else.

Sizes and MD5s of VOC 2012, SBD and COCO are the ones torchvision's dataset modules and
the COCO site publish. torchvision's weight files carry the first 8 hex digits of their
SHA-256 in their name, which torchvision checks; so does the fetcher. MCG publishes no
checksum: its archives are checked by nothing but a complete download on the first fetch,
the fetch says so, and it records their SHA-256 so that every later fetch is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

from prm_bench.registry import Registry


@dataclass(frozen=True)
class Archive:
    """One file to download.

    Attributes:
        url: where it is published.
        size: its byte size, or None where unpublished.
        checksum: `md5:<hex>`, `sha256:<hex>`, `sha256-prefix:<hex>` (torchvision's file
            names), or None where unpublished (recorded on the first fetch).
        unpack: `tar` (any compression), `zip`, or None (the file is kept as it is).
        into: the folder under the data root it unpacks (or is saved) into.
        provides: a path under the data root that exists once it is in place.
        mirrors: other URLs of the same bytes, tried in turn.
    """

    url: str
    size: int | None
    checksum: str | None
    unpack: str | None
    into: str
    provides: str
    mirrors: tuple[str, ...] = ()

    @property
    def filename(self) -> str:
        """The file's name (the last part of its URL)."""
        return self.url.rstrip("/").rsplit("/", 1)[-1]

    @property
    def checksum_kind(self) -> str:
        """How the file is checked: MD5, SHA-256, SHA-256 prefix or size only."""
        if self.checksum is None:
            return "size only" if self.size else "none (SHA-256 recorded on first fetch)"
        return {"md5": "MD5", "sha256": "SHA-256", "sha256-prefix": "SHA-256 prefix"}[
            self.checksum.split(":")[0]
        ]


@dataclass(frozen=True)
class Source:
    """A named input of the benchmark (`prm-bench data fetch NAME`): one or more archives."""

    name: str
    description: str
    archives: tuple[Archive, ...]

    @property
    def size(self) -> int | None:
        """The bytes to download, or None when some size is unpublished."""
        sizes = [a.size for a in self.archives]
        return None if None in sizes else sum(sizes)

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list` and `data fetch --list`."""
        size = f"{self.size / 1e9:.2f} GB" if self.size else "size unpublished"
        kinds = ", ".join(sorted({a.checksum_kind for a in self.archives}))
        places = ", ".join(sorted({a.provides for a in self.archives}))
        return f"{size}; {kinds}; -> {places}", self.description


SOURCES: Registry[Source] = Registry(
    "data source",
    """What `prm-bench data fetch` can download: each `Source` lists its archives (URL,
    mirrors, size, checksum, how it unpacks and where).""",
)

_VOC = "VOCtrainval_11-May-2012.tar"
_SBD = "https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/semantic_contours"
_MCG = "https://data.vision.ee.ethz.ch/jpont/mcg"
_COCO = "http://images.cocodataset.org"
_TORCHVISION = "https://download.pytorch.org/models"

for _source in (
    Source(
        "voc2012",
        "PASCAL VOC 2012 trainval (images, XML, segmentation masks)",
        (
            Archive(
                f"http://host.robots.ox.ac.uk/pascal/VOC/voc2012/{_VOC}",  # redirects now
                1_999_639_040,
                "md5:6cd6e144f989b92b3379bac3b3de84fd",
                "tar",
                ".",
                "VOCdevkit/VOC2012",
                (
                    f"https://d2l-data.s3-accelerate.amazonaws.com/{_VOC}",
                    f"https://pjreddie.com/media/files/{_VOC}",
                ),
            ),
        ),
    ),
    Source(
        "sbd",
        "SBD (Hariharan et al.): the image-level labels behind train_aug",
        (
            Archive(
                f"{_SBD}/benchmark.tgz",
                1_419_539_633,
                "md5:82b4d87ceb2ed10f6038a1cba92111cb",
                "tar",
                ".",
                "benchmark_RELEASE/dataset",
            ),
        ),
    ),
    Source(
        "mcg-voc2012",
        "MCG proposals of VOC 2012 (superpixels, labels, scores per image)",
        (
            Archive(
                f"{_MCG}/MCG-Pascal-Segmentation_trainvaltest_2012-proposals.tgz",
                None,
                None,
                "tar",
                ".",
                "MCG-Pascal-Segmentation_trainvaltest_2012-proposals",
            ),
        ),
    ),
    Source(
        "coco2014",
        "COCO 2014 train and val images and their instance annotations",
        (
            Archive(
                f"{_COCO}/zips/train2014.zip",
                13_510_573_713,
                "md5:0da8c0bd3d6becc4dcb32757491aca88",
                "zip",
                "coco",
                "coco/train2014",
            ),
            Archive(
                f"{_COCO}/zips/val2014.zip",
                6_645_013_297,
                "md5:a3d79f5ed8d289b7a7554ce06a5782b3",
                "zip",
                "coco",
                "coco/val2014",
            ),
            Archive(
                f"{_COCO}/annotations/annotations_trainval2014.zip",
                252_872_794,
                "md5:0a379cfc70b0e71301e0f377548639bd",
                "zip",
                "coco",
                "coco/annotations/instances_val2014.json",
            ),
        ),
    ),
    Source(
        "mcg-coco2014",
        "MCG proposals of COCO 2014 val",
        (
            Archive(
                f"{_MCG}/MCG-COCO-val2014-proposals.tgz",
                None,
                None,
                "tar",
                "coco",
                "coco/MCG-COCO-val2014-proposals",
            ),
        ),
    ),
    Source(
        "coco2017",
        "COCO 2017 instance annotations (images: the 2014 zips hold the same pictures)",
        (
            Archive(
                f"{_COCO}/annotations/annotations_trainval2017.zip",
                252_907_541,
                "md5:f4bbac642086de4f52a3fdda2de5fa2c",
                "zip",
                "coco",
                "coco/annotations/instances_val2017.json",
            ),
        ),
    ),
    Source(
        "weights",
        "torchvision's ImageNet ResNet50 and VGG16 (the paper's trunks), as torch state dicts",
        (
            Archive(
                f"{_TORCHVISION}/resnet50-0676ba61.pth",
                None,
                "sha256-prefix:0676ba61",
                None,
                "weights",
                "weights/resnet50-0676ba61.pth",
            ),
            Archive(
                f"{_TORCHVISION}/vgg16-397923af.pth",
                None,
                "sha256-prefix:397923af",
                None,
                "weights",
                "weights/vgg16-397923af.pth",
            ),
        ),
    ),
):
    SOURCES.add(_source.name, _source)

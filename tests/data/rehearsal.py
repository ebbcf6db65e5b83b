"""The real download path, rehearsed on loopback: tiny archives in each source's exact
layout, served by a local HTTP server with Range support that can cut a download
mid-way, answer 404 or serve a corrupted copy."""

import hashlib
import io
import json
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import scipy.io

from benchmarks.proposals import mcg_file
from prm_bench.data.sources import Archive, Source


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        server = self.server
        name = self.path.lstrip("/")
        data = server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range")
        start = int(asked.split("=")[1].split("-")[0]) if asked else 0
        server.requests.append((name, start))
        body = data[start:]
        self.send_response(206 if asked else 200)
        if asked:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in server.cut:  # the connection drops half-way, once
            server.cut.discard(name)
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Mirror:
    """A loopback HTTP server of named files; `cut` names files whose next download drops
    half-way; `requests` records (file, first byte asked for)."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.files, self.server.cut, self.server.requests = {}, set(), []
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def files(self) -> dict[str, bytes]:
        return self.server.files

    @property
    def cut(self) -> set[str]:
        return self.server.cut

    @property
    def requests(self) -> list:
        return self.server.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _tar(members: dict[str, bytes], compress: bool = True) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _tree(root: Path, prefix: str) -> dict[str, bytes]:
    return {
        f"{prefix}{p.relative_to(root)}": p.read_bytes() for p in root.rglob("*") if p.is_file()
    }


def _lines(path: Path) -> list[str]:
    return path.read_text().split()


def _mat(content: dict) -> bytes:
    buffer = io.BytesIO()
    scipy.io.savemat(buffer, content)
    return buffer.getvalue()


def voc_archives(shapes: Path, work: Path) -> dict[str, tuple[bytes, str]]:
    """(bytes, what it unpacks to) of each VOC-side archive, from a shapes tree with a
    tune split: VOC's tar, SBD's tgz (its train list holds the tune images, so train_aug
    gains images, and its val list two VOC val images, which train_aug must drop), MCG's
    tgz of v5 and v7.3 files, and a weight file."""
    seg = shapes / "ImageSets" / "Segmentation"
    train, val, tune = (_lines(seg / f"{s}.txt") for s in ("train", "val", "tune"))
    voc = _tar(_tree(shapes, "VOCdevkit/VOC2012/"), compress=False)
    sbd_root = "benchmark_RELEASE/dataset/"
    sbd = {
        f"{sbd_root}train.txt": "".join(f"{i}\n" for i in tune + train[:2]).encode(),
        f"{sbd_root}val.txt": "".join(f"{i}\n" for i in val[:2]).encode(),
    }
    for image_id in tune + train[:2] + val[:2]:
        sbd[f"{sbd_root}img/{image_id}.jpg"] = (
            shapes / "JPEGImages" / f"{image_id}.jpg"
        ).read_bytes()
        labels = np.zeros((48, 48), np.uint8)
        gt = {
            "Segmentation": labels,
            "Boundaries": np.zeros((1, 1)),
            "CategoriesPresent": np.array([[1]]),
        }
        sbd[f"{sbd_root}cls/{image_id}.mat"] = _mat({"GTcls": gt})
        sbd[f"{sbd_root}inst/{image_id}.mat"] = _mat({"GTinst": gt})
    mcg = {}
    (work / "mcg").mkdir(parents=True, exist_ok=True)
    for n, image_id in enumerate(val):
        path = mcg_file(
            work / "mcg" / f"{image_id}.mat",
            proposals=30,
            superpixels=12,
            size=(48, 48),
            v73=n % 2 == 1,
            seed=n,
        )
        mcg[f"MCG-Pascal-Segmentation_trainvaltest_2012-proposals/{image_id}.mat"] = (
            path.read_bytes()
        )
    weights = b"not really resnet50 weights"
    return {
        "voc2012": (voc, "VOCdevkit/VOC2012"),
        "sbd": (_tar(sbd), "benchmark_RELEASE/dataset"),
        "mcg-voc2012": (_tar(mcg), "MCG-Pascal-Segmentation_trainvaltest_2012-proposals"),
        "weights": (weights, "weights/resnet50-rehearsal.pth"),
    }


def coco_archives(shapes: Path, work: Path) -> dict[str, tuple[bytes, str]]:
    """COCO 2014's three zips from a shapes tree's COCO files: category ids made
    non-contiguous, a polygon per image beside the RLE masks, a crowd annotation; and
    MCG-COCO's tgz."""
    remap = {1: 5, 2: 11, 3: 90}
    annotations = {}
    for split, coco in (("train", "train2014"), ("val", "val2014")):
        content = json.loads((shapes / "annotations" / f"instances_{split}.json").read_text())
        for category in content["categories"]:
            category["id"] = remap[category["id"]]
        extra = []
        for annotation in content["annotations"]:
            annotation["category_id"] = remap[annotation["category_id"]]
        for image in content["images"]:
            x, y = 2, 2
            extra.append(
                {
                    "id": 10_000 + image["id"],
                    "image_id": image["id"],
                    "iscrowd": 0,
                    "category_id": 5,
                    "segmentation": [[x, y, x + 6, y, x + 6, y + 6, x, y + 6]],
                    "area": 36.0,
                    "bbox": [x, y, 6, 6],
                }
            )
        crowd = dict(content["annotations"][0], id=20_000, iscrowd=1)
        content["annotations"] += [*extra, crowd]
        annotations[f"annotations/instances_{coco}.json"] = json.dumps(content).encode()
        annotations[f"{split}_files"] = [i["file_name"] for i in content["images"]]
    zips = {}
    for split, coco in (("train", "train2014"), ("val", "val2014")):
        zips[coco] = _zip(
            {
                f"{coco}/{f}": (shapes / "JPEGImages" / f).read_bytes()
                for f in annotations.pop(f"{split}_files")
            }
        )
    mcg = {}
    work.mkdir(parents=True, exist_ok=True)
    for n, image in enumerate(
        json.loads(annotations["annotations/instances_val2014.json"])["images"]
    ):
        stem = Path(image["file_name"]).stem
        path = mcg_file(work / f"{stem}.mat", proposals=20, superpixels=10, size=(48, 48), seed=n)
        mcg[f"MCG-COCO-val2014-proposals/{stem}.mat"] = path.read_bytes()
    return {
        "train2014": (zips["train2014"], "coco/train2014"),
        "val2014": (zips["val2014"], "coco/val2014"),
        "annotations": (_zip(annotations), "coco/annotations/instances_val2014.json"),
        "mcg-coco2014": (_tar(mcg), "coco/MCG-COCO-val2014-proposals"),
    }


def rehearsal_source(name: str, parts: list[tuple[str, bytes, str, str]]) -> Source:
    """A source of the given (file name, bytes, unpacking, provides) parts, checked by the
    MD5 and size of those bytes (the weight file by its SHA-256 prefix, as torchvision's)."""
    archives = []
    for filename, data, unpack, provides in parts:
        if unpack is None:
            checksum = "sha256-prefix:" + hashlib.sha256(data).hexdigest()[:8]
            size = None
        else:
            checksum, size = "md5:" + hashlib.md5(data).hexdigest(), len(data)
        into = provides.split("/")[0] if provides.startswith(("coco/", "weights/")) else "."
        archives.append(
            Archive(
                f"http://unreachable.invalid/{filename}", size, checksum, unpack, into, provides
            )
        )
    return Source(name, f"{name} (rehearsal)", tuple(archives))


def copy_configs(repo: Path, work: Path) -> None:
    """The shipped configs beside an empty data root, as a fresh clone has them."""
    shutil.copytree(repo / "ablations", work / "ablations")

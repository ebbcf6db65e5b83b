"""What a split's files hold, cheaply: content digests and check results cached per file.

Stage keys must change when the data does (a dataset regenerated at the same path, an
edited split list or annotation), yet a 20 GB image tree cannot be read at every start.
`FileIndex` keeps, per file, its (size, mtime_ns, inode) and the SHA-256 of its bytes,
and per image the result of its check (decoded size) with the signature of the files
the check read; a file whose stat is unchanged is not read again. `survey` checks a
split and digests it by role (docs/design.md, section 5, "Data in the keys"):

- `images`: the split's membership and its image files (what inference reads);
- `labels`: the files image-level labels come from (VOC XML, the COCO json);
- `masks`: the instance ground truth (SegmentationObject/Class PNGs, the COCO json).

Every role digest covers the split's ids (as read, after any limit), so editing a split
list changes all three.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prm_bench.atomic import write_atomic
from prm_bench.data.base import DataError, Dataset
from prm_bench.hashing import file_digest, json_digest

ROLES = ("images", "labels", "masks")
HEADER = "prm-bench file index 3\n"  # another first line: read as empty
SHORT = 12  # hex digits of each file's digest that a check records it was made from


def _stat(path: Path | str) -> str:
    """A file's (size, mtime_ns, inode) as one string: compared, never computed with."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err.strerror}") from None
    return f"{info.st_size}:{info.st_mtime_ns}:{info.st_ino}"


class FileIndex:
    """Content digests and check results, valid while a file's stat is unchanged,
    persisted at `path` (None: in memory only) as tab-separated lines, read back in well
    under a second for 100k images. Concurrent writers each replace the file atomically;
    the loser's new entries are recomputed next time, never trusted wrong."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.files: dict[str, tuple[str, str]] = {}  # path -> (stat, digest)
        self.checks: dict[str, tuple[str, list[int]]] = {}
        self.changed = False
        if path is not None and path.is_file():
            try:
                self._read(path.read_text())
            except (OSError, ValueError, IndexError, UnicodeDecodeError):
                self.files, self.checks = {}, {}  # a damaged index is rebuilt: it only saves work

    def _read(self, text: str) -> None:
        if not text.startswith(HEADER):
            return
        for line in text[len(HEADER) :].splitlines():
            kind, name, *values = line.split("\t")
            if kind == "F":
                stat, digest = values
                self.files[name] = (stat, digest)
            elif kind == "C":
                self.checks[name] = (values[0], [int(v) for v in values[1:]])
            else:
                raise ValueError(f"unknown index line {kind!r}")

    def known(self, path: Path | str, stat: str) -> str | None:
        """The stored digest of `path` when its stat is still `stat`, else None."""
        entry = self.files.get(str(path))
        return entry[1] if entry is not None and entry[0] == stat else None

    def digest(self, path: Path | str, stat: str | None = None) -> str:
        """The content digest of `path`, read only when its stat changed."""
        stat = stat or _stat(path)
        known = self.known(path, stat)
        if known is not None:
            return known
        digest = file_digest(Path(path))
        self.files[str(path)] = (stat, digest)
        self.changed = True
        return digest

    def checked(self, key: str, made_from: str) -> list[int] | None:
        """The stored check result of `key` when it was made from the same files."""
        known = self.checks.get(key)
        return known[1] if known is not None and known[0] == made_from else None

    def record(self, key: str, made_from: str, result: list[int]) -> None:
        """Store a check result and the (short) digests of the files it read."""
        self.checks[key] = (made_from, list(result))
        self.changed = True

    def save(self) -> None:
        """Write the index when anything changed."""
        if self.path is None or not self.changed:
            return
        lines = [HEADER]
        lines += [f"F\t{n}\t{stat}\t{d}\n" for n, (stat, d) in self.files.items()]
        lines += [
            "\t".join(["C", n, made, *map(str, result)]) + "\n"
            for n, (made, result) in self.checks.items()
        ]
        try:
            write_atomic(self.path, "".join(lines).encode())
        except OSError:
            return  # it only saves work: the next run checks again
        self.changed = False


def index_for(cache_dir: Path | None, root: Path) -> FileIndex:
    """The file index of the data under `root`, kept in `cache_dir` (None: in memory)."""
    if cache_dir is None:
        return FileIndex(None)
    name = json_digest(str(Path(root).resolve()), 16)
    return FileIndex(Path(cache_dir) / "data" / f"{name}.tsv")


@dataclass(frozen=True)
class SplitPrint:
    """A checked split: every image's (height, width) and a digest per role."""

    sizes: dict[str, tuple[int, int]]
    digests: dict[str, str]

    def of(self, *roles: str) -> str:
        """One digest of several roles."""
        return json_digest([self.digests[r] for r in roles])


def survey(dataset: Dataset, index: FileIndex, threads: int = 4) -> SplitPrint:
    """Check every image of a split, decoding only those whose files changed since the
    index saw them, and digest the split by role. The membership is the split's `ids`
    as read (after any limit), not its list file: lines past a limit change nothing.

    Raises:
        DataError: the first problem found, naming its file.
    """
    shared = dataset.split_files()
    shared_digests = {r: [index.digest(p) for p in shared.get(r, [])] for r in ROLES}
    every_check_read = "".join(d[:SHORT] for r in ROLES for d in shared_digests[r])
    kind = "segmentation" if getattr(dataset, "segmentation", False) else "labels"

    def opened(ids: list[str]) -> list[_Image]:  # a chunk: os.stat releases the GIL
        return [_Image(i, dataset.files(i)) for i in ids]

    def redo(image: _Image) -> None:
        image.size = list(dataset.check(image.id))
        image.digests = [index.digest(p, s) for p, s in zip(image.paths, image.stats, strict=True)]
        index.record(f"{image.id}|{kind}", image.made_from(every_check_read), image.size)

    chunks = [dataset.ids[i : i + 2000] for i in range(0, len(dataset.ids), 2000)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        images = [image for chunk in pool.map(opened, chunks) for image in chunk]
        stale = [image for image in images if not image.known(index, kind, every_check_read)]
        list(pool.map(redo, stale))
    running = {
        r: hashlib.sha256(json.dumps([dataset.ids, shared_digests[r]]).encode()) for r in ROLES
    }
    for image in images:
        lines = dict.fromkeys(ROLES, "")
        for role, digest in zip(image.roles, image.digests, strict=True):
            lines[role] += digest + " "
        for role in ROLES:
            running[role].update(lines[role].encode() + b"\n")
    digests = {r: h.hexdigest()[:16] for r, h in running.items()}
    sizes = {image.id: (image.size[0], image.size[1]) for image in images}
    return SplitPrint(sizes, digests)


class _Image:
    """One image of a survey: its files by role, their stats and digests, its size."""

    def __init__(self, image_id: str, files: dict[str, list[Path]]) -> None:
        self.id = image_id
        self.roles = [r for r in ROLES for _ in files.get(r, ())]
        self.paths = [str(p) for r in ROLES for p in files.get(r, ())]
        self.stats = [_stat(p) for p in self.paths]
        self.digests: list[str | None] = []
        self.size: list[int] = []

    def made_from(self, shared: str) -> str:
        """The short digests of what the image's check read."""
        return shared + "".join(d[:SHORT] for d in self.digests)

    def known(self, index: FileIndex, kind: str, shared: str) -> bool:
        """Whether the index knows every file and the check of this image as they are."""
        self.digests = [index.known(p, s) for p, s in zip(self.paths, self.stats, strict=True)]
        if None in self.digests:
            return False
        size = index.checked(f"{self.id}|{kind}", self.made_from(shared))
        self.size = size or []
        return size is not None

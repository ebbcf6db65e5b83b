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

import json
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from prm_bench.atomic import write_atomic
from prm_bench.data.base import DataError, Dataset
from prm_bench.hashing import file_digest, json_digest

ROLES = ("images", "labels", "masks")
FORMAT = 1  # of the index file; another format is read as empty


def _stat(path: Path) -> list[int]:
    try:
        info = os.stat(path)
    except OSError as err:
        raise DataError(f"{path} cannot be read: {err.strerror}") from None
    return [info.st_size, info.st_mtime_ns, info.st_ino]


class FileIndex:
    """Content digests and check results, valid while a file's stat is unchanged,
    persisted at `path` (None: in memory only). Concurrent writers each replace the file
    atomically; the loser's new entries are recomputed next time, never trusted wrong."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.files: dict[str, list] = {}
        self.checks: dict[str, list] = {}
        self.changed = False
        if path is not None and path.is_file():
            try:
                stored = json.loads(path.read_bytes())
                if stored.get("format") == FORMAT:
                    self.files, self.checks = stored["files"], stored["checks"]
            except (OSError, ValueError, KeyError, TypeError, AttributeError):
                pass  # a damaged index is rebuilt: it only saves work

    def digest(self, path: Path, stat: list[int] | None = None) -> str:
        """The content digest of `path`, read only when its stat changed."""
        stat = stat or _stat(path)
        known = self.files.get(str(path))
        if known is not None and known[:3] == stat:
            return known[3]
        digest = file_digest(path)
        self.files[str(path)] = [*stat, digest]
        self.changed = True
        return digest

    def checked(self, key: str, signature: str) -> list[int] | None:
        """The stored check result of `key` when the files it read are unchanged."""
        known = self.checks.get(key)
        return known[1] if known is not None and known[0] == signature else None

    def record(self, key: str, signature: str, result: list[int]) -> None:
        """Store a check result and the signature of the files it read."""
        self.checks[key] = [signature, result]
        self.changed = True

    def save(self) -> None:
        """Write the index when anything changed."""
        if self.path is not None and self.changed:
            text = json.dumps({"format": FORMAT, "files": self.files, "checks": self.checks})
            try:
                write_atomic(self.path, text.encode())
            except OSError:
                return  # it only saves work: the next run checks again
            self.changed = False


def index_for(cache_dir: Path | None, root: Path) -> FileIndex:
    """The file index of the data under `root`, kept in `cache_dir` (None: in memory)."""
    if cache_dir is None:
        return FileIndex(None)
    name = json_digest(str(Path(root).resolve()), 16)
    return FileIndex(Path(cache_dir) / "data" / f"{name}.json")


@dataclass(frozen=True)
class SplitPrint:
    """A checked split: every image's (height, width) and a digest per role."""

    sizes: dict[str, tuple[int, int]]
    digests: dict[str, str]

    def of(self, *roles: str) -> str:
        """One digest of several roles."""
        return json_digest([self.digests[r] for r in roles])


def _signature(stats: list[list[int]]) -> str:
    return format(zlib.crc32(json.dumps(stats).encode()), "08x") + str(len(stats))


def survey(dataset: Dataset, index: FileIndex, threads: int = 4) -> SplitPrint:
    """Check every image of a split, decoding only those whose files changed since the
    index saw them, and digest the split by role. The membership is the split's `ids`
    as read (after any limit), not its list file: lines past a limit change nothing.

    Raises:
        DataError: the first problem found, naming its file.
    """
    shared = dataset.split_files()
    shared_stats = {r: [_stat(p) for p in shared.get(r, [])] for r in ROLES}
    checked_by = [s for r in ROLES for s in shared_stats[r]]  # what every check reads
    kind = "segmentation" if getattr(dataset, "segmentation", False) else "labels"

    def one(image_id: str) -> tuple[tuple[int, int], dict[str, str]]:
        files = dataset.files(image_id)
        stats = {r: [_stat(p) for p in files.get(r, [])] for r in ROLES}
        signature = _signature([*(s for r in ROLES for s in stats[r]), *checked_by])
        key = f"{image_id}|{kind}"
        size = index.checked(key, signature)
        if size is None:
            size = list(dataset.check(image_id))
            index.record(key, signature, size)
        digests = {
            r: [index.digest(p, s) for p, s in zip(files.get(r, []), stats[r], strict=True)]
            for r in ROLES
        }
        return (size[0], size[1]), {r: json_digest(d) for r, d in digests.items()}

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, dataset.ids))
    split = {
        r: [index.digest(p, s) for p, s in zip(shared.get(r, []), shared_stats[r], strict=True)]
        for r in ROLES
    }
    digests = {r: json_digest([dataset.ids, split[r], [d[r] for _, d in results]]) for r in ROLES}
    sizes = {i: size for i, (size, _) in zip(dataset.ids, results, strict=True)}
    return SplitPrint(sizes, digests)

"""`prm-bench data fetch`: download, verify and unpack the sources of `data/sources.py`.

A download goes to `<name>.part` beside its target and resumes with an HTTP Range request
after an interruption; it is renamed only once its size and checksum hold. Archives
unpack with tarfile's `data` filter and a member check for zips, so nothing lands outside
the data root. A record in `<root>/.fetched/` says what was verified, so a second fetch
verifies that the files are in place and downloads nothing. `--from DIR` takes archives
already on disk (offline clusters); `--mirror URL` replaces the base URL of every file.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prm_bench.atomic import write_atomic
from prm_bench.data.base import DataError
from prm_bench.data.sources import Archive

CHUNK = 1 << 20
ATTEMPTS = 3  # per URL, each resuming the last
Progress = Callable[[str, int, int | None], None]  # (file name, bytes so far, total or None)


class FetchError(DataError):
    """A download or an archive that cannot be used; the message names the file or URL."""


@dataclass(frozen=True)
class FetchOptions:
    """Where a fetch gets its files from and how it reports.

    Attributes:
        mirror: a base URL replacing every archive's own (the file name is appended).
        from_dir: a folder holding the archives already (nothing is downloaded).
        keep: keep the archives after unpacking them (under `<root>/.downloads`).
        progress: called as bytes arrive.
        say: called with a line the user should read (trust on first use, reuse).
    """

    mirror: str | None = None
    from_dir: Path | None = None
    keep: bool = False
    progress: Progress | None = None
    say: Callable[[str], None] | None = None


def record_path(root: Path, archive: Archive) -> Path:
    """Where the record of a fetched archive is kept."""
    return Path(root) / ".fetched" / f"{archive.filename}.json"


def in_place(root: Path, archive: Archive) -> bool:
    """Whether the archive was fetched, verified and unpacked, and its files are there."""
    return bool(_recorded(root, archive)) and (Path(root) / archive.provides).exists()


def needed_bytes(root: Path, archive: Archive, options: FetchOptions) -> int | None:
    """Disk the archive still needs: the rest of its download, plus as much again to
    unpack it (None when its size is unpublished)."""
    if in_place(root, archive):
        return 0
    if archive.size is None:
        return None
    part = _part(root, archive)
    left = 0 if options.from_dir else archive.size - (part.stat().st_size if part.exists() else 0)
    return left + (archive.size if archive.unpack else 0)


def fetch_archive(root: Path, archive: Archive, options: FetchOptions) -> str:
    """Bring one archive into place under `root`: "in place" when a verified earlier
    fetch left it there, else "fetched".

    Raises:
        FetchError: not enough disk, every URL failed, a wrong size or checksum (the
            download is deleted and nothing is unpacked), an unsafe archive member.
    """
    root = Path(root)
    say = options.say or (lambda line: None)
    if in_place(root, archive):
        return "in place"
    _check_space(root, archive, options)
    if options.from_dir is not None:
        path = Path(options.from_dir) / archive.filename
        if not path.is_file():
            raise FetchError(f"--from {options.from_dir}: {archive.filename} is not there")
    else:
        path = _download(root, archive, options)
    digest = _verify(path, archive, root, say, delete=options.from_dir is None)
    destination = root / archive.into
    destination.mkdir(parents=True, exist_ok=True)
    if archive.unpack == "tar":
        _untar(path, destination)
    elif archive.unpack == "zip":
        _unzip(path, destination)
    elif path.parent != destination:
        shutil.copyfile(path, destination / archive.filename)
    record = {"file": archive.filename, "size": path.stat().st_size, "sha256": digest,
              "checksum": archive.checksum, "url": archive.url}  # fmt: skip
    # written last and atomically: a record is there only once everything it says is
    write_atomic(record_path(root, archive), (json.dumps(record, indent=1) + "\n").encode())
    if archive.unpack and options.from_dir is None and not options.keep:
        path.unlink()
    return "fetched"


def _part(root: Path, archive: Archive) -> Path:
    return _target(root, archive).with_name(archive.filename + ".part")


def _target(root: Path, archive: Archive) -> Path:
    folder = root / ".downloads" if archive.unpack else root / archive.into
    return folder / archive.filename


def _check_space(root: Path, archive: Archive, options: FetchOptions) -> None:
    needed = needed_bytes(root, archive, options)
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if needed is not None and needed > free:
        raise FetchError(
            f"{archive.filename} needs {needed / 1e9:.2f} GB under {root} and only "
            f"{free / 1e9:.2f} GB are free; free some space or choose another --root"
        )


def _urls(archive: Archive, mirror: str | None) -> list[str]:
    if mirror:
        return [f"{mirror.rstrip('/')}/{archive.filename}"]
    return [archive.url, *archive.mirrors]


def _download(root: Path, archive: Archive, options: FetchOptions) -> Path:
    target, part = _target(root, archive), _part(root, archive)
    if target.is_file():
        return target  # downloaded and renamed before an interrupted unpack
    part.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in _urls(archive, options.mirror):
        for _ in range(ATTEMPTS):  # a dropped connection resumes where it stopped
            try:
                _get(url, part, archive, options.progress)
            except urllib.error.HTTPError as err:
                failures.append(f"{url}: HTTP {err.code}")
                break  # the server answered: another try gets the same answer
            except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
                failures.append(f"{url}: {err}")
                continue
            os.replace(part, target)
            return target
    raise FetchError(
        f"could not download {archive.filename} ({'; '.join(failures)}); try --mirror URL "
        "or --from DIR with the file already on disk (a partial download is kept and resumed)"
    )


def _get(url: str, part: Path, archive: Archive, progress: Progress | None) -> None:
    """Download `url` into `part`, resuming from its current length with a Range request."""
    have = part.stat().st_size if part.exists() else 0
    if archive.size is not None and have == archive.size:
        return
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=60) as response:
        resumed = response.status == 206
        total = archive.size or _length(response, have if resumed else 0)
        with open(part, "ab" if resumed else "wb") as out:
            done = have if resumed else 0
            while chunk := response.read(CHUNK):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(archive.filename, done, total)
    if archive.size is not None and part.stat().st_size < archive.size:
        raise OSError(f"the connection closed at {part.stat().st_size} of {archive.size} bytes")


def _length(response: object, offset: int) -> int | None:
    length = response.headers.get("Content-Length")  # type: ignore[attr-defined]
    return int(length) + offset if length else None


def _verify(path: Path, archive: Archive, root: Path, say: Callable, delete: bool) -> str:
    """Check the size and checksum of a download (deleting it when wrong); its SHA-256."""
    size = path.stat().st_size
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(CHUNK):
            md5.update(block)
            sha256.update(block)
    kind, _, expected = (archive.checksum or _recorded(root, archive)).partition(":")
    actual = {"md5": md5.hexdigest(), "sha256": sha256.hexdigest()}
    wrong = None
    if archive.size is not None and size != archive.size:
        wrong = f"{size} bytes, expected {archive.size}"
    elif kind == "sha256-prefix" and not actual["sha256"].startswith(expected):
        wrong = f"SHA-256 {actual['sha256'][:8]}..., expected {expected}..."
    elif kind in actual and actual[kind] != expected:
        wrong = f"{kind.upper()} {actual[kind]}, expected {expected}"
    if wrong is not None:
        if delete:
            path.unlink()
        raise FetchError(
            f"{path} is corrupt ({wrong}); "
            + ("it was deleted, fetch again" if delete else "replace it")
        )
    if archive.checksum is None and not kind:
        say(f"{archive.filename}: no checksum is published; recorded its SHA-256 "
            f"{actual['sha256']} in {record_path(root, archive)}")  # fmt: skip
    return actual["sha256"]


def _recorded(root: Path, archive: Archive) -> str:
    """`sha256:<hex>` an earlier fetch recorded for an archive with no published
    checksum, or "" (the first fetch)."""
    try:
        return "sha256:" + json.loads(record_path(root, archive).read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return ""


def _untar(path: Path, destination: Path) -> None:
    try:
        with tarfile.open(path) as archive:
            archive.extractall(destination, filter="data")  # nothing outside, no devices
    except (tarfile.TarError, OSError) as err:
        raise FetchError(f"{path} cannot be unpacked safely: {err}") from err


def _unzip(path: Path, destination: Path) -> None:
    try:
        with zipfile.ZipFile(path) as archive:
            base = destination.resolve()
            for member in archive.namelist():
                if not (base / member).resolve().is_relative_to(base):
                    raise FetchError(f"{path}: member {member!r} would land outside {base}")
            archive.extractall(destination)
    except (zipfile.BadZipFile, OSError) as err:
        raise FetchError(f"{path} cannot be unpacked: {err}") from err

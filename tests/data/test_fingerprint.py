"""The file index and split surveys: content digests by role, files read again only when
their stat changes (DESIGN 5; issue 23: results tied to the data they came from)."""

import hashlib
import os
import shutil

import pytest
from PIL import Image

from prm_bench.data import fingerprint, open_dataset
from prm_bench.data.base import DataError
from prm_bench.data.fingerprint import FileIndex, survey
from prm_bench.data.voc import VocDataset
from prm_bench.hashing import file_digest


@pytest.fixture
def tree(shapes, tmp_path):
    root = tmp_path / "shapes"
    shutil.copytree(shapes, root)
    return root


def test_a_digest_is_the_sha256_of_the_bytes_and_is_read_once_while_the_stat_holds(
    tmp_path, monkeypatch
):
    path = tmp_path / "a.bin"
    path.write_bytes(b"prm" * 1000)
    assert file_digest(path) == hashlib.sha256(b"prm" * 1000).hexdigest()
    reads = []
    monkeypatch.setattr(fingerprint, "file_digest", lambda p: reads.append(p) or file_digest(p))
    index = FileIndex(tmp_path / "index.json")
    first = index.digest(path)
    assert index.digest(path) == first and len(reads) == 1
    index.save()
    again = FileIndex(tmp_path / "index.json")  # read back: nothing read again
    assert again.digest(path) == first and len(reads) == 1
    path.write_bytes(b"prn" * 1000)  # same size, new content (and mtime)
    assert again.digest(path) != first and len(reads) == 2


@pytest.mark.parametrize(
    "damage",
    [
        b"",
        b"{not json",
        fingerprint.HEADER.encode() + b"F\tpath\tnot-a-number\t1\t2\tabc\n",
        fingerprint.HEADER.encode() + b"F\ttoo-few\n",
        fingerprint.HEADER.encode() + b"X\tunknown\n",
        bytes(range(256)),
    ],
)
def test_a_damaged_index_is_rebuilt_not_trusted(tmp_path, damage):
    path = tmp_path / "a.bin"
    path.write_bytes(b"x")
    (tmp_path / "index.json").write_bytes(damage)
    index = FileIndex(tmp_path / "index.json")
    assert index.digest(path) == file_digest(path)
    index.save()
    assert FileIndex(tmp_path / "index.json").files[str(path)][1] == file_digest(path)


def counted_checks(monkeypatch) -> list[str]:
    calls: list[str] = []
    original = VocDataset.check
    monkeypatch.setattr(VocDataset, "check", lambda self, i: calls.append(i) or original(self, i))
    return calls


def test_a_second_survey_decodes_nothing_and_a_changed_file_is_checked_again(
    tree, tmp_path, monkeypatch
):
    calls = counted_checks(monkeypatch)
    dataset = open_dataset("shapes", tree, "val", segmentation=True)
    index = FileIndex(tmp_path / "index.json")
    first = survey(dataset, index)
    assert sorted(calls) == sorted(dataset.ids)
    index.save()
    calls.clear()
    again = survey(dataset, FileIndex(tmp_path / "index.json"))
    assert calls == [] and again == first
    mask = tree / "SegmentationObject" / f"{dataset.ids[1]}.png"
    Image.open(tree / "SegmentationObject" / f"{dataset.ids[0]}.png").save(mask)
    changed = survey(dataset, FileIndex(tmp_path / "index.json"))
    assert calls == [dataset.ids[1]]
    assert changed.digests["masks"] != first.digests["masks"]
    assert changed.digests["images"] == first.digests["images"]
    assert changed.digests["labels"] == first.digests["labels"]


def edit_xml(root, image_id):
    path = root / "Annotations" / f"{image_id}.xml"
    path.write_text(path.read_text().replace("</annotation>", "<!-- fixed --></annotation>"))


def edit_image(root, image_id):
    path = root / "JPEGImages" / f"{image_id}.jpg"
    with Image.open(path) as image:
        image.rotate(90).save(path, quality=90)


@pytest.mark.parametrize(
    ("edit", "changed"),
    [(edit_xml, {"labels"}), (edit_image, {"images"})],
    ids=["annotation", "image"],
)
def test_each_role_digest_follows_its_own_files(tree, edit, changed):
    dataset = open_dataset("shapes", tree, "val", segmentation=True)
    before = survey(dataset, FileIndex(None)).digests
    edit(tree, dataset.ids[0])
    after = survey(dataset, FileIndex(None)).digests
    assert {r for r in before if before[r] != after[r]} == changed


def test_the_split_membership_is_in_every_role_and_a_limit_hides_lines_past_it(tree):
    split = tree / "ImageSets" / "Segmentation" / "val.txt"
    full = open_dataset("shapes", tree, "val", segmentation=True)
    before = survey(full, FileIndex(None)).digests
    split.write_text("\n".join(full.ids[:-1]) + "\n")
    after = survey(open_dataset("shapes", tree, "val", segmentation=True), FileIndex(None))
    assert all(before[r] != after.digests[r] for r in before)
    limited = open_dataset("shapes", tree, "val", segmentation=True)
    limited.ids = limited.ids[:2]
    shorter = survey(limited, FileIndex(None)).digests
    split.write_text("\n".join(full.ids) + "\n")
    limited.ids = open_dataset("shapes", tree, "val").ids[:2]
    assert survey(limited, FileIndex(None)).digests == shorter


def test_a_file_that_vanished_is_named(tree):
    dataset = open_dataset("shapes", tree, "val")
    os.remove(tree / "Annotations" / f"{dataset.ids[0]}.xml")
    with pytest.raises(DataError, match=f"{dataset.ids[0]}.xml"):
        survey(dataset, FileIndex(None))

import hashlib
import json

import numpy as np
import pytest
import torch

from prm_bench.config import load_plan
from prm_bench.instances.proposals.embedded import embedded_proposals
from prm_bench.instances.retrieval import retrieve
from prm_bench.model.backbones import build_classifier, load_state_dict_file
from prm_bench.stages.infer import infer_image, pack_prms, unpack_prms
from prm_bench.stages.inputs import image_tensor
from prm_bench.stages.store import Store, load_npz, save_npz, write_atomic


def test_store_marks_done_only_with_intact_files(tmp_path):
    store = Store(tmp_path)
    folder = store.reset("train", "abc")
    write_atomic(folder / "model.bin", b"x" * 100)
    assert not store.is_done("train", "abc")
    store.complete("train", "abc", {"note": 1})
    assert store.is_done("train", "abc")
    entry = store.record("train", "abc")["files"]["model.bin"]
    assert entry["size"] == 100 and entry["sha256"] == hashlib.sha256(b"x" * 100).hexdigest()
    (folder / "model.bin").write_bytes(b"y" * 100)  # same size, other content
    assert not Store(tmp_path).is_done("train", "abc")
    (folder / "model.bin").write_bytes(b"x" * 100)
    assert Store(tmp_path).is_done("train", "abc")
    (folder / "model.bin").write_bytes(b"x" * 40)  # truncated
    assert not store.is_done("train", "abc")
    (folder / "model.bin").unlink()
    assert not store.is_done("train", "abc")
    assert not list(folder.glob(".*"))  # no temporary file left behind


def test_npz_round_trip_refuses_pickles(tmp_path):
    save_npz(tmp_path / "a.npz", x=np.arange(5), y=np.ones((2, 2), np.float16))
    loaded = load_npz(tmp_path / "a.npz")
    assert np.array_equal(loaded["x"], np.arange(5)) and loaded["y"].dtype == np.float16
    np.savez(tmp_path / "bad.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="allow_pickle"):
        load_npz(tmp_path / "bad.npz")


def test_packed_prms_are_close_and_sum_to_one():
    prms = torch.rand(3, 40, 30) ** 6
    prms = prms / prms.sum(dim=(1, 2), keepdim=True)
    values, scale = pack_prms(prms)
    assert values.dtype == np.float16 and values.max() <= 1.0
    restored = unpack_prms(values, scale)
    np.testing.assert_allclose(restored.sum(axis=(1, 2)), 1.0)
    np.testing.assert_allclose(restored, prms.numpy(), rtol=2e-3, atol=1e-9)
    empty_values, empty_scale = pack_prms(torch.zeros(0, 4, 4))
    assert unpack_prms(empty_values, empty_scale).shape == (0, 4, 4)


def test_retrieval_from_stored_prms_picks_what_fresh_prms_pick(tmp_path):
    from prm_bench.data.shapes import ShapesSpec, draw_image
    from prm_bench.model.backprop import peak_response_maps

    config = (
        load_plan({"infer": {"upsample": 2, "peak_filter": "none", "max_peaks": 6}}).cells[0].config
    )
    model = build_classifier("resnet10t", 5).eval()
    for index in range(3):
        image, *_ = draw_image(ShapesSpec(size=96), index)
        stored = infer_image(
            model, image, config.infer, config.stimulation, None, torch.device("cpu")
        )
        peaks = torch.as_tensor(stored["peaks"]).long()
        fresh = peak_response_maps(model, image_tensor(image, None), peaks, upsample=2).numpy()
        restored = unpack_prms(stored["prm_values"], stored["prm_scale"])
        proposals, _ = embedded_proposals(image)
        a = retrieve(fresh, stored["peaks"], stored["crm"], proposals, {})
        b = retrieve(restored, stored["peaks"], stored["crm"], proposals, {})
        assert [(i["proposal"], i["peaks"]) for i in a] == [(i["proposal"], i["peaks"]) for i in b]


def test_a_stage_missing_a_required_output_is_not_recorded_as_done(tmp_path):
    store = Store(tmp_path)
    folder = store.reset("evaluate", "k")
    with pytest.raises(FileNotFoundError, match=r"evaluate k did not write metrics\.json"):
        store.complete("evaluate", "k", required=["metrics.json"])
    assert not store.is_done("evaluate", "k")
    write_atomic(folder / "metrics.json", b"{}")
    store.complete("evaluate", "k", required=["metrics.json"])
    assert store.is_done("evaluate", "k")


def test_a_prepared_gallery_from_the_cache_scores_as_a_fresh_one(tmp_path):
    from prm_bench.data.shapes import ShapesSpec, draw_image
    from prm_bench.instances.gallery import prepare_gallery
    from prm_bench.instances.retrieval_options import RetrievalConfig
    from prm_bench.stages.retrieve import prepared_gallery

    image, *_ = draw_image(ShapesSpec(size=64), 1)
    proposals, _ = embedded_proposals(image)
    params = RetrievalConfig()
    calls = []

    def source():
        calls.append(1)
        return proposals

    path = tmp_path / "prepared" / "a.npz"
    first = prepared_gallery(path, source, (64, 64), params)
    again = prepared_gallery(path, source, (64, 64), params)
    assert len(calls) == 1 and again.key == first.key  # the second came from the file
    fresh = prepare_gallery(proposals, (64, 64), params)
    for name in ("masks", "contours"):
        for field in ("starts", "ends", "offsets"):
            assert np.array_equal(
                getattr(getattr(again, name), field), getattr(getattr(fresh, name), field)
            )
    assert np.array_equal(again.valid, fresh.valid)
    prms = np.random.default_rng(0).random((3, 64, 64))
    peaks = np.array([[0, 0, 1, 1], [0, 1, 2, 2], [0, 0, 3, 3]])
    crm = np.random.default_rng(1).random((1, 2, 4, 4))
    assert [i["proposal"] for i in retrieve(prms, peaks, crm, again, params)] == [
        i["proposal"] for i in retrieve(prms, peaks, crm, proposals, params)
    ]
    prepared_gallery(path, source, (32, 32), params)  # another PRM size: prepared anew
    assert len(calls) == 2
    path.write_bytes(b"garbage")  # an unreadable cache is prepared again
    assert prepared_gallery(path, source, (32, 32), params).size == (32, 32)
    assert len(calls) == 3


class _PidImages:
    """A split whose image i holds i in its red channel, a mark in the top-left pixel's
    green, and the pid of the process that decoded it in rows 1 and 2 of its blue."""

    def __init__(self) -> None:
        self.ids = [f"im{i}" for i in range(7)]

    def labels(self, image_id: str) -> np.ndarray:
        return np.zeros(2, dtype=np.float32)

    def image(self, image_id: str) -> np.ndarray:
        import os

        image = np.zeros((4, 6, 3), dtype=np.uint8)
        image[..., 0] = int(image_id[2:])
        image[0, 0, 1] = 255
        image[1, :, 2], image[2, :, 2] = divmod(os.getpid() % 65536, 256)
        return image


def test_one_loader_follows_its_plan_each_pass_with_the_same_workers():
    """The training loader is made once: each pass serves the plan set before it
    (flips included), the same as decoding in this process, and its worker processes
    persist from one epoch to the next."""
    from prm_bench.stages.inputs import BatchPlan as Plan
    from prm_bench.stages.inputs import ImageSplit, batches

    images = ImageSplit(_PidImages(), None)
    plan = Plan()
    loaders = {workers: batches(images, plan, workers) for workers in (0, 2)}
    passes = ([[(3, False), (1, True)], [(0, False), (4, True)]], [[(6, True), (2, False)]])
    pids = []
    for batches_of_pass in passes:
        plan.batches = batches_of_pass
        for workers, loader in loaders.items():
            served = list(loader)
            assert [b[:, 0, 0, 0].tolist() for b in served] == [
                [i for i, _ in batch] for batch in batches_of_pass
            ]
            assert [(b[:, 1, 0, -1] == 255).tolist() for b in served] == [
                [f for _, f in batch] for batch in batches_of_pass
            ]
            if workers:
                pids.append({int(b[k, 2, 1, 0]) + 256 * int(b[k, 2, 2, 0])
                             for b in served for k in range(len(b))})  # fmt: skip
    assert pids[1] <= pids[0] and len(pids[0]) == 2  # two workers, kept for the next pass


def test_streamed_training_equals_training_from_memory_whatever_the_workers(tmp_path, make_shapes):
    """Decoding batch by batch in 0 or 2 loader processes trains the same model as the
    whole split held in memory, with the same generator draws (order, then flips)."""
    from prm_bench.config.keys import stage_keys
    from prm_bench.stages import train
    from prm_bench.stages.inputs import (
        BatchPlan,
        ImageSplit,
        batches,
        normalise,
        open_training_data,
    )

    root = make_shapes(seed=4, n_train=12, n_val=4, size=48, classes=2)
    config = {
        "data": {"name": "shapes", "root": str(root)},
        "backbone": {"name": "test_resnet"},
        "train": {"epochs": 2, "batch_size": 5},
    }
    digests, logs = [], []
    for workers in (0, 2):
        cell = load_plan(config, [f"train.loader_workers={workers}"]).cells[0].config
        store = Store(tmp_path / f"w{workers}")
        folder = train.run(cell, store, stage_keys(cell), torch.device("cpu"))
        digests.append(hashlib.sha256((folder / train.CHECKPOINT).read_bytes()).hexdigest())
        entries = json.loads((folder / "log.json").read_text())
        logs.append([{k: v for k, v in e.items() if k != "seconds"} for e in entries])
    assert digests[0] == digests[1] and logs[0] == logs[1]
    assert (
        stage_keys(load_plan(config, ["train.loader_workers=2"]).cells[0].config)["train"]
        == stage_keys(load_plan(config).cells[0].config)["train"]
    )
    # the in-memory reference: every image decoded up front, the same draws
    cell = load_plan(config).cells[0].config
    train_set, _ = open_training_data(cell)
    split = ImageSplit(train_set, None)
    images = torch.stack([split[i] for i in range(len(split))])
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_classifier("test_resnet", 2).to(memory_format=torch.channels_last)
    optimizer = train._optimizer(model, cell.train)
    for _ in range(2):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for first in range(0, len(order), 5):
            index = order[first : first + 5]
            batch = images[index]
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(3)
            inputs = normalise(batch, model.spec).contiguous(memory_format=torch.channels_last)
            scores = train.class_scores(model(inputs).float(), "peak")
            loss = torch.nn.functional.multilabel_soft_margin_loss(scores, split.labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        train._scores(
            model,
            batches(split, BatchPlan([list(range(len(split)))])),
            cell.stimulation,
            torch.device("cpu"),
        )
    reference = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    folder = Store(tmp_path / "w0").path("train", stage_keys(cell)["train"])
    trained = load_state_dict_file(folder / train.CHECKPOINT)
    for name, value in reference.items():
        torch.testing.assert_close(trained[name], value, rtol=0, atol=0)

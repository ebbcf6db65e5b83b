import hashlib
import json

import pytest
import torch

from prm_bench.config import load_plan
from prm_bench.model.backbones import build_classifier, load_state_dict_file
from prm_bench.stages import train
from prm_bench.stages.store import Store


def test_streamed_training_equals_training_from_memory_whatever_the_workers(tmp_path, make_shapes):
    """Decoding batch by batch in 0 or 2 loader processes trains the same model as the
    whole split held in memory, with the same generator draws (order, then flips)."""
    from prm_bench.config.keys import stage_keys
    from prm_bench.model.catalogue import IMAGENET_MEAN, IMAGENET_STD
    from prm_bench.stages import train
    from prm_bench.stages.inputs import BatchPlan, ImageSplit, batches
    from prm_bench.stages.splits import open_training_data

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
        logs.append(
            [
                {k: v for k, v in e.items() if k not in ("seconds", "images_per_second")}
                for e in entries
            ]
        )
    assert digests[0] == digests[1] and logs[0] == logs[1]
    assert (
        stage_keys(load_plan(config, ["train.loader_workers=2"]).cells[0].config)["train"]
        == stage_keys(load_plan(config).cells[0].config)["train"]
    )
    # the in-memory reference: every image decoded up front, the same draws
    cell = load_plan(config).cells[0].config
    train_set, _ = open_training_data(cell.data)
    split = ImageSplit(train_set, None)
    images = torch.stack([split[i] for i in range(len(split))])
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    model = build_classifier("test_resnet", 2).to(memory_format=torch.channels_last)
    mean, std = (
        torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1),
        torch.tensor(IMAGENET_STD).view(1, 3, 1, 1),
    )
    optimizer = train._optimizer(model, cell.train)
    for _ in range(2):
        model.train()
        order = torch.randperm(len(images), generator=generator)
        for first in range(0, len(order), 5):
            index = order[first : first + 5]
            batch = images[index]
            flip = torch.rand(len(index), generator=generator) < 0.5
            batch[flip] = batch[flip].flip(3)
            # normalised by hand, outside the model, as the stages did before the
            # classifier normalised itself (issue 24 item 7): the same training
            inputs = (batch.float() / 255.0 - mean) / std
            (features,) = model.trunk(inputs.contiguous(memory_format=torch.channels_last))
            scores = train.class_scores(model.classifier(features).float(), "peak")
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


def train_config(root, epochs: int = 4) -> dict:
    return {
        "data": {"name": "shapes", "root": str(root)},
        "backbone": {"name": "test_resnet"},
        "train": {"epochs": epochs, "batch_size": 5},
    }


def trained(folder) -> tuple[bytes, list]:
    log = json.loads((folder / train.CHECKPOINT).with_name("log.json").read_text())
    kept = [{k: v for k, v in e.items() if k not in ("seconds", "images_per_second")} for e in log]
    return (folder / train.CHECKPOINT).read_bytes(), kept


CPU = torch.device("cpu")


def clean_training(tmp_path, make_shapes):
    """A 4-epoch training on a tiny tree, run once uninterrupted: its cell and result."""
    root = make_shapes(seed=4, n_train=12, n_val=4, size=48, classes=2)
    cell = load_plan(train_config(root)).cells[0]
    return cell, trained(train.run(cell.config, Store(tmp_path / "clean"), cell.keys, CPU))


def at_call(number: int, act):
    """`train.class_scores` that does `act()` at its `number`-th call (1-based)."""
    calls, original = {"n": 0}, train.class_scores

    def scores(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == number:
            act()
        return original(*args, **kwargs)

    return scores


def run_with(cell, store, scores) -> None:
    """Train the cell into `store` with `scores` in place of `train.class_scores`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "class_scores", scores)
        train.run(cell.config, store, cell.keys, CPU)


@pytest.mark.parametrize("stop", ["after epoch 1", "after epoch 2", "during epoch 3"])
def test_a_stopped_training_resumes_to_the_uninterrupted_model(tmp_path, make_shapes, stop):
    cell, clean = clean_training(tmp_path, make_shapes)
    store = Store(tmp_path / "stopped")
    # class scores are taken 4 times an epoch: 3 training batches, then the evaluation pass
    stop_at = {"after epoch 1": 5, "after epoch 2": 9, "during epoch 3": 10}[stop]

    def killed() -> None:  # the process dies at this call
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_with(cell, store, at_call(stop_at, killed))
    folder = store.path("train", cell.keys["train"])
    assert not store.is_done("train", cell.keys["train"])  # a partial state is no stage
    state = json.loads((folder / ".resume.json").read_text())
    assert state["epoch"] == int(stop.split()[-1]) - stop.startswith("during")
    events = (folder / train.EVENTS).read_text().splitlines()
    assert len(events) == state["epoch"]
    assert trained(train.run(cell.config, store, cell.keys, CPU)) == clean
    assert store.is_done("train", cell.keys["train"])
    assert not (folder / ".resume.json").exists() and not (folder / ".resume.safetensors").exists()
    assert len((folder / train.EVENTS).read_text().splitlines()) == 4


class Requeued(Exception):
    """What the scheduler's handler stands for here: the process stops to be requeued."""


@pytest.mark.parametrize("at_step", [1, 2])
def test_a_training_preempted_mid_epoch_saves_there_and_resumes_to_the_same_model(
    tmp_path, make_shapes, at_step
):
    """Issue 22 item 4: the preemption signal arrives during step `at_step` of epoch 2;
    the training saves its state after that whole step (the signal waits for it), the
    scheduler takes over, and the resumed training goes on from that step to the model
    an uninterrupted training gives, byte for byte."""
    from prm_bench import progress

    cell, clean = clean_training(tmp_path, make_shapes)
    store = Store(tmp_path / "preempted")

    def requeue() -> None:
        raise Requeued

    def signalled() -> None:  # 4 calls an epoch: 3 training batches, then evaluation
        progress.preemption_arrived(requeue)

    with pytest.raises(Requeued):
        run_with(cell, store, at_call(4 + at_step, signalled))
    folder = store.path("train", cell.keys["train"])
    state = json.loads((folder / ".resume.json").read_text())
    assert (state["epoch"], state["partial"]["epoch"], state["partial"]["step"]) == (1, 2, at_step)
    assert len(state["partial"]["losses"]) == at_step and len(state["partial"]["batches"]) == 3
    assert trained(train.run(cell.config, store, cell.keys, CPU)) == clean


def test_a_preemption_outside_a_training_is_handed_on_at_once_and_inside_it_waits():
    from prm_bench import progress

    handed: list[str] = []
    progress.preemption_arrived(lambda: handed.append("now"))
    assert handed == ["now"]
    with progress.deferring():
        progress.preemption_arrived(lambda: handed.append("deferred"))
        assert handed == ["now"]  # waits for a safe point
        progress.safe_point(lambda: handed.append("saved"))
        assert handed == ["now", "saved", "deferred"]  # saved first, then handed on
        progress.preemption_arrived(lambda: handed.append("late"))
    assert handed[-1] == "late"  # after the last step: handed on as the block ends


def test_tensorboard_scalars_are_read_back_by_tensorboard_s_own_reader(shapes, tmp_path):
    """Issue 22 item 3: `train.log_to: [tensorboard]` writes each epoch's scalars under
    runs/<name>/tensorboard/<train key>/, and is no part of the training key."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from prm_bench.config import load_plan
    from prm_bench.orchestrate.runner import RunOptions, run_plan
    from tests.conftest import small_config

    tree = small_config(shapes, train={"epochs": 2, "log_to": ["tensorboard"]})
    plan = load_plan(tree)
    assert (
        plan.cells[0].keys["train"]
        == load_plan(small_config(shapes, train={"epochs": 2})).cells[0].keys["train"]
    )
    summary = run_plan(plan.with_run(jobs=1), RunOptions(tmp_path))
    key = summary.plan.cells[0].keys["train"]
    events = [
        json.loads(line)
        for line in (tmp_path / plan.name / "store" / "train" / key / "events.jsonl")
        .read_text()
        .splitlines()
    ]
    reader = EventAccumulator(str(tmp_path / plan.name / "tensorboard" / key))
    reader.Reload()
    assert {"loss", "eval_classification_mAP", "lr", "images_per_second"} <= set(
        reader.Tags()["scalars"]
    )
    loss = reader.Scalars("loss")
    assert [s.step for s in loss] == [1, 2]
    assert [s.value for s in loss] == pytest.approx([e["loss"] for e in events], rel=1e-6)

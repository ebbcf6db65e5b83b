"""Training stage: a fully convolutional classifier from image-level labels only."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prm_bench import progress
from prm_bench.atomic import atomic_path, write_atomic
from prm_bench.config import ExperimentConfig, StimulationConfig, TrainConfig
from prm_bench.metrics.ap import average_precision, nan_mean
from prm_bench.model.backbones import build_classifier, save_checkpoint
from prm_bench.model.peaks import class_scores
from prm_bench.stages.errors import StageError
from prm_bench.stages.inputs import BatchPlan, ImageSplit, batches
from prm_bench.stages.resume import Resumed, clear_state, load_state, save_state
from prm_bench.stages.splits import open_training_data
from prm_bench.stages.store import Store, write_json

CHECKPOINT = "model.safetensors"
EVENTS = "events.jsonl"
EVAL_BATCH = 64  # images per batch when scoring the evaluation split


def classification_map(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over classes of the AP of ranking images by class score."""
    aps = [
        average_precision(scores[:, c], labels[:, c] > 0, int((labels[:, c] > 0).sum()))
        for c in range(labels.shape[1])
    ]
    return nan_mean(aps)


def _optimizer(model: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    groups = [
        {"params": list(model.classifier.parameters()), "lr": train.lr},
        {"params": list(model.trunk.parameters()), "lr": train.backbone_lr or train.lr},
    ]
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=train.momentum, weight_decay=train.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=train.weight_decay)


def _memory_format(train: TrainConfig) -> torch.memory_format:
    return torch.channels_last if train.channels_last else torch.contiguous_format


def _scores(
    model: torch.nn.Module,
    loader: Iterable[torch.Tensor],
    stimulation: StimulationConfig,
    device: torch.device,
) -> np.ndarray:
    """Class scores of every image a loader serves, in its plan's order."""
    model.eval()
    out = []
    with torch.no_grad():
        for batch in loader:
            maps = model(batch.to(device, non_blocking=True))  # uint8: the model normalises
            out.append(class_scores(maps, stimulation.name, **stimulation.options).float().cpu())
    return torch.cat(out).numpy()


def draw_plan(
    count: int, generator: torch.Generator, batch_size: int, flip: bool
) -> list[list[tuple[int, bool]]]:
    """An epoch's batches of (image index, flip): the order is drawn first, then each
    batch's flips in turn, from the one seeded generator."""
    order = torch.randperm(count, generator=generator).tolist()
    plan = []
    for first in range(0, count, batch_size):
        index = order[first : first + batch_size]
        flips = (torch.rand(len(index), generator=generator) < 0.5).tolist() if flip else None
        plan.append(list(zip(index, flips or [False] * len(index), strict=True)))
    return plan


@dataclass
class _Loop:
    """What every epoch of one training uses: the model and optimizer, the labels, the
    persistent loader and the plan it reads (set anew each epoch), and the device."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    labels: torch.Tensor
    loader: Iterable[torch.Tensor]
    plan: BatchPlan
    device: torch.device
    meter: progress.Meter | None = None
    # the epoch's whole plan, the losses of its steps a stopped run had done (a state
    # saved mid-epoch), and how to save such a state (epoch, steps done, their losses)
    epoch_batches: list = field(default_factory=list)
    carried: list[float] = field(default_factory=list)
    checkpoint: Callable[[int, int, list[float]], None] | None = None


def _epoch(loop: _Loop, train: TrainConfig, stimulation: StimulationConfig, epoch: int) -> float:
    """One pass over the training images in the order of `loop.plan`; the mean loss."""
    model, device = loop.model, loop.device
    model.train()
    autocast = train.amp  # bf16 on every device: one meaning under one training key
    losses, loop.carried = list(loop.carried), []  # a resumed epoch's steps so far
    steps, start, seen = len(losses) + len(loop.plan.batches), time.perf_counter(), 0
    batches = zip(loop.plan.batches, loop.loader, strict=True)
    for step, (items, batch) in enumerate(batches, start=len(losses)):
        index = [i for i, _ in items]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            inputs = batch.to(device, non_blocking=True)  # uint8: the model normalises
            maps = model(inputs.contiguous(memory_format=_memory_format(train)))
            scores = class_scores(maps.float(), stimulation.name, **stimulation.options)
        loss = F.multilabel_soft_margin_loss(scores, loop.labels[index].to(device))
        if not math.isfinite(loss.item()):
            raise StageError(
                f"training diverged: the loss is {loss.item()} at epoch {epoch}, step {step} "
                f"(lr {train.lr}); lower train.lr or check the data"
            )
        loop.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        loop.optimizer.step()
        losses.append(loss.item())
        seen += len(items)
        if loop.checkpoint is not None:  # a preemption saves the state here, then requeues
            progress.safe_point(lambda done=step + 1: loop.checkpoint(epoch, done, losses))
        if loop.meter is not None:
            pace = seen / max(time.perf_counter() - start, 1e-9)
            loop.meter.tick((epoch - 1) * steps + step + 1, f"epoch {epoch}/{train.epochs} "
                            f"batch {step + 1}/{steps} loss {np.mean(losses):.4f} "
                            f"{pace:.1f} images/s")  # fmt: skip
    return float(np.mean(losses))


def _announce(
    folder: Path, log: list[dict], training: tuple[str, TrainConfig, Resumed], scalars: Any
) -> None:
    """An epoch finished: its line in `events.jsonl`, the progress line (loss, pace, what
    is left) and, with `train.log_to: [tensorboard]`, its scalars."""
    key, train, resumed = training
    entry = log[-1]
    _write_events(folder, log)
    left = progress.eta(entry["seconds"] - resumed.seconds, entry["epoch"] - resumed.epoch,
                        train.epochs - resumed.epoch)  # fmt: skip
    progress.report(f"train {key} epoch {entry['epoch']}/{train.epochs} loss {entry['loss']:.4f} "
                    f"{entry['images_per_second']:.1f} images/s, left {left}")  # fmt: skip
    if scalars is not None:
        for name in ("loss", "eval_classification_mAP", "eval_label_accuracy", "lr",
                     "images_per_second"):  # fmt: skip
            scalars.add_scalar(name, entry[name], entry["epoch"])
        scalars.flush()


def scalar_writer(train: TrainConfig, store: Store, key: str) -> Any:
    """A TensorBoard writer under `<run dir>/tensorboard/<train key>/` when `train.log_to`
    asks for it (the store's parent is the run directory), else None."""
    if "tensorboard" not in train.log_to:
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(store.root.parent / "tensorboard" / key))


def _in_order(count: int) -> BatchPlan:
    """Batches of `EVAL_BATCH` images in split order (the evaluation pass of each epoch)."""
    return BatchPlan(
        [list(range(s, min(s + EVAL_BATCH, count))) for s in range(0, count, EVAL_BATCH)]
    )


def _write_events(folder: Path, log: list[dict]) -> None:
    """`events.jsonl`: a line per finished epoch, written as each one ends (whole, so a
    resumed training never holds an epoch twice)."""
    write_atomic(folder / EVENTS, "".join(json.dumps(e) + "\n" for e in log).encode())


def _plan_epoch(
    loop: _Loop, partial: dict | None, generator: torch.Generator, config: ExperimentConfig
) -> None:
    """The epoch's batches: drawn afresh, or the rest of those of a state saved mid-epoch
    (whose losses so far it carries)."""
    if partial is None:
        count, train = len(loop.labels), config.train
        loop.epoch_batches = draw_plan(count, generator, train.batch_size, train.flip)
        loop.plan.batches = loop.epoch_batches
    else:
        loop.epoch_batches, loop.carried = partial["batches"], list(partial["losses"])
        loop.plan.batches = partial["batches"][partial["step"] :]


def _model(config: ExperimentConfig, classes: int, device: torch.device) -> torch.nn.Module:
    """The classifier to train, on `device` in the training's memory format."""
    backbone = config.backbone
    return build_classifier(
        backbone.name,
        classes,
        pretrained=backbone.pretrained,
        weights=backbone.weights,
        output_stride=backbone.output_stride,
    ).to(device, memory_format=_memory_format(config.train))


def run(config: ExperimentConfig, store: Store, keys: dict[str, str], device: torch.device) -> Path:
    """Train one cell's classifier; writes `model.safetensors`, `log.json` and, as each
    epoch ends, `events.jsonl` and the state a stopped training resumes from (exactly:
    `stages/resume.py`). Images are decoded batch by batch (`train.loader_workers`
    processes ahead), never held whole."""
    key = keys["train"]
    folder = store.reset("train", key)
    train_set, eval_set = open_training_data(config.data)
    images = ImageSplit(train_set, config.data.image_size)
    eval_images = ImageSplit(eval_set, config.data.image_size)
    torch.manual_seed(config.train.seed)
    generator = torch.Generator().manual_seed(config.train.seed)
    model = _model(config, len(train_set.class_names), device)
    optimizer = _optimizer(model, config.train)
    labels = eval_images.labels.numpy()
    # one loader per split for the whole run: its workers (if any) persist across epochs
    workers, pin = config.train.loader_workers, device.type == "cuda"
    plan = BatchPlan()
    loop = _Loop(model, optimizer, images.labels, batches(images, plan, workers, pin), plan, device)
    eval_loader = batches(eval_images, _in_order(len(eval_images)), workers, pin)
    training = {"model": model, "optimizer": optimizer, "generator": generator}
    resumed = load_state(folder, training) or Resumed(0, [], 0.0)
    log, scalars = resumed.log, scalar_writer(config.train, store, key)
    start = time.perf_counter() - resumed.seconds
    label, steps = f"train {key}", -(-len(images) // config.train.batch_size)
    partial = resumed.partial or {"epoch": 0, "step": 0}

    def checkpoint(epoch: int, done: int, losses: list[float]) -> None:
        mid = {"epoch": epoch, "step": done, "batches": loop.epoch_batches, "losses": losses}
        save_state(folder, training, Resumed(epoch - 1, log, time.perf_counter() - start, mid))

    loop.checkpoint, first = checkpoint, resumed.epoch * steps + partial["step"]
    with progress.meter(label, config.train.epochs * steps, first) as meter, progress.deferring():
        loop.meter = meter
        for epoch in range(resumed.epoch + 1, config.train.epochs + 1):
            store.check()
            _plan_epoch(loop, partial if partial["epoch"] == epoch else None, generator, config)
            loss = _epoch(loop, config.train, config.stimulation, epoch)
            val = _scores(model, eval_loader, config.stimulation, device)
            seconds = time.perf_counter() - start
            log.append({
                "epoch": epoch, "loss": loss,
                "eval_classification_mAP": classification_map(val, labels),
                "eval_label_accuracy": float(((val > 0) == (labels > 0)).mean()),
                "seconds": seconds, "images_per_second": len(images) * epoch / seconds,
                "lr": optimizer.param_groups[0]["lr"],
            })  # fmt: skip
            _announce(folder, log, (key, config.train, resumed), scalars)
            if epoch < config.train.epochs:  # the last epoch's state is the model itself
                save_state(folder, training, Resumed(epoch, log, time.perf_counter() - start))
    with atomic_path(folder / CHECKPOINT) as tmp:
        save_checkpoint(model, tmp)
    write_json(folder / "log.json", log)
    clear_state(folder)
    if scalars is not None:
        scalars.close()
    info = {"classes": train_set.class_names, "seconds": time.perf_counter() - start,
            "device": device.type}  # fmt: skip
    store.complete("train", key, info, [CHECKPOINT, "log.json"])
    return folder

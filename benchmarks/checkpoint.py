"""What the per-epoch resume state costs a training (issue 22: < 3% of an epoch at
448 px): `stages.resume.save_state` of ResNet50 with its SGD momentum, against one
training epoch of VOC train_aug (10,582 images, batch 16), from a training step
measured in the same process on the same model."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import torch

from benchmarks.timing import timed
from prm_bench.model.backbones import build_classifier
from prm_bench.model.peaks import class_scores
from prm_bench.stages.resume import Resumed, clear_state, save_state

TRAIN_AUG = 10_582


def bench_checkpoint(
    device: torch.device, backbone: str, size: int, batch: int, repeats: int
) -> dict:
    """Seconds of one epoch state write against one projected epoch (steps x a measured
    step with peak stimulation x8)."""
    torch.manual_seed(0)
    model = build_classifier(backbone, 20).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=1e-4)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = (torch.rand(batch, 20, device=device) < 0.2).float()

    def step() -> None:
        optimizer.zero_grad()
        scores = class_scores(model(images), "peak", upsample=8)
        torch.nn.functional.multilabel_soft_margin_loss(scores, labels).backward()
        optimizer.step()

    step_seconds = timed(step, repeats, device)
    training = {"model": model, "optimizer": optimizer, "generator": torch.Generator()}
    log = [{"epoch": 1, "loss": 0.5}]
    with tempfile.TemporaryDirectory() as folder:
        save = lambda: save_state(Path(folder), training, Resumed(1, log, 1.0))  # noqa: E731
        save_seconds = timed(save, repeats, device)
        state_bytes = sum(f.stat().st_size for f in Path(folder).iterdir())
        clear_state(Path(folder))
    epoch_seconds = math.ceil(TRAIN_AUG / batch) * step_seconds
    return {
        "backbone": backbone,
        "image_size": size,
        "batch": batch,
        "state_mb": state_bytes / 2**20,
        "seconds": {
            "save_state": save_seconds,
            "train_step": step_seconds,
            "epoch_projected": epoch_seconds,
        },
        "overhead_checkpoint_over_epoch": save_seconds / epoch_seconds,
    }

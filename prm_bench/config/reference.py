"""The reference of every config key (docs/config.md): its type, default, bounds and
meaning, generated from the pydantic models; a test keeps the file equal to it and fails
when a key has no meaning here."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from prm_bench.config.models import ExperimentConfig, RunSettings

MEANINGS = {
    "data.name": "Dataset kind (`prm-bench list datasets`): `shapes`, `voc` or `coco`.",
    "data.root": "Dataset root; relative to the config file (on the command line: to the "
    "working directory).",
    "data.train_split": "Split (or list file) training reads image-level labels from.",
    "data.eval_split": "Split (or list file) inference, retrieval and metrics run on.",
    "data.image_size": "Side images are resized to (square) for training and inference; "
    "null keeps each image's size.",
    "data.limit_train": "Use only the first N training images.",
    "data.limit_eval": "Use only the first N evaluation images.",
    "data.leak": "`train-on-eval` also trains on the evaluation images, to measure that "
    "leak (the gap study); refused on the command line, marked in every report.",
    "data.generate": "Generate a generated kind (shapes) at `root` when it is absent.",
    "data.tune_split": "Held-out split `prm-bench tune` scores trials on (never the "
    "evaluation split).",
    "data.limit_tune": "Use only the first N tuning images.",
    "data.evaluate_on": "`eval`, or `tune` (what `prm-bench tune` sets on its trials).",
    "backbone.name": "Trunk (`prm-bench list backbones`, or `timm:<name>` for any timm CNN).",
    "backbone.pretrained": "Start from the trunk's ImageNet weights where they ship in a package.",
    "backbone.weights": "A local safetensors or torch state dict to start from.",
    "backbone.output_stride": "Dilate the last stages to this stride (ResNets: 8 or 16).",
    "stimulation.name": "Aggregation of class response maps into class scores in "
    "training (`prm-bench list stimulations`; `peak` is the paper's).",
    "stimulation.options": "Keyword options of the stimulation (e.g. `win_size`).",
    "train.optimizer": "`sgd` (the original demo's) or `adamw`.",
    "train.lr": "Learning rate of the classifier head.",
    "train.backbone_lr": "Learning rate of the trunk; null: the same as `lr`.",
    "train.momentum": "SGD momentum (AdamW keeps its own betas).",
    "train.weight_decay": "Weight decay.",
    "train.epochs": "Training epochs.",
    "train.batch_size": "Images per training batch.",
    "train.flip": "Random left-right flips in training.",
    "train.seed": "Seed of the initialisation, the batch order and the flips.",
    "train.amp": "bf16 autocast in training, the same on every device (refused where a "
    "device has no bf16).",
    "train.channels_last": "Channels-last memory for the convolutions (faster on the CPU; "
    "changes float sums, so part of the key).",
    "train.loader_workers": "Processes decoding the next batches (speed only, no key).",
    "train.log_to": "Also write each epoch's scalars to `tensorboard` (under "
    "`runs/<name>/tensorboard/<train key>/`; no key).",
    "infer.win_size": "Side of the window a peak is the maximum of (odd).",
    "infer.peak_filter": "Local maxima below the map's `median` (lower median), `mean`, "
    "`max` or a fixed number are dropped; `none` keeps all.",
    "infer.upsample": "Sub-pixel factor of peak finding and backpropagation (the "
    "original: 8 in training, 1 at inference).",
    "infer.class_threshold": "A class is predicted when its score is above this.",
    "infer.peak_threshold": "A peak is kept when its response is above this.",
    "infer.peak_threshold_mode": "`absolute` response value, or `relative` share of the "
    "map's maximum.",
    "infer.max_peaks": "Most peaks per image backpropagated into PRMs.",
    "infer.strategy": "How PRMs are computed: `batched` or `sequential` (equal results; no key).",
    "infer.chunk_size": "Peaks per batched backward (null: 1 on the CPU, 32 on CUDA).",
    "infer.max_memory_mb": "Working-memory budget (MiB) of one image's PRM pass: the chunk "
    "shrinks to fit it (null: no budget). Not keyed.",
    "proposals.gallery": "Where proposals come from (`prm-bench list galleries`).",
    "proposals.root": "Folder of a file gallery's `<image id><suffix>` files.",
    "method.name": "`prm`, or a CAM baseline (`prm-bench list methods`).",
    "method.baseline.cam_threshold": "CAM baselines: keep pixels at or above this share "
    "of the class map's maximum.",
    "method.baseline.class_threshold": "CAM baselines: a class is present at this score.",
    "method.baseline.min_area": "CAM baselines: smallest component kept (share of the image).",
    "retrieval.alpha": "Weight of the instance-aware term (the original: 0.8).",
    "retrieval.beta": "Weight of the class-aware term (the original: 1e-5).",
    "retrieval.bg_factor": "Background Q_c: where the class map is below this times its mean.",
    "retrieval.contour_width": "Side of the square of the contour (morphological gradient).",
    "retrieval.min_area": "Proposals smaller than this share of the image are not retrieved.",
    "retrieval.max_area": "Proposals at or above this share of the image are not retrieved.",
    "retrieval.top_n": "Proposals per image scored (best first).",
    "retrieval.nms_threshold": "IoU of the class-agnostic mask NMS; null: no NMS.",
    "retrieval.merge": "Merge a suppressed PRM into the instance that suppressed it.",
    "retrieval.resize_mode": "Class maps resized by float `bicubic`, or as the removed "
    "`scipy.misc.imresize` did (`legacy`).",
    "retrieval.confidence": "What ranks instances for AP: the `retrieval` score, the "
    "`class` score or the `peak` value.",
    "retrieval.terms": "Which retrieval terms are on (`prm-bench list terms`).",
    "retrieval.resolution": "Score at the `image`'s size, or at the network's `input` size "
    "(the original).",
    "eval.metrics": "Metrics computed (`prm-bench list metrics`).",
    "eval.iou_thresholds": "IoU thresholds of mAP^r.",
    "eval.use_07_metric": "VOC 2007's 11-point AP instead of the all-point one.",
    "eval.tolerance": "Pointing: a hit lies within this many pixels of an object (VOC: 18).",
    "eval.tolerance_reference": "Pointing: the tolerance is at this long-side size and "
    "scales with each image; null: plain pixels.",
    "eval.prm_threshold": "PRM quality: share of a PRM's mass that must fall on one object.",
    "run.name": "Run directory name (default: the config's stem, plus any --set overrides).",
    "run.device": "`auto`, `cpu` or `cuda`.",
    "run.jobs": "Tasks run in parallel per stage level.",
    "run.threads": "CPU threads of every task (results depend on it: recorded, fixed).",
    "run.executor": "`local` processes, `dask` or `slurm` (`prm-bench list executors`).",
    "run.scheduler": "Address of the dask scheduler.",
}


def keys() -> list[tuple[str, Any]]:
    """Every config key (`section.key`) with its pydantic field, in model order."""
    found: list[tuple[str, Any]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            inner = field.annotation
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                walk(inner, f"{prefix}{name}.")
            else:
                found.append((f"{prefix}{name}", field))

    walk(ExperimentConfig, "")
    walk(RunSettings, "run.")
    return found


def _default(field: Any) -> str:
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        value = field.default_factory()
    else:
        return "required"
    return "null" if value is None else f"`{value}`"


def _bounds(field: Any) -> str:
    parts = []
    for item in field.metadata:
        for name, sign in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(item, name, None) is not None:
                parts.append(f"{sign} {getattr(item, name)}")
    return ", ".join(parts)


def _type(field: Any) -> str:
    text = str(field.annotation).replace("typing.", "").replace("pathlib.", "")
    text = text.replace("<class '", "").replace("'>", "")
    if "Annotated[str" in text or "_registered_in" in text:
        return "str (registry name)"
    return text.replace("|", "\\|")


def reference_markdown() -> str:
    """docs/config.md: one table row per key.

    Raises:
        KeyError: a key without a meaning in `MEANINGS`.
    """
    lines = [
        "# Config keys",
        "",
        "Generated from the config models by `python -m prm_bench.config.reference` (a "
        "test keeps it current). Every key can be set in a config file or with "
        "`--set section.key=value`; `run.` keys apply to the whole run.",
        "",
        "| key | type | default | bounds | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for key, field in keys():
        meaning = MEANINGS[key]
        lines.append(f"| `{key}` | {_type(field)} | {_default(field)} | {_bounds(field)} | "
                     f"{meaning} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference_markdown(), end="")

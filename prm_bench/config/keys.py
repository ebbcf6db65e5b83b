"""Stage keys: which config fields each stage of a cell reads (docs/design.md, section 5).

A stage's output is stored under the hash of exactly what it depends on, so a grid that
varies retrieval trains and infers once. `load_plan` computes every cell's keys once;
the runner, `status` and the report read them from the cell (or the manifest).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from prm_bench.config.models import DataConfig, ExperimentConfig
from prm_bench.hashing import json_digest
from prm_bench.instances.methods import METHODS
from prm_bench.instances.proposals import GALLERIES

STAGES = ("train", "infer", "retrieve", "evaluate")

# data fields no trained model depends on: a new DataConfig field is part of the training
# key unless it is listed here
_NOT_TRAINING = {"generate", "tune_split", "limit_tune", "evaluate_on"}


@dataclass(frozen=True)
class DataDigests:
    """What a cell's stages read from disk, by content (`prm_bench.data.fingerprint`).

    Attributes:
        training: the training and evaluation splits' images and labels (training
            scores the evaluation split every epoch).
        images: the evaluated split's images (inference and computed proposals).
        truth: the evaluated split's labels and instance masks (evaluation, and
            galleries that read the ground truth).
        proposals: the proposal files a file gallery reads for the evaluated images.
    """

    training: str
    images: str
    truth: str
    proposals: str | None = None


def config_hash(*parts: BaseModel | dict | str) -> str:
    """Stable short hash of config pieces (their JSON), the key of a stage."""
    return json_digest(
        [p.model_dump(mode="json") if isinstance(p, BaseModel) else p for p in parts]
    )


def _training_data(data: DataConfig) -> dict:
    return {
        f: str(v) if f == "root" else v
        for f, v in data.model_dump(mode="json").items()
        if f not in _NOT_TRAINING and not (f == "leak" and v == "none")  # keys as before it
    }


def _evaluated_data(data: DataConfig) -> dict:
    split, limit = data.evaluated
    return {"name": data.name, "root": str(data.root), "eval_split": split, "limit_eval": limit}


def computed_proposals_key(data: DataConfig) -> str:
    """The store key of the proposals computed from a dataset's images (`store_cache`
    galleries such as `embedded`): one per dataset, shared by every gallery built on them,
    every split and every limit."""
    return config_hash("computed", {"name": data.name, "root": str(data.root)})


def _data_parts(config: ExperimentConfig, data: DataDigests | None) -> dict[str, list[str]]:
    """The data digests each stage key adds (none for a key of the config alone)."""
    if data is None:
        return {"train": [], "infer": [], "proposals": [], "evaluate": []}
    truth = data.truth if GALLERIES.get(config.proposals.gallery).needs_truth else ""
    return {
        "train": [data.training],
        "infer": [data.images],
        "proposals": [data.images, data.proposals or "", truth],
        "evaluate": [data.truth],
    }


def stage_keys(config: ExperimentConfig, data: DataDigests | None = None) -> dict[str, str]:
    """The key of every stage of a cell; each hashes only what the stage depends on: its
    config fields and, with `data` (every run binds it, `orchestrate.preflight`), the
    content of the files it reads. Without `data` the keys name the config alone."""
    reads = _data_parts(config, data)
    training = config.train.model_dump(mode="json", exclude={"loader_workers", "log_to"})
    train = config_hash(
        "train",
        _training_data(config.data),
        config.backbone,
        config.stimulation,
        training,
        *reads["train"],
    )
    # the PRM strategy, chunk and budget change speed, not results (equal to 1e-6): unkeyed
    infer_part = config.infer.model_dump(
        mode="json", exclude={"strategy", "chunk_size", "max_memory_mb"}
    )
    if config.data.evaluate_on == "eval":  # the train key already names the eval split
        infer = config_hash("infer", train, infer_part)
    else:
        infer = config_hash(
            "infer", train, infer_part, _evaluated_data(config.data), *reads["infer"]
        )
    proposals = config_hash(
        "proposals", _evaluated_data(config.data), config.proposals, *reads["proposals"]
    )
    uses_retrieval = METHODS.get(config.method.name).uses_retrieval
    method_part = config.retrieval if uses_retrieval else config.method.baseline
    retrieve = config_hash("retrieve", infer, proposals, config.method.name, method_part)
    evaluate = config_hash("evaluate", retrieve, config.eval, *reads["evaluate"])
    return {
        "train": train,
        "infer": infer,
        "proposals": proposals,
        "retrieve": retrieve,
        "evaluate": evaluate,
    }

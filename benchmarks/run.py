"""Speed benchmarks of the PRM core; `nox -s bench` or `python -m benchmarks.run`.

Each benchmark measures the compared variants side by side in one process, on the same
model and inputs, and writes absolute times, their ratio and machine information to
`benchmarks/results/<name>.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from benchmarks.checkpoint import bench_checkpoint
from benchmarks.integrity import bench_integrity, bench_preflight_cache
from benchmarks.prm import bench_prm_against_original
from benchmarks.proposals import bench_mcg
from benchmarks.retrieval import bench_evaluation, bench_retrieval
from benchmarks.retrieve_level import bench_retrieve_level
from benchmarks.runner import bench_rerun
from benchmarks.streaming import bench_streaming
from benchmarks.timing import timed
from prm_bench.model.backbones import build_classifier
from prm_bench.model.peaks import class_scores

RESULTS = Path(__file__).parent / "results"


def machine() -> dict:
    """Where the numbers were measured."""
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def bench_train_step(
    device: torch.device, backbone: str, size: int, batch: int, upsample: int, repeats: int
) -> dict:
    """One SGD step with peak stimulation against the same step with GAP."""
    torch.manual_seed(0)
    model = build_classifier(backbone, 20).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    images = torch.randn(batch, 3, size, size, device=device)
    labels = (torch.rand(batch, 20, device=device) < 0.2).float()
    options = {"peak": {"upsample": upsample}, "gap": {}}

    def step(stimulation: str) -> None:
        optimizer.zero_grad()
        scores = class_scores(model(images), stimulation, **options[stimulation])
        torch.nn.functional.multilabel_soft_margin_loss(scores, labels).backward()
        optimizer.step()

    seconds = {name: timed(lambda n=name: step(n), repeats, device) for name in ("peak", "gap")}
    return {
        "backbone": backbone,
        "image_size": size,
        "batch": batch,
        "upsample": upsample,
        "seconds": seconds,
        "overhead_peak_over_gap": seconds["peak"] / seconds["gap"] - 1.0,
    }


def bench_cli_start(repeats: int) -> dict:
    """Wall time in a fresh process of the commands that plan or look (`--help`,
    `--version`, `list`, `run ablations/quick.yaml --dry-run` on a fresh tree), against a
    bare `python -c pass` and against importing torch and timm, which every command paid
    before the CLI loaded them only to compute (issue 24 item 4)."""
    import shutil
    import subprocess
    import sys
    import tempfile
    import time

    def best(command: list[str]) -> float:
        times = []
        for _ in range(max(repeats, 3)):
            start = time.perf_counter()
            subprocess.run(command, capture_output=True, check=True)
            times.append(time.perf_counter() - start)
        return min(times)

    cli = [sys.executable, "-m", "prm_bench"]
    with tempfile.TemporaryDirectory() as fresh:  # no data/ there: the dry run generates nothing
        shutil.copytree(Path(__file__).parents[1] / "ablations", Path(fresh) / "ablations")
        dry = [*cli, "run", f"{fresh}/ablations/quick.yaml", "--dry-run", "--runs-dir", fresh]
        seconds = {
            "help": best([*cli, "--help"]),
            "version": best([*cli, "--version"]),
            "list": best([*cli, "list"]),
            "dry_run_quick": best(dry),
            "python_alone": best([sys.executable, "-c", "pass"]),
            "import_torch_timm": best([sys.executable, "-c", "import torch, timm"]),
        }
    targets = {"help_under_1s": seconds["help"] < 1.0,
               "dry_run_quick_under_3s": seconds["dry_run_quick"] < 3.0}  # fmt: skip
    return {
        "label": "prm-bench --help",
        "seconds": seconds,
        "overhead_help_over_python": seconds["help"] - seconds["python_alone"],
        "targets_met": targets,
        "ratio_torch_import_over_help": seconds["import_torch_timm"] / seconds["help"],
    }


def main() -> None:
    """Run the benchmarks and write one JSON per benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", nargs="*", help="benchmark names to run (default: all)")
    args = parser.parse_args()
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    args.out.mkdir(parents=True, exist_ok=True)

    r = args.repeats
    benchmarks = {
        "stage_reuse": ("only retrieve + evaluate run; speedup >= 20", lambda: [bench_rerun()]),
        "prm_batched": (
            "sequential and batched >= 1.1x the original's algorithm at 448 px (ResNet50); "
            "batched >= sequential everywhere; PRMs equal to the original's",
            lambda: [
                bench_prm_against_original(device, backbone, size, 8, 8, r)
                for backbone in ("resnet50", "vgg16")
                for size in (128, 256, 448)
            ],
        ),
        "train_step_peak": (
            "overhead <= 0.10",
            lambda: [
                bench_train_step(device, "resnet18", 224, 8, 1, r),
                bench_train_step(device, "resnet18", 224, 8, 8, r),
            ],
        ),
        "retrieval": (
            "against the original's algorithm (its instance_seg, OpenCV contours): "
            "speedup >= 20 with gallery preparation, >= 100 with a prepared gallery",
            lambda: [bench_retrieval(448, 8, 100, r)],
        ),
        "retrieve_level": (
            "full.yaml's retrieve level (9 term subsets x 3 confidences, 400 images): "
            "one pass for all cells against a task per cell, identical results",
            lambda: [bench_retrieve_level()],
        ),
        "evaluation": ("report (1,449 images, 20 predictions each)", lambda: [bench_evaluation()]),
        "training_data": (
            "streamed training data: peak RSS < 2 GB for 10k images at 448 px",
            lambda: [bench_streaming()],
        ),
        "mcg_read": (
            "an MCG-size file (5,000 proposals, 800 superpixels, 500 x 375), v5 and v7.3: "
            "its top 100 in <= 1 s and <= 300 MB peak RSS, against building every mask",
            lambda: bench_mcg(),
        ),
        "integrity": (
            "cost of preflight (10k VOC-size images) and of verifying VOC val's PRMs",
            lambda: [bench_integrity()],
        ),
        "checkpoint": (
            "the per-epoch resume state < 3% of a train_aug epoch at 448 px (ResNet50, "
            "batch 16, peak stimulation x8)",
            lambda: [bench_checkpoint(device, "resnet50", 448, 16, 1 if r < 3 else r // 3)],
        ),
        "cli_start": (
            "prm-bench --help under 1 s, a fresh quick.yaml dry run under 3 s (no torch)",
            lambda: [bench_cli_start(r)],
        ),
        "preflight_cache": (
            "a 100k-image tree: second check (nothing changed) < 5 s; the first "
            "fingerprint of COCO 2014's images at the measured SHA-256 rate",
            lambda: [bench_preflight_cache()],
        ),
    }
    results = (
        (title, {"target": target, "runs": make()})
        for title, (target, make) in benchmarks.items()
        if not args.only or title in args.only
    )
    for title, result in results:
        result["device"] = str(device)
        result["machine"] = machine()
        (args.out / f"{title}_{device.type}.json").write_text(json.dumps(result, indent=2))
        print(f"{title} ({device}): {result['target']}")
        for run in result["runs"]:
            ratio = {
                k: float(f"{v:.3g}")
                for k, v in run.items()
                if k.startswith(("speedup", "overhead"))
            }
            times = {k: round(v, 4) for k, v in run.get("seconds", {}).items()}
            size = f"{run['image_size']}px" if "image_size" in run else ""
            label = run.get("label") or f"{run.get('backbone', '')} {size}".strip()
            print(f"  {label}: {ratio} seconds={times}")


if __name__ == "__main__":
    main()

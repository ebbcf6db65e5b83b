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
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.integrity import bench_integrity
from benchmarks.retrieval import bench_evaluation, bench_retrieval
from benchmarks.runner import bench_rerun
from prm_bench.backbones import build_classifier
from prm_bench.backprop import peak_response_maps
from prm_bench.peaks import class_scores, find_peaks

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


def timed(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    """Median seconds of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_prm(device: torch.device, backbone: str, size: int, peaks: int, repeats: int) -> dict:
    """Batched PRMs against one backward per peak (the original code's loop)."""
    torch.manual_seed(0)
    model = build_classifier(backbone, 20).to(device).eval()
    image = torch.randn(1, 3, size, size, device=device)
    with torch.no_grad():
        maps = model(image)
    found = find_peaks(maps, peak_filter="none")
    chosen = found[torch.randperm(len(found))[:peaks]].to(device)
    seconds = {
        strategy: timed(
            lambda s=strategy: peak_response_maps(model, image, chosen, strategy=s), repeats, device
        )
        for strategy in ("batched", "sequential")
    }
    return {
        "backbone": backbone,
        "image_size": size,
        "peaks": len(chosen),
        "seconds": seconds,
        "speedup_batched_over_sequential": seconds["sequential"] / seconds["batched"],
    }


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


def main() -> None:
    """Run the benchmarks and write one JSON per benchmark."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = torch.device("cpu" if name == "auto" else name)
    args.out.mkdir(parents=True, exist_ok=True)

    prm = {
        "target": "speedup >= 1.5 (ResNet50, 448 px, 8 peaks)",
        "runs": [
            bench_prm(device, "resnet50", 448, 8, args.repeats),
            bench_prm(device, "resnet50", 128, 8, args.repeats),
            bench_prm(device, "resnet18", 128, 8, args.repeats),
        ],
    }
    train = {
        "target": "overhead <= 0.10",
        "runs": [
            bench_train_step(device, "resnet18", 224, 8, 1, args.repeats),
            bench_train_step(device, "resnet18", 224, 8, 8, args.repeats),
        ],
    }
    retrieval = {
        "target": "speedup >= 20 with gallery preparation, >= 100 with a prepared gallery",
        "runs": [bench_retrieval(448, 8, 100, args.repeats)],
    }
    evaluation = {
        "target": "report (1,449 images, 20 predictions each)",
        "runs": [bench_evaluation()],
    }
    reuse = {"target": "only retrieve + evaluate run; speedup >= 20", "runs": [bench_rerun()]}
    integrity = {
        "target": "cost of preflight (10k VOC-size images) and of verifying VOC val's PRMs",
        "runs": [bench_integrity()],
    }
    results = (
        ("stage_reuse", reuse),
        ("prm_batched", prm),
        ("train_step_peak", train),
        ("retrieval", retrieval),
        ("evaluation", evaluation),
        ("integrity", integrity),
    )
    for title, result in results:
        result["device"] = str(device)
        result["machine"] = machine()
        (args.out / f"{title}_{device.type}.json").write_text(json.dumps(result, indent=2))
        print(f"{title} ({device}): {result['target']}")
        for run in result["runs"]:
            ratio = {
                k: round(v, 3) for k, v in run.items() if k.startswith(("speedup", "overhead"))
            }
            times = {k: round(v, 4) for k, v in run["seconds"].items()}
            label = f"{run.get('backbone', '')} {run['image_size']}px".strip()
            print(f"  {label}: {ratio} seconds={times}")


if __name__ == "__main__":
    main()

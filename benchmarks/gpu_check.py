"""The prepared GPU check (`nox -s gpu`), one short call on a lent GPU, or its CPU dry
path (`python -m benchmarks.gpu_check --dry`, run by the test suite):

1. a tiny grid trained once on the CPU, then inferred, retrieved and evaluated on the
   device and on the CPU from the same checkpoint: every metric within `TOLERANCE`, and
   the stored PRMs within `PRM_TOLERANCE`;
2. the PRM, retrieval and training-step benchmarks on the device, as JSON under
   `benchmarks/results/` (`--dry`: one small PRM case only);
3. one ResNet50 and one VGG16 training epoch's per-image cost at 448 px, batch 16, and
   the inference of 100 VOC-size images, and from them the projected wall time of
   voc2012.yaml and of full.yaml on this device (`benchmarks.projection`; `--dry`: a
   small resnet10t measurement, which exercises the code, not a projection to trust);
4. the per-epoch resume state's cost against one such epoch (`benchmarks.checkpoint`).

The CUDA-marked tests run before it in `nox -s gpu`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.checkpoint import bench_checkpoint
from benchmarks.prm import bench_prm_against_original
from benchmarks.projection import measure, project
from benchmarks.retrieval import bench_retrieval
from benchmarks.run import RESULTS, bench_train_step, machine
from prm_bench.config import load_plan
from prm_bench.data.shapes import ShapesSpec, generate_shapes
from prm_bench.orchestrate.preflight import bind_data
from prm_bench.orchestrate.runner import RunOptions, run_plan
from prm_bench.stages.infer import read_image
from prm_bench.stages.store import Store

TOLERANCE = 0.5  # metric points (metrics are percentages): a flipped peak or proposal
ABLATIONS = Path(__file__).parents[1] / "ablations"
PRM_TOLERANCE = 1e-4  # largest PRM value difference (PRMs sum to 1 over the image)


def grid_on(device: str, folder: Path) -> dict:
    """The tiny grid on `device` against the CPU, both from one CPU-trained checkpoint."""
    spec = ShapesSpec(n_train=48, n_val=8, n_tune=0, size=64, classes=3, seed=4)
    root = generate_shapes(folder / "shapes", spec, jobs=1)
    config = {
        "data": {"name": "shapes", "root": str(root)},
        "backbone": {"name": "resnet10t"},
        "train": {"epochs": 1, "batch_size": 8},
        "infer": {"upsample": 2, "max_peaks": 6},
        "eval": {"metrics": ["voc-map", "abo", "pointing", "prm-quality"]},
        "grid": {"retrieval.terms": ["full", "no-class"]},
    }
    plan = bind_data(load_plan(config))
    cpu = run_plan(plan.with_run(jobs=1, device="cpu"), RunOptions(folder / "cpu"))
    train_key = plan.cells[0].keys["train"]
    trained = Store(folder / "cpu" / plan.name / "store").path("train", train_key)
    shutil.copytree(trained, Store(folder / "dev" / plan.name / "store").path("train", train_key))
    start = time.perf_counter()
    dev = run_plan(plan.with_run(jobs=1, device=device), RunOptions(folder / "dev"))
    seconds = time.perf_counter() - start
    assert dev.executed["train"] == 0, "the device run must reuse the CPU's checkpoint"
    infer_key = plan.cells[0].keys["infer"]
    inferred = [Store(folder / side / plan.name / "store").path("infer", infer_key)
                for side in ("cpu", "dev")]  # fmt: skip
    return {
        "device": device,
        **compare_runs(cpu.results, dev.results, inferred),
        "seconds_infer_retrieve_evaluate": seconds,
    }


def compare_runs(cpu: pd.DataFrame, dev: pd.DataFrame, inferred: list[Path]) -> dict:
    """How far the device run is from the CPU run: the largest metric difference (cells
    matched by cell and metric) and the largest stored PRM difference (infinite where an
    image has another number of peaks), and whether both are within the tolerances."""
    merged = cpu.merge(dev, on=["cell", "metric"], suffixes=("_cpu", "_dev"))
    differences = (merged["value_cpu"] - merged["value_dev"]).abs()
    prm_difference = 0.0
    for path in sorted(inferred[0].glob("*.npz")):
        cpu_prms, dev_prms = (read_image(f, path.stem)["prms"] for f in inferred)
        if cpu_prms.shape != dev_prms.shape:  # another number of peaks
            prm_difference = float("inf")
        else:
            prm_difference = max(prm_difference, float(np.abs(cpu_prms - dev_prms).max(initial=0)))
    return {
        "metrics": len(merged),
        "max_metric_difference": float(differences.max()),
        "max_prm_difference": prm_difference,
        "within_tolerance": bool(differences.max() <= TOLERANCE)
        and prm_difference <= PRM_TOLERANCE,
        "differences": merged[differences > 0][
            ["cell", "metric", "value_cpu", "value_dev"]
        ].to_dict("records"),
    }


def projections(device: torch.device, dry: bool) -> dict:
    """Per-image timings on `device` and the projected wall time of voc2012.yaml and
    full.yaml from them."""
    backbones = ("resnet10t",) if dry else ("resnet50", "vgg16")
    timings = measure(device, backbones, 2 if dry else 100, 64 if dry else 448, 4 if dry else 16)
    if dry:  # stand the small model in for the projection's reference backbone
        timings["resnet50"] = timings["resnet10t"]
    timings["vgg16_bn"] = timings.get("vgg16", timings["resnet50"])
    plans = [load_plan(ABLATIONS / f"{name}.yaml") for name in ("voc2012", "full")]
    return {"timings": timings, "plans": [project(plan, timings) for plan in plans]}


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit 1 if the device disagrees with the CPU."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dry", action="store_true", help="CPU only, small (CI)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (use --dry for the CPU path)", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry else "cuda")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        grid = grid_on(device.type, Path(folder))
    print(f"grid on {device.type} vs cpu: max metric difference "
          f"{grid['max_metric_difference']:.3g} (tolerance {TOLERANCE}), max PRM difference "
          f"{grid['max_prm_difference']:.3g} (tolerance {PRM_TOLERANCE})")  # fmt: skip
    cases = [("resnet10t", 64)] if args.dry else [
        (b, s) for b in ("resnet50", "vgg16") for s in (128, 256, 448)
    ]  # fmt: skip
    repeats = 1 if args.dry else 3
    report = {
        "device": str(device),
        "machine": machine(),
        "grid": grid,
        "prm": [bench_prm_against_original(device, b, s, 8, 8, repeats) for b, s in cases],
    }
    if not args.dry:
        report["retrieval"] = bench_retrieval(448, 8, 100, 3)
        report["train_step_peak"] = [
            bench_train_step(device, "resnet50", 448, 16, u, 3) for u in (1, 8)
        ]
        report["checkpoint"] = bench_checkpoint(device, "resnet50", 448, 16, 3)
    report["projection"] = projections(device, args.dry)
    for plan in report["projection"]["plans"]:
        print(f"projected {plan['plan']}: {plan['total_hours']:.1f} h on {device.type} "
              f"({', '.join(f'{k} {v:.1f} h' for k, v in plan['hours'].items())})")  # fmt: skip
    name = "gpu_check_dry.json" if args.dry else "gpu_check_cuda.json"
    (args.out / name).write_text(json.dumps(report, indent=2))
    for run in report["prm"]:
        ratios = {k: round(v, 2) for k, v in run.items() if k.startswith("speedup")}
        print(f"PRMs {run['backbone']} {run['image_size']} px: {ratios}")
    print(f"wrote {args.out / name}")
    return 0 if grid["within_tolerance"] else 1


if __name__ == "__main__":
    raise SystemExit(main())

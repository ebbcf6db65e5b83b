"""Developer sessions: `nox -s tests`, `nox -s lint`, `nox -s demo`, `nox -s claims`,
`nox -s tuning`, `nox -s bench`, `nox -s gpu`."""

import nox

TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
nox.options.sessions = ["lint", "tests"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite on CPU."""
    session.install(*TORCH, "-e", ".[test,dist,tune]")
    session.run("pytest", "-n", "auto", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def demo(session: nox.Session) -> None:
    """The README's main job: the quick ablation grid on the shapes dataset."""
    session.install(*TORCH, "-e", ".")
    session.run("prm-bench", "run", "ablations/quick.yaml", *session.posargs)


@nox.session
def claims(session: nox.Session) -> None:
    """The claims study (ablations/claims.yaml) and its report, as committed in
    reports/claims/ (about an hour on a 2-core CPU)."""
    session.install(*TORCH, "-e", ".")
    session.run("prm-bench", "run", "ablations/claims.yaml", *session.posargs)
    session.run("prm-bench", "report", "runs/claims", "--out", "reports/claims")


@nox.session
def tuning(session: nox.Session) -> None:
    """The tuning example (tune on shapes' tune split, test once on val), as committed in
    reports/tuning/."""
    session.install(*TORCH, "-e", ".[tune]")
    session.run("prm-bench", "tune", "ablations/quick.yaml", "--trials", "20", "--evaluate")
    session.run("prm-bench", "report", "runs/quick", "--tuning", "--out", "reports/tuning")


@nox.session
def bench(session: nox.Session) -> None:
    """Speed benchmarks; each writes a JSON file under benchmarks/results/."""
    session.install(*TORCH, "-e", ".[bench]")
    session.run("python", "-m", "benchmarks.run", *session.posargs)


@nox.session
def gpu(session: nox.Session) -> None:
    """The prepared GPU check, for one call on a lent GPU (under 5 minutes): the CUDA
    tests, then benchmarks/gpu_check.py (a tiny grid on CUDA vs CPU from one checkpoint,
    and the PRM, retrieval and training-step benchmarks on CUDA, written as JSON under
    benchmarks/results/). `python -m benchmarks.gpu_check --dry` is its CPU path (CI)."""
    session.install(*TORCH, "-e", ".[test,bench]")
    session.run("python", "-c", "import torch; assert torch.cuda.is_available(), 'no CUDA'")
    session.run("pytest", "-q", "-m", "cuda")
    session.run("python", "-m", "benchmarks.gpu_check")

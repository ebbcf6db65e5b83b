"""Instance methods: how a cell turns its stored inference into instances.

`prm` is the paper's method (peak response maps pick proposals with the retrieval score,
DESIGN 2.5); each CAM baseline of DESIGN 2.6 (`prm_bench.instances.baselines`) is a
method too. Each entry says what it needs as data, so the stages ask the entry instead of
testing names.
"""

from __future__ import annotations

from dataclasses import dataclass

from prm_bench.instances.baselines import BASELINES
from prm_bench.registry import Registry


@dataclass(frozen=True)
class Method:
    """What a method needs.

    Attributes:
        name: the registry name (`method.name` in configs).
        needs_proposals: reads the cell's proposal gallery.
        uses_retrieval: its instances come from the retrieval score (keyed by the
            `retrieval` section); otherwise from a CAM baseline (keyed by
            `method.baseline`).
        description: one line for `prm-bench list methods`.
    """

    name: str
    needs_proposals: bool
    uses_retrieval: bool
    description: str = ""

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list`."""
        needs = ["proposals"] if self.needs_proposals else []
        configured = "retrieval" if self.uses_retrieval else "method.baseline"
        return ", ".join([*needs, f"configured by {configured}"]), self.description


METHODS: Registry[Method] = Registry(
    "method",
    """Instance methods: `prm` and the CAM baselines; each entry is a `Method` saying
    whether it needs proposals and whether the retrieval section configures it.""",
)
METHODS.add(
    "prm",
    Method("prm", True, True, "peak response maps pick proposals (the paper's method)"),
)
for _name in BASELINES:
    _spec = BASELINES.get(_name)
    METHODS.add(_name, Method(_name, _spec.needs_proposals, False, _spec.description))

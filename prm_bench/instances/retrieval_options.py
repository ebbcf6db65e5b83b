"""What configures retrieval (DESIGN 2.5): the term subsets and `RetrievalConfig`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from prm_bench.registry import Registry


@dataclass(frozen=True)
class Terms:
    """Which retrieval terms are on."""

    instance: bool
    boundary: bool
    klass: bool

    def describe(self) -> tuple[str, str]:
        """(properties, description) for `prm-bench list`."""
        on = [n for n, flag in (("instance", self.instance), ("boundary", self.boundary),
                                ("class", self.klass)) if flag]  # fmt: skip
        return " + ".join(on), "retrieval score terms switched on"


TERMS: Registry[Terms] = Registry(
    "retrieval terms",
    """Retrieval-term subsets: each entry says which of the instance-aware, boundary-aware
    and class-aware terms are on; a term that is off has coefficient 0.""",
)
for _name, _terms in {
    "full": Terms(True, True, True),
    "no-instance": Terms(False, True, True),
    "no-boundary": Terms(True, False, True),
    "no-class": Terms(True, True, False),
    "instance-only": Terms(True, False, False),
    "boundary-only": Terms(False, True, False),
    "class-only": Terms(False, False, True),
    "instance+boundary": Terms(True, True, False),
    "instance+class": Terms(True, False, True),
    "class+boundary": Terms(False, True, True),
}.items():
    TERMS.add(_name, _terms)


class RetrievalConfig(BaseModel):
    """Retrieval options; defaults are the original demo's."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    alpha: float = Field(0.8, ge=0)
    beta: float = Field(1e-5, ge=0)
    bg_factor: float = Field(0.95, gt=0)
    contour_width: int = Field(5, ge=1)
    min_area: float = Field(2e-5, ge=0)
    max_area: float = Field(0.85, gt=0)
    top_n: int = Field(100, ge=1)
    nms_threshold: float | None = Field(0.3, ge=0, le=1)
    merge: bool = True
    resize_mode: Literal["bicubic", "legacy"] = "bicubic"
    confidence: Literal["retrieval", "class", "peak"] = "retrieval"
    terms: str = "full"
    # where the retrieve stage scores: `image` (PRMs upsampled to the image's own size,
    # proposals native) or `input` (the original: at the network's input size, proposals
    # resized there by nearest, the chosen masks resized back to the image)
    resolution: Literal["image", "input"] = "image"

    @field_validator("terms")
    @classmethod
    def _known_terms(cls, value: str) -> str:
        TERMS.get(value)
        return value


def retrieval_config(params: RetrievalConfig | dict[str, Any] | None) -> RetrievalConfig:
    """Retrieval options from a config, a dict of its fields, or None (the defaults)."""
    if params is None:
        return RetrievalConfig()
    if isinstance(params, RetrievalConfig):
        return params
    return RetrievalConfig.model_validate(params)

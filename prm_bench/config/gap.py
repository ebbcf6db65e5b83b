"""The reproduction-gap study's description (`gap:` in a config, `Plan.gap`): which grid
variant flips which candidate cause of the gap, the equivalence margin of the verdicts,
and the metrics the report measures them on (`report/gap.py`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GapRow(BaseModel):
    """One cause flipped one way: the effect is metric(`variant`) - metric(`against`),
    paired by training seed.

    Attributes:
        cause: the candidate cause, as the table names it.
        released: what the released code does (the `against` side), in words.
        alternative: what `variant` does instead, in words.
        variant: the grid variant with the alternative.
        against: the grid variant with the released side (default: the study's base).
        paper: whether the paper setting takes this alternative (a step of the waterfall
            and a term of the interaction check).
    """

    model_config = ConfigDict(extra="forbid")

    cause: str
    released: str
    alternative: str
    variant: str
    against: str | None = None
    paper: bool = False


class GapStudy(BaseModel):
    """The study: the base (released defaults) and paper-setting variants, the margin
    (percentage points) inside which a CI reads `negligible`, the metrics, and the rows.
    `not_axes` names causes that cannot be an axis on this data, with the reason."""

    model_config = ConfigDict(extra="forbid")

    base: str = "released"
    paper: str = "paper"
    margin: float = Field(1.0, gt=0)
    primary: str = "mAP@0.5"
    metrics: list[str] = Field(default_factory=lambda: ["mAP@0.25", "mAP@0.5", "mAP@0.75"])
    rows: list[GapRow] = Field(min_length=1)
    not_axes: dict[str, str] = Field(default_factory=dict)

    def variants(self) -> set[str]:
        """Every grid variant the study reads."""
        named = {self.base, self.paper}
        for row in self.rows:
            named |= {row.variant, row.against or self.base}
        return named

    def against(self, row: GapRow) -> str:
        """The variant of a row's released side."""
        return row.against or self.base

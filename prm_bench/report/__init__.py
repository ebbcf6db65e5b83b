"""`prm-bench report`: paper-style tables and figures from a finished run.

Writes `README.md` (every table in Markdown with its protocol, dataset, split, backbone
and number of seeds), `tables/*.csv` and `tables/*.tex` (booktabs), and `figures/*.png`
plus `.pdf`, with the paper's numbers alongside wherever it published one; the claims
table gives each claim's bootstrap CI and verdict (`prm_bench.report.build`).
"""

from prm_bench.report.build import build_report

__all__ = ["build_report"]

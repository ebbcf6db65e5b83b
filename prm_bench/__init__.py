"""prm-bench: a benchmark and ablation harness for Peak Response Maps (Zhou et al., CVPR 2018)."""

__version__ = "0.1.0"

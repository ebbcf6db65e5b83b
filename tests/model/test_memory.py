"""The PRM pass's memory budget (issue 22 item 5): the tally counts what it should, the
chunk is the largest that fits, and the measured peak stays within the budget."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from prm_bench.model.backprop import excitation_backprop, peak_response_maps
from prm_bench.model.memory import MIB, tally_memory


def test_the_tally_counts_the_saved_tensors_and_the_largest_convolution():
    """One 3->4 conv over 8x8, by hand: the rule saves the shifted input (3*64 floats),
    relu(W) and its flipped copy (108 floats each) and 1/Z (4*64 floats)."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    image = torch.rand(1, 3, 8, 8).requires_grad_(True)
    with excitation_backprop(model), tally_memory(model) as tally:
        model(image)
    assert tally.graph_bytes == 4 * (3 * 64 + 108 + 108 + 4 * 64)
    assert tally.conv_bytes == 3 * 4 * (3 * 64 + 4 * 64)
    assert tally.per_signal(image) == tally.conv_bytes + 4 * 4 * 64


def test_the_chunk_is_the_largest_that_fits_and_never_below_one():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    image = torch.rand(1, 3, 8, 8).requires_grad_(True)
    with excitation_backprop(model), tally_memory(model) as tally:
        model(image)
    for chunk in (1, 3, 7):
        budget = tally.estimate(image, chunk) / MIB
        assert tally.chunk(image, budget, 40) == chunk
        assert tally.chunk(image, budget - 1e-6, 40) == max(1, chunk - 1)
    assert tally.chunk(image, 1.0, 5) == 5  # the requested chunk caps it
    assert tally.chunk(image, 1e-9, 5) == 1  # below one peak's need: one at a time


def test_a_budget_changes_no_prm():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 2, 1))
    image = torch.rand(1, 3, 16, 16)
    peaks = torch.tensor([[0, 0, 3, 4], [0, 1, 8, 8], [0, 0, 12, 2], [0, 1, 0, 15]])
    free = peak_response_maps(model, image, peaks, chunk_size=4)
    with excitation_backprop(model), tally_memory(model) as tally:
        model(image.clone().requires_grad_(True))
    tight = peak_response_maps(
        model, image, peaks, chunk_size=4, max_memory_mb=tally.estimate(image, 2) / MIB
    )
    torch.testing.assert_close(tight, free, rtol=0, atol=1e-6)


MEASURE = textwrap.dedent(
    """
    import json, sys, torch
    from prm_bench.model.backbones import build_classifier
    from prm_bench.model.backprop import peak_response_maps

    def rss(field):
        for line in open("/proc/self/status"):
            if line.startswith(field):
                return int(line.split()[1]) * 1024

    name, budget = sys.argv[1], float(sys.argv[2])
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = build_classifier(name, 20).eval()
    image = torch.rand(1, 3, 512, 512)
    with torch.no_grad():
        c, h, w = model(image).shape[1:]
    g = torch.Generator().manual_seed(0)
    draw = lambda n: torch.randint(0, n, (40,), generator=g)
    peaks = torch.stack([torch.zeros(40, dtype=torch.long), draw(c), draw(h), draw(w)], 1)
    before = rss("VmRSS")
    bounded = peak_response_maps(model, image, peaks, chunk_size=40, max_memory_mb=budget)
    peak = rss("VmHWM") - before
    free = peak_response_maps(model, image, peaks, chunk_size=1)
    print(json.dumps({"peak": peak, "gap": float((bounded - free).abs().max())}))
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
@pytest.mark.parametrize(("name", "budget_mb"), [("test_resnet", 500), ("resnet10t", 600)])
def test_the_peak_memory_of_40_peaks_at_512_px_stays_within_the_budget(name, budget_mb):
    """Unbounded, a 40-peak chunk takes 1.1 GB (test_resnet) and 2.3 GB (resnet10t);
    bounded, the peak resident memory of the pass stays within budget + 10%, in a fresh
    process (ru_maxrss cannot be reset), and the PRMs equal one-peak-at-a-time ones."""
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, name, str(budget_mb)],
        capture_output=True,
        text=True,
        check=True,
    )
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    assert measured["peak"] <= 1.1 * budget_mb * MIB, measured["peak"] / MIB
    assert measured["gap"] <= 1e-6

"""A memory budget for peak backpropagation: how many peaks one backward may carry.

A PRM pass holds two kinds of memory. The forward's autograd graph (the tensors saved
for the backward) is paid once per image, whatever the number of peaks. Each signal in
a batched backward then adds its own copy of the gradients in flight, largest at the
convolution with the biggest input plus output, where the excitation rule holds about
three copies of each; on top come the image signal and the PRM of each peak (4 maps of
the input size).

The estimate is 1.5 x the graph (what the forward holds beyond the saved tensors, and
the backward's first buffers) plus one signal more than the chunk carries. Calibrated
on the CPU at 512 px, 1-40 peaks (test_resnet, resnet10t; VGG16 at 256 px and ResNet50
at 320 px): the measured peak resident memory was at most 7% above the estimate at 2-4
peaks, and up to 45% below it at 16-40. tests/model/test_memory.py holds the budget
within 10% for 40 peaks at 512 px.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from prm_bench.progress import report

MIB = 1 << 20
GRAPH_FACTOR = 1.5  # what a pass holds per byte of saved graph (see the docstring)

# Signals per backward of `batched` when the caller gives none. On 2 CPU cores
# (benchmarks/prm.py) a batched backward never beat one backward per signal: ResNet50 and
# VGG16 at 128-448 px, chunks of 2, 4 and 8 were 0.9-1.0x as fast (the convolutions do the
# same work either way, and the per-op overhead a batch saves is small next to them). GPUs
# are the other way round: per-launch overhead dominates a batch-1 backward.
DEFAULT_CHUNK = {"cpu": 1, "cuda": 32}


def default_chunk(device: torch.device) -> int:
    """Signals per backward on `device` when the caller gives no chunk size."""
    return DEFAULT_CHUNK.get(device.type, DEFAULT_CHUNK["cuda"])


@dataclass
class MemoryTally:
    """What one forward under `tally_memory` will cost its backwards, in bytes."""

    graph_bytes: int = 0
    conv_bytes: int = 0  # the largest 3 x (input + output) of a convolution
    _storages: set[tuple[int, int]] = field(default_factory=set)

    def per_signal(self, image: torch.Tensor) -> int:
        """Bytes each extra signal of a batched backward adds, for a (1, 3, H, W) image."""
        height, width = image.shape[-2:]
        return self.conv_bytes + 4 * height * width * image.element_size()

    def estimate(self, image: torch.Tensor, chunk: int) -> int:
        """Estimated bytes of a pass whose backwards carry `chunk` signals each."""
        return int(GRAPH_FACTOR * self.graph_bytes) + (chunk + 1) * self.per_signal(image)

    def chunk(self, image: torch.Tensor, budget_mb: float, requested: int) -> int:
        """The most signals per backward (at most `requested`, at least 1) whose
        graph plus signals fit in `budget_mb` MiB."""
        room = budget_mb * MIB - GRAPH_FACTOR * self.graph_bytes
        fits = int(room // self.per_signal(image)) - 1  # one more for the workspace
        if fits < 1:
            height, width = image.shape[-2:]
            report(
                f"infer.max_memory_mb={budget_mb:g} is below the "
                f"{self.estimate(image, 1) / MIB:.0f} MiB that one peak at a time needs "
                f"at {height}x{width} px: carrying one peak at a time"
            )
        return max(1, min(requested, fits))


@contextlib.contextmanager
def tally_memory(model: nn.Module) -> Iterator[MemoryTally]:
    """Within the block, count the bytes the autograd graph saves and the shapes of the
    model's convolutions (run the forward of one image in it)."""
    tally = MemoryTally()

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        stamp = (storage.data_ptr(), storage.nbytes())
        if stamp not in tally._storages:
            tally._storages.add(stamp)
            tally.graph_bytes += storage.nbytes()
        return tensor

    def seen(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        in_bytes = inputs[0].nelement() * inputs[0].element_size()
        out_bytes = output.nelement() * output.element_size()
        tally.conv_bytes = max(tally.conv_bytes, 3 * (out_bytes + in_bytes))

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    handles = [conv.register_forward_hook(seen) for conv in convs]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            yield tally
    finally:
        for handle in handles:
            handle.remove()

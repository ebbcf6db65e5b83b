"""The PASCAL VOC label colour map, shared by the writers and readers of label PNGs."""

from __future__ import annotations

import numpy as np


def voc_palette() -> list[int]:
    """The 256-entry VOC colour map as a flat [r, g, b, r, g, b, ...] list (index 255 is
    the void colour (224, 224, 192))."""
    palette = []
    for index in range(256):
        r = g = b = 0
        label = index
        for bit in range(8):
            r |= ((label >> 0) & 1) << (7 - bit)
            g |= ((label >> 1) & 1) << (7 - bit)
            b |= ((label >> 2) & 1) << (7 - bit)
            label >>= 3
        palette += [r, g, b]
    return palette


VOID = 255
PALETTE = np.asarray(voc_palette(), dtype=np.uint8)

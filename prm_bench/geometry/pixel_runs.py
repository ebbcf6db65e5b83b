"""Masks as runs of consecutive pixels, and the sums of maps over them.

A gallery is scored through runs: a mask is the set of maximal runs of consecutive
row-major flat pixel indices it covers, and a map's sum over a run is a difference of the
map's prefix sums. Runs and contours are made from bit-packed rows (64 pixels to a word),
all the masks of a gallery at once, with no per-mask loop.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


def prefix_sums(maps: np.ndarray) -> np.ndarray:
    """(H * W + 1, K) running sums of flattened maps (K, H * W), starting at 0; pixel-major,
    so the K sums at one run end are one contiguous read. Boolean maps sum as integers
    (exact, and cheaper). Each map is summed in pixel order, one addition at a time, as
    numpy's `cumsum` adds; torch's CPU scan does the same additions several times faster,
    and scanning the transposed view writes the pixel-major rows with no transpose after."""
    dtype = np.int32 if maps.dtype == bool else np.float64
    rows = np.empty((maps.shape[1] + 1, len(maps)), dtype)
    rows[0] = 0
    _cumsum(maps.T, dim=0, out=rows[1:])
    return rows


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """torch on one thread inside the block, as before after it. For retrieval's small
    torch operations (scans, resizes), whose results do not depend on the thread count:
    beside other busy jobs a second thread only waits for a core (two threads made a
    448 px retrieval 2-3x slower while another job ran)."""
    import torch  # here, not at import: reading proposals or masks needs no torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _cumsum(values: np.ndarray, dim: int, out: np.ndarray) -> None:
    """numpy's `cumsum(values, axis=dim, out=out)`, the same additions in the same order,
    by torch's faster CPU scan (on one thread); `values` may be a strided view."""
    import torch

    target = torch.from_numpy(out)
    if not values.flags.writeable:  # torch warns on read-only arrays; a copy is exact
        values = values.copy(order="K")
    with one_torch_thread():
        torch.cumsum(torch.from_numpy(values), dim=dim, dtype=target.dtype, out=target)


@dataclass(frozen=True)
class Runs:
    """Masks as runs of consecutive pixels in row-major order: run j covers flat pixels
    [starts[j], ends[j]); mask i owns runs offsets[i] to offsets[i + 1]."""

    starts: np.ndarray
    ends: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_masks(cls, masks: np.ndarray) -> Runs:
        """The runs of boolean masks (P, H, W)."""
        return cls.from_packed(pack_rows(masks), masks.shape[2])

    @classmethod
    def from_packed(cls, bits: np.ndarray, width: int) -> Runs:
        """The runs of masks packed by `pack_rows` (rows of `width` pixels)."""
        count, height, words = bits.shape
        line, x = _edges(bits.copy(), bits, words)
        return cls.from_edges(line, x, count, height, width)

    @classmethod
    def from_edges(
        cls, line: np.ndarray, x: np.ndarray, count: int, height: int, width: int
    ) -> Runs:
        """The runs of `count` masks (`height` x `width`) from the pixels where a row
        differs from itself shifted by one, in order: line (mask * height + row) and x,
        with x = width where a run reaches the row's end."""
        owner, row = np.divmod(line, height)
        flat = row * width + x
        # every row starts and ends outside a run, so its edges alternate start, end
        starts, ends, owner = flat[0::2], flat[1::2], owner[0::2]
        # a run that reaches the end of a row and goes on at the next is one run
        joined = (ends[:-1] == starts[1:]) & (owner[:-1] == owner[1:])
        first, last = np.ones((2, len(starts)), dtype=bool)
        first[1:], last[:-1] = ~joined, ~joined
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(np.bincount(owner[first], minlength=count), out=offsets[1:])
        return cls(starts[first], ends[last], offsets)

    def dense(self, index: int, size: tuple[int, int]) -> np.ndarray:
        """Mask `index` as an (H, W) bool array."""
        first, last = self.offsets[index], self.offsets[index + 1]
        starts, ends = self.starts[first:last], self.ends[first:last]
        lengths = ends - starts
        # pixel k of the mask's runs, in order: its run's start plus its place in the run
        before = np.cumsum(lengths) - lengths
        pixels = np.arange(lengths.sum()) + np.repeat(starts - before, lengths)
        flat = np.zeros(size[0] * size[1], dtype=bool)
        flat[pixels] = True
        return flat.reshape(size)

    def areas(self) -> np.ndarray:
        """(P,) pixels in each mask."""
        owner = np.repeat(np.arange(len(self)), np.diff(self.offsets))
        return np.bincount(owner, weights=self.ends - self.starts, minlength=len(self))

    def sums(self, prefix: np.ndarray) -> np.ndarray:
        """Sum of each map over each mask, (K, P), given the maps' `prefix_sums`."""
        per_run = np.take(prefix, self.ends, axis=0) - np.take(prefix, self.starts, axis=0)
        running = np.empty((prefix.shape[1], len(self.starts) + 1), dtype=prefix.dtype)
        running[:, 0] = 0
        _cumsum(per_run.T, dim=1, out=running[:, 1:])  # K-major: each map's runs in a row
        last, first = self.offsets[1:], self.offsets[:-1]
        return np.take(running, last, axis=1) - np.take(running, first, axis=1)

    def __len__(self) -> int:
        return len(self.offsets) - 1


WORD = np.dtype("<u8")  # 64 pixels, the leftmost in the lowest bit


def set_bits(words: np.ndarray) -> np.ndarray:
    """Sorted positions (word * 64 + bit) of the set bits of 1-d packed `words`: each
    round takes every word's lowest set bit (w & -w, a power of two whose exponent
    `frexp` reads exactly), so the rounds number the most bits in one word, not the bits.
    A word's bits go to consecutive places, counted up front, so no sort is needed."""
    index = np.flatnonzero(words)
    remaining = words[index]
    counts = np.bitwise_count(remaining)
    place = np.cumsum(counts, dtype=np.int64) - counts
    found = np.empty(int(counts.sum()), dtype=np.int64)
    base = index * 64 - 1
    while len(base):
        lowest = remaining & (~remaining + np.uint64(1))
        _, exponent = np.frexp(lowest.astype(np.float64))
        found[place] = base + exponent
        remaining ^= lowest
        left = np.flatnonzero(remaining)
        base, remaining, place = base[left], remaining[left], place[left] + 1
    return found


def _edges(
    out: np.ndarray, bits: np.ndarray, words: int, scratch: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(row, x) of the pixels of packed rows `bits` that differ from the pixel on their
    left, in order; `out`, a copy of `bits`, is overwritten (the xor of the two)."""
    combine_shifted(out, bits, -1, np.bitwise_xor, scratch)
    return np.divmod(set_bits(out.reshape(-1)), words * 64)


def pack_rows(masks: np.ndarray, margin: int = 1) -> np.ndarray:
    """Boolean masks (P, H, W) as (P, H, words) 64-bit words, 64 pixels a word, the
    leftmost in the lowest bit. Each row ends in at least `margin` zero bits (padding), so
    it ends outside any run, and shifts of up to `margin` pixels stay in the padding."""
    count, height, width = masks.shape
    # decoded COCO RLE is column-major per mask: packing along strided rows is 20x slower
    masks = np.ascontiguousarray(masks)
    words = -(-(width + max(margin, 1)) // 64)
    packed = np.zeros((count, height, words * 8), dtype=np.uint8)
    if width % 8:
        packed[..., : (width + 7) // 8] = np.packbits(masks, axis=2, bitorder="little")
    else:  # rows end on a byte: pack the masks as one bit string (faster than by rows)
        flat = np.packbits(masks.reshape(-1), bitorder="little")
        packed[..., : width // 8] = flat.reshape(count, height, width // 8)
    return packed.view(WORD)


def unpack_rows(bits: np.ndarray, width: int) -> np.ndarray:
    """Masks packed by `pack_rows` back to bool (P, H, `width`)."""
    return np.unpackbits(bits.view(np.uint8), axis=-1, bitorder="little")[..., :width] > 0


def combine_shifted(
    dst: np.ndarray,
    src: np.ndarray,
    offset: int,
    combine: np.ufunc = np.bitwise_or,
    scratch: np.ndarray | None = None,
) -> np.ndarray:
    """dst[x] = combine(dst[x], src[x + offset]) in place, for packed rows (`pack_rows`)
    and a bitwise `combine` that 0 leaves alone (or, xor); src pixels past either end
    count as 0. The rows shift as one bit string, so a row's first or last `|offset|`
    pixels meet its neighbour's padding: keep that padding zero, and clear it
    (`& inside`) after. `scratch`, working space of src's size, saves an allocation."""
    flat, bits = dst.reshape(-1), src.reshape(-1)
    scratch = np.empty_like(bits) if scratch is None else scratch.reshape(-1)
    whole, part = divmod(abs(offset), 64)
    n = len(bits) - whole
    if n <= 0:
        return dst
    if offset >= 0:  # pixels move left: towards the low bits and the lower words
        bits, flat = bits[whole:], flat[:n]
        combine(flat, np.right_shift(bits, np.uint64(part), out=scratch[:n]), out=flat)
        if part:
            high = np.left_shift(bits[1:], np.uint64(64 - part), out=scratch[: n - 1])
            combine(flat[:-1], high, out=flat[:-1])
    else:  # pixels move right
        bits, flat = bits[:n], flat[whole:]
        combine(flat, np.left_shift(bits, np.uint64(part), out=scratch[:n]), out=flat)
        if part:
            low = np.right_shift(bits[:-1], np.uint64(64 - part), out=scratch[: n - 1])
            combine(flat[1:], low, out=flat[1:])
    return dst


def _window(width: int) -> range:
    """Offsets a `width` x `width` filter covers around its pixel (scipy's origin 0)."""
    return range(-(width // 2), width - width // 2)


def _dilate(
    bits: np.ndarray,
    width: int,
    inside: np.ndarray,
    out: np.ndarray,
    across: np.ndarray,
    scratch: np.ndarray,
) -> None:
    """`out` = packed masks dilated by a `width` x `width` square (outside the image is
    0); `across` and `scratch` are working space of the same shape.

    Takes six parameters: the masks, the square's width, the in-image bits and three
    work arrays the caller reuses (fresh pages cost more than the bit operations).
    """
    across.fill(0)
    for offset in _window(width):
        combine_shifted(across, bits, offset, scratch=scratch)
    across &= inside
    out[...] = across
    height = bits.shape[1]
    for offset in _window(width):
        lo, hi = max(0, -offset), min(height, height - offset)
        if offset and lo < hi:
            out[:, lo:hi] |= across[:, lo + offset : hi + offset]


def _inside(width: int, words: int) -> np.ndarray:
    """(words,) packed row with the bits of the first `width` pixels set."""
    return np.packbits(np.arange(words * 64) < width, bitorder="little").view(WORD)


def _any_word(bits: np.ndarray) -> np.ndarray:
    """`bits.any(axis=-1)`, by ORing the words of a row one word at a time (2x faster for
    rows of a few words)."""
    found = bits[..., 0].copy()
    for word in range(1, bits.shape[-1]):
        found |= bits[..., word]
    return found != 0


def gallery_runs(
    bits: np.ndarray, width: int, contour_width: int, chunk_bytes: int = 1 << 20
) -> tuple[Runs, Runs]:
    """The runs of masks packed by `pack_rows` (rows of `width` pixels, a margin of at
    least `contour_width`) and of their contours: the morphological gradient, dilation
    and not erosion by a `contour_width` square. Outside the image counts as background
    for the dilation and as foreground for the erosion, so the border is not a contour:
    not eroded is the dilation of the complement, whose outside is 0.

    Only the rows a contour can reach are worked on: each mask's occupied rows and
    `contour_width // 2` more each side, the masks' row spans one after another with
    that many zero rows (outside the image) between them. Off its span a mask's dilation
    is 0, and on it the complement's rows are all there, so the gradient is the same.
    Spans go through in groups of about `chunk_bytes`, so the working arrays stay in
    cache and are reused (fresh pages cost more than the bit operations)."""
    if bits.shape[-1] * 64 - width < contour_width:
        raise ValueError(f"rows need a margin of {contour_width} bits (pack_rows margin=)")
    count, height, words = bits.shape
    reach = contour_width // 2
    occupied = _any_word(bits)  # (P, H)
    masks = np.flatnonzero(occupied.any(axis=1))
    rows_of = occupied[masks]
    low = np.maximum(rows_of.argmax(axis=1) - reach, 0)
    high = np.minimum(height - rows_of[:, ::-1].argmax(axis=1) + reach, height)
    span = high - low + reach  # with the zero rows before it
    group = np.cumsum(span) // max(1, chunk_bytes // (words * 8))
    groups = np.split(np.arange(len(masks)), np.flatnonzero(np.diff(group)) + 1)
    longest = max((int(span[g].sum()) for g in groups), default=0) + reach
    work = np.empty((6, longest, words), dtype=WORD)
    lines = bits.reshape(count * height, words)
    inside = _inside(width, words)
    found_masks, found_contours = [], []  # (line, x) of the edges, per group
    for chosen in groups:
        if not len(chosen):
            continue
        rows = (high - low)[chosen]
        size = int(span[chosen].sum()) + reach
        spans, complement, grown, across, scratch, edges = work[:, None, :size]
        # line_of[i]: the gallery line (mask * height + row) of sequence row i
        within = np.arange(rows.sum()) - np.repeat(np.cumsum(rows) - rows, rows)
        line_of = np.zeros(size, dtype=np.int64)
        on_span = np.zeros((size, 1), dtype=WORD)
        place = np.repeat(np.cumsum(span[chosen]) - rows, rows) + within
        line_of[place] = np.repeat(masks[chosen] * height + low[chosen], rows) + within
        on_span[place] = ~np.uint64(0)
        np.take(lines, line_of, axis=0, out=spans[0])
        spans &= on_span
        edges[...] = spans
        row, x = _edges(edges, spans, words, scratch)
        found_masks.append((line_of[row], x))
        np.invert(spans, out=complement)
        complement &= inside
        complement &= on_span
        _dilate(spans, contour_width, inside, grown, across, scratch)
        not_eroded = spans  # the masks are not needed again
        _dilate(complement, contour_width, inside, not_eroded, across, scratch)
        grown &= not_eroded
        grown &= on_span  # the zero rows are outside the image: no contour
        edges[...] = grown
        row, x = _edges(edges, grown, words, scratch)
        found_contours.append((line_of[row], x))
    return tuple(
        Runs.from_edges(*_joined(found), count, height, width)
        for found in (found_masks, found_contours)
    )


def _joined(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The groups' (line, x) edge arrays, one after another."""
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    lines, xs = zip(*parts, strict=True)
    return np.concatenate(lines), np.concatenate(xs)

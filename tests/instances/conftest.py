"""A random retrieval scene (proposals, PRMs, class maps, peaks) the retrieval tests share."""

import numpy as np

H, W = 24, 20


def scene(seed: int = 0, proposals: int = 12, peaks: int = 5):
    rng = np.random.default_rng(seed)
    masks = np.zeros((proposals, H, W), dtype=bool)
    for p in range(proposals):
        y, x = rng.integers(0, H - 4), rng.integers(0, W - 4)
        masks[p, y : y + rng.integers(3, 12), x : x + rng.integers(3, 12)] = True
    masks[-1] = True  # the whole image: area 1.0 is above max_area
    prms = rng.random((peaks, H, W)) ** 4
    prms /= prms.sum(axis=(1, 2), keepdims=True)
    crm = rng.standard_normal((1, 3, 6, 5)) * 5
    peak_rows = np.stack([np.zeros(peaks), rng.integers(0, 3, peaks), rng.integers(0, 6, peaks),
                          rng.integers(0, 5, peaks)], axis=1).astype(int)  # fmt: skip
    return masks, prms, crm, peak_rows


def reference_contour(mask: np.ndarray, width: int) -> np.ndarray:
    """OpenCV's gradient written out: outside is 0 for the dilation, 1 for the erosion."""
    r = width // 2
    padded0 = np.pad(mask, r, constant_values=False)
    padded1 = np.pad(mask, r, constant_values=True)
    out = np.zeros_like(mask)
    for y in range(mask.shape[0]):
        for x in range(mask.shape[1]):
            dil = padded0[y : y + width, x : x + width].any()
            ero = padded1[y : y + width, x : x + width].all()
            out[y, x] = dil and not ero
    return out

"""Hand-made masks and predictions the metric tests compute by hand."""

import numpy as np

H, W = 10, 20


def box(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


A = box(2, 8, 1, 9)  # 48 pixels


B = box(2, 8, 11, 19)  # 48 pixels


B_PART = box(2, 7, 11, 17)  # 30 pixels inside B: IoU 30 / 48 = 0.625


def fixture():
    truth = [
        [{"mask": A, "class": 0}, {"mask": B, "class": 0}],
        [{"mask": A, "class": 1}],
    ]
    predictions = [
        [
            {"mask": A, "class": 0, "score": 0.9},  # TP
            {"mask": A, "class": 0, "score": 0.8},  # duplicate of a taken instance: FP
            {"mask": B_PART, "class": 0, "score": 0.7},  # TP at 0.5, FP at 0.75
            {"mask": B, "class": 2, "score": 0.6},  # class 2 has no ground truth
        ],
        [],  # class 1 is never predicted
    ]
    return predictions, truth

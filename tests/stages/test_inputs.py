import numpy as np


class _PidImages:
    """A split whose image i holds i in its red channel, a mark in the top-left pixel's
    green, and the pid of the process that decoded it in rows 1 and 2 of its blue."""

    def __init__(self) -> None:
        self.ids = [f"im{i}" for i in range(7)]

    def labels(self, image_id: str) -> np.ndarray:
        return np.zeros(2, dtype=np.float32)

    def image(self, image_id: str) -> np.ndarray:
        import os

        image = np.zeros((4, 6, 3), dtype=np.uint8)
        image[..., 0] = int(image_id[2:])
        image[0, 0, 1] = 255
        image[1, :, 2], image[2, :, 2] = divmod(os.getpid() % 65536, 256)
        return image


def test_one_loader_follows_its_plan_each_pass_with_the_same_workers():
    """The training loader is made once: each pass serves the plan set before it
    (flips included), the same as decoding in this process, and its worker processes
    persist from one epoch to the next."""
    from prm_bench.stages.inputs import BatchPlan as Plan
    from prm_bench.stages.inputs import ImageSplit, batches

    images = ImageSplit(_PidImages(), None)
    plan = Plan()
    loaders = {workers: batches(images, plan, workers) for workers in (0, 2)}
    passes = ([[(3, False), (1, True)], [(0, False), (4, True)]], [[(6, True), (2, False)]])
    pids = []
    for batches_of_pass in passes:
        plan.batches = batches_of_pass
        for workers, loader in loaders.items():
            served = list(loader)
            assert [b[:, 0, 0, 0].tolist() for b in served] == [
                [i for i, _ in batch] for batch in batches_of_pass
            ]
            assert [(b[:, 1, 0, -1] == 255).tolist() for b in served] == [
                [f for _, f in batch] for batch in batches_of_pass
            ]
            if workers:
                pids.append({int(b[k, 2, 1, 0]) + 256 * int(b[k, 2, 2, 0])
                             for b in served for k in range(len(b))})  # fmt: skip
    assert pids[1] <= pids[0] and len(pids[0]) == 2  # two workers, kept for the next pass

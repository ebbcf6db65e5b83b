"""One bar per running task on the terminal, from the positions the tasks keep in the
run's `live/` folder (`prm_bench.progress.meter`): a training's epoch, batch, running
loss and images/s, an inference's or a retrieval's images. The stage bars above them
count tasks; these show what each task is doing."""

from __future__ import annotations

import threading
from pathlib import Path
from types import TracebackType

from rich.progress import Progress, TaskID

from prm_bench.progress import read_live


class LiveBars:
    """A thread that mirrors the live files of `folder` into `progress`, every `every`
    seconds while the block runs; the bars go when their task's file does, and all of
    them when the block ends."""

    def __init__(self, progress: Progress, folder: Path, every: float = 0.5) -> None:
        self.progress, self.folder, self.every = progress, Path(folder), every
        self.bars: dict[str, TaskID] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="prm-bench-live", daemon=True)

    def __enter__(self) -> LiveBars:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        for bar in self.bars.values():
            self.progress.remove_task(bar)
        self.bars.clear()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.refresh()

    def refresh(self) -> None:
        """Bring the bars in line with the live files as they are now."""
        found = {entry["label"]: entry for entry in read_live(self.folder) if "label" in entry}
        for label in set(self.bars) - set(found):
            self.progress.remove_task(self.bars.pop(label))
        for label, entry in found.items():
            description = f"  {label} {entry.get('detail', '')}".rstrip()
            if label not in self.bars:
                self.bars[label] = self.progress.add_task(
                    description, total=entry["total"], completed=entry.get("first", 0)
                )
            self.progress.update(self.bars[label], description=description, completed=entry["done"])

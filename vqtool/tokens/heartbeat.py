"""Progress from inside a slow batch: one helper thread per encode run that, while the
network works on a batch for longer than `HEARTBEAT_S`, reports every `HEARTBEAT_S` how
many of the batch's images are done and the time per image so far (an Emu3 image at its
default resolution takes many seconds on a CPU; progress between batches alone went
silent for minutes)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: seconds between two reports while one batch runs
HEARTBEAT_S = 5.0


class Heartbeat:
    """`with Heartbeat(callback):` around a run; `begin(n)`, `advance(k)` and `end()`
    around each batch. The callback gets `("heartbeat", {"done", "of", "elapsed_s",
    "s_per_image"})` from the helper thread (`s_per_image` None before the first image)."""

    def __init__(self, callback: Callable[[str, dict], None], every: float | None = None):
        self.callback = callback
        self.every = HEARTBEAT_S if every is None else every
        self.lock = threading.Lock()
        self.batch: tuple[float, int] | None = None  # (start, images) of the running batch
        self.done = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, name="vqtool-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()

    def begin(self, images: int) -> None:
        with self.lock:
            self.batch, self.done = (time.monotonic(), images), 0

    def advance(self, images: int) -> None:
        with self.lock:
            self.done += images

    def end(self) -> None:
        with self.lock:
            self.batch = None

    def _beat(self) -> None:
        while not self.stop.wait(self.every):
            with self.lock:
                if self.batch is None:
                    continue
                start, images = self.batch
                done = self.done
            elapsed = time.monotonic() - start
            if elapsed < self.every:
                continue
            info = {"done": done, "of": images, "elapsed_s": elapsed,
                    "s_per_image": elapsed / done if done else None}  # fmt: skip
            try:
                self.callback("heartbeat", info)
            except Exception:  # a report that fails must not stop the run
                pass

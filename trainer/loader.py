"""The training batches of one rank, read ahead in a background thread.

Step s of a run trains on windows s * B .. (s + 1) * B - 1 of the sampler's stream (B = the global
batch); a rank reads only its rows [lo, hi) of them. A thread prepares the next steps' rows (numpy
-> torch, pinned memory on CUDA) while the device computes, and `get` copies them with
`non_blocking`, so the host never waits for a batch unless reading is slower than the step
(`wait_s` adds up that stall).
"""

from __future__ import annotations

import queue
import threading
import time

import torch

from trainer.data import WindowSampler

AHEAD = 2  # batches prepared ahead of the step that trains


class BatchLoader:
    def __init__(
        self,
        sampler: WindowSampler,
        global_batch: int,
        rows: tuple[int, int],
        first_step: int,
        last_step: int,
        device: torch.device,
    ) -> None:
        self.sampler, self.global_batch, self.rows = sampler, global_batch, rows
        self.device = device
        self.pin = device.type == "cuda"
        self.wait_s = 0.0
        self._queue: queue.Queue = queue.Queue(maxsize=AHEAD)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._fill, args=(first_step, last_step), daemon=True)
        self._thread.start()

    def _fill(self, first_step: int, last_step: int) -> None:
        lo, hi = self.rows
        for step in range(first_step, last_step):
            try:
                batch = torch.from_numpy(self.sampler.windows(step * self.global_batch + lo, hi - lo))
                item: tuple = (step, batch.pin_memory() if self.pin else batch)
            except BaseException as e:  # handed to the training thread, which raises it
                item = (step, e)
            while not self._closed.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._closed.is_set() or isinstance(item[1], BaseException):
                return

    def get(self, step: int) -> torch.Tensor:
        """This rank's rows of step `step` on the device (the steps must be asked in order)."""
        t0 = time.perf_counter()
        got, batch = self._queue.get()
        self.wait_s += time.perf_counter() - t0
        if isinstance(batch, BaseException):
            raise batch
        assert got == step, f"loader handed step {got} for step {step}"
        return batch.to(self.device, non_blocking=True)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=10)

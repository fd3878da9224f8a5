"""Waiting on benchmark worker processes without ever waiting forever.

A benchmark's parent used to block on `queue.get()` for a result its worker would never send when
the worker died (killed by the OOM killer, a crash in native code): the benchmark hung instead of
failing. `result_of` polls the queue and the worker together, so a dead worker is an error at once.
"""

from __future__ import annotations

import queue
import time
from typing import Any


class WorkerDied(RuntimeError):
    """A benchmark worker exited without its result, or overran its time."""


def result_of(results: Any, worker: Any, what: str, timeout: float, poll: float = 0.5) -> Any:
    """The next item `worker` puts on `results`; `WorkerDied` as soon as the worker is gone without one.

    `worker` is a `multiprocessing.Process`. A result already queued when the worker exits is still
    returned (the queue is read once more after the worker is seen dead).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            return results.get(timeout=poll)
        except queue.Empty:
            pass
        if not worker.is_alive():
            try:
                return results.get(timeout=poll)
            except queue.Empty:
                raise WorkerDied(f"{what}: the worker process died (exit code {worker.exitcode})") from None
        if time.monotonic() > deadline:
            worker.kill()
            raise WorkerDied(f"{what}: no result after {timeout:.0f} s; worker stopped")

"""The benchmarks fail, instead of hanging, when a worker process dies (issue #16)."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from workers import WorkerDied, result_of  # noqa: E402


def _dies(results) -> None:
    os._exit(3)


def _answers(results) -> None:
    results.put({"ok": 1})


def test_a_dead_worker_is_an_error_not_a_wait():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    worker = ctx.Process(target=_dies, args=(results,))
    worker.start()
    with pytest.raises(WorkerDied, match="exit code 3"):  # a plain results.get(timeout=...) would wait, then raise queue.Empty
        result_of(results, worker, "pull rest", timeout=600)


def test_a_result_sent_before_exit_is_returned():
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    worker = ctx.Process(target=_answers, args=(results,))
    worker.start()
    assert result_of(results, worker, "pull auto", timeout=120) == {"ok": 1}
    worker.join()

"""The write-ahead worker: one job at a time, results and errors come back to the caller."""
from __future__ import annotations

import threading

import pytest

from eschaton.chain.embedded.ahead import AheadWorker


def test_runs_jobs_on_its_own_thread_in_order() -> None:
    w = AheadWorker("t")
    try:
        seen = []
        for i in range(50):
            w.submit(lambda i=i: (seen.append(i), threading.current_thread().name)[1])
            assert w.result() == "t"
        assert seen == list(range(50))
    finally:
        w.close()


def test_an_error_is_raised_in_the_caller_and_the_worker_goes_on() -> None:
    w = AheadWorker("t")
    try:
        w.submit(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            w.result()
        w.submit(lambda a, b: a + b, 2, 3)
        assert w.result() == 5
    finally:
        w.close()


def test_one_job_at_a_time_and_close_waits_for_a_running_job() -> None:
    w = AheadWorker("t")
    gate, done = threading.Event(), []
    w.submit(lambda: (gate.wait(5), done.append(1)))
    with pytest.raises(RuntimeError, match="still out"):
        w.submit(lambda: None)
    gate.set()
    w.close()
    assert done == [1]
    w.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(lambda: None)

"""The skill pool: every call runs, at most `size` at once, and a call that blocks never holds
back another while the pool has room."""

from __future__ import annotations

import threading

from agentrt.runtime._actor import _Pool


def test_calls_that_wait_for_each_other_all_run_while_the_pool_has_room() -> None:
    pool = _Pool(4, "t")
    gate = threading.Barrier(4, timeout=10)  # each call waits until all four run at once
    done: list[int] = []
    lock = threading.Lock()

    def call(i: int) -> None:
        gate.wait()
        with lock:
            done.append(i)

    for i in range(4):
        pool.submit(call, i)
    for _ in range(200):
        if len(done) == 4:
            break
        threading.Event().wait(0.05)
    assert sorted(done) == [0, 1, 2, 3]
    pool.shutdown()


def test_no_more_than_size_run_at_once_and_the_rest_wait_their_turn() -> None:
    pool = _Pool(2, "t")
    running, most = [0], [0]
    lock = threading.Lock()
    finished = threading.Semaphore(0)
    release = threading.Event()

    def call() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(10)
        with lock:
            running[0] -= 1
        finished.release()

    for _ in range(6):
        pool.submit(call)
    for _ in range(200):  # both workers busy, four calls waiting
        if running[0] == 2:
            break
        threading.Event().wait(0.05)
    assert running[0] == 2
    release.set()
    for _ in range(6):
        assert finished.acquire(timeout=10)
    assert most[0] == 2
    pool.shutdown()

"""The two drivers of phased operations (mycelium/node/phased.py): same phases, same
results and errors; offloaded steps run off the trio thread, and cancelling one stops
the operation before its store phase."""

from __future__ import annotations

import threading

import pytest
import trio

from mycelium.errors import MyceliumError
from mycelium.node.phased import Offload, Phased, run_inline, run_offloaded


def op(log: list[str], step: Offload) -> Phased[str]:
    """A phased operation in miniature: read, one offloaded step, write."""
    log.append("read")
    try:
        got = yield step
    except MyceliumError as exc:
        log.append(f"refused {exc.reason}")
        raise
    log.append(f"write {got}")
    return f"done {got}"


def test_inline_runs_the_phases_in_order() -> None:
    log: list[str] = []
    assert run_inline(op(log, Offload("t", lambda: 7))) == "done 7"
    assert log == ["read", "write 7"]


def refuse() -> None:
    raise MyceliumError("stub says no", reason="stub_refused")


def test_an_offloaded_error_reaches_the_operation_in_both_drivers() -> None:
    inline: list[str] = []
    with pytest.raises(MyceliumError, match="stub says no"):
        run_inline(op(inline, Offload("t", refuse)))
    offloaded: list[str] = []

    async def main() -> None:
        with pytest.raises(MyceliumError, match="stub says no"):
            await run_offloaded(op(offloaded, Offload("t", refuse)))

    trio.run(main)
    assert inline == offloaded == ["read", "refused stub_refused"]


def test_trio_keeps_running_while_a_step_blocks_in_a_thread() -> None:
    gate = threading.Event()
    threads: list[int] = []

    def blocking() -> int:
        threads.append(threading.get_ident())
        if not gate.wait(30):
            raise AssertionError("never released")
        return 1

    async def main() -> None:
        log: list[str] = []
        results: list[str] = []

        async def run() -> None:
            results.append(await run_offloaded(op(log, Offload("t", blocking))))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            with trio.fail_after(10):  # trio tasks progress while the step blocks
                while not threads:
                    await trio.sleep(0.01)
            assert log == ["read"] and not results
            gate.set()
        assert results == ["done 1"] and log == ["read", "write 1"]
        assert threads[0] != threading.get_ident()

    trio.run(main)


def test_cancelling_abandons_the_step_and_skips_the_store_phase() -> None:
    gate = threading.Event()
    log: list[str] = []
    started = threading.Event()

    def blocking() -> int:
        started.set()
        gate.wait(30)
        return 1

    async def main() -> None:
        with trio.move_on_after(10) as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_offloaded, op(log, Offload("t", blocking)))
                with trio.fail_after(10):
                    while not started.is_set():
                        await trio.sleep(0.01)
                nursery.cancel_scope.cancel()
        assert not scope.cancelled_caught  # the cancel came from us, not the bound

    try:
        trio.run(main)
    finally:
        gate.set()
    assert log == ["read"]


def test_at_most_max_concurrent_steps_run_at_once() -> None:
    from mycelium.node.phased import MAX_CONCURRENT, limiter

    lock = threading.Lock()
    running: list[int] = [0, 0]  # now, most at once
    gate = threading.Event()

    def step() -> int:
        with lock:
            running[0] += 1
            running[1] = max(running[1], running[0])
        gate.wait(30)
        with lock:
            running[0] -= 1
        return 0

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(MAX_CONCURRENT + 2):
                nursery.start_soon(run_offloaded, op([], Offload("t", step)))
            with trio.fail_after(10):  # two steps run, the other two wait for a token
                while running[0] < MAX_CONCURRENT or limiter().statistics().tasks_waiting < 2:
                    await trio.sleep(0.01)
            assert running[0] == MAX_CONCURRENT
            gate.set()
        assert running == [0, MAX_CONCURRENT]

    trio.run(main)

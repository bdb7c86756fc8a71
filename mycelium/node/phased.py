"""Phased operations: store work on the trio thread, network/CPU work in a worker thread.

The running node's Soil store is one sqlite connection used from the trio thread, so an
operation that also does slow I/O (an IPFS transfer, HTTP round trips to a gateway)
cannot run whole in a worker thread, and run whole on the trio thread it freezes sync,
gossip, the control API and the web app. A phased operation is written once as a
generator: its store reads and writes run where the generator runs, and each slow middle
step is *yielded* as an :class:`Offload` — a plain callable that must not touch the store.

- :func:`run_inline` drives it synchronously (the CLI without a node: ``LocalOps.call``);
- :func:`run_offloaded` drives it from trio (``LocalOps.acall``: control API, web app),
  running each offload in ``trio.to_thread.run_sync`` under one :class:`CapacityLimiter`.

This module is the one place where node operations bridge into threads.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

T = TypeVar("T")

#: Slow operations of one node running at the same time (the rest wait their turn);
#: bounds the worker threads and the memory of archives being built or fetched.
MAX_CONCURRENT = 2


@dataclass(frozen=True)
class Offload:
    """A step to run off the trio thread. ``fn`` touches no store state: everything it
    needs was read before (and is passed in its closure), its result is written after."""

    what: str
    fn: Callable[[], Any]


#: A phased operation: yields :class:`Offload` steps, receives each one's result, and
#: returns the operation's JSON-ready answer.
Phased = Generator[Offload, Any, T]

_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar("phased_limiter")


def limiter() -> trio.CapacityLimiter:
    """The limiter of offloaded steps of this trio run (one per run, not per process: an
    abandoned step returns its token to the run it was taken from)."""
    try:
        return _LIMITER.get()
    except LookupError:
        made = trio.CapacityLimiter(MAX_CONCURRENT)
        _LIMITER.set(made)
        return made


def run_inline(gen: Phased[T]) -> T:
    """Run every phase in sequence on the calling thread."""
    try:
        step = next(gen)
        while True:
            try:
                result = step.fn()
            except Exception as exc:  # re-raised inside the generator
                step = gen.throw(exc)
            else:
                step = gen.send(result)
    except StopIteration as done:
        value: T = done.value
        return value


async def run_offloaded(gen: Phased[T], *, lim: trio.CapacityLimiter | None = None) -> T:
    """Run the store phases here (the trio thread) and each :class:`Offload` in a worker
    thread. Cancelling abandons the worker (safe: it holds no store state; its own I/O
    timeouts end it) and closes the generator, so no store write happens after."""
    try:
        step = next(gen)
        while True:
            try:
                # the installed trio-stubs predate abandon_on_cancel/thread_name (trio 0.23+)
                result = await trio.to_thread.run_sync(  # type: ignore[call-arg]
                    step.fn, abandon_on_cancel=True, limiter=lim or limiter(),
                    thread_name=f"mycelium op {step.what}")
            except trio.Cancelled:
                gen.close()
                raise
            except Exception as exc:  # re-raised inside the generator
                step = gen.throw(exc)
            else:
                step = gen.send(result)
    except StopIteration as done:
        value: T = done.value
        return value

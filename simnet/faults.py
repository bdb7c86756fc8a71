"""The fault model shared by simnet's real backends (process and netns).

Real TCP cannot lose bytes: the kernel retransmits, so loss on a real link shows up to the
application as *stalls* (a segment waits one retransmission timeout, doubling on each
further loss) and, when things get bad enough, as *connection resets*. The userspace
proxy (:mod:`simnet.proxy`) models exactly that, per chunk it forwards:

* latency: ``latency_s`` plus a jitter sample (uniform, normal or exponential), while
  preserving byte order (a chunk never overtakes the one before it, as in TCP);
* loss ``p``: with probability ``p`` the chunk is delayed by one extra RTO (``rto_s``);
  with probability ``p**2`` by RTO + 2·RTO, and so on (exponential back-off, capped);
* ``reset`` ``q``: with probability ``q`` per chunk the connection is reset (RST);
* bandwidth: a token bucket per directed link (``bandwidth_bps`` bytes/s, ``burst_bytes``),
  shared by every connection on that link;
* partitions: connections across a cut are reset and new ones are refused (reset on accept).

The netns backend applies packet-level faults instead (nft random drop, ``tc tbf``,
carrier loss); see :mod:`simnet.lan` and ``docs/simnet-backends.md``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import trio

from mycelium.errors import MyceliumError

JitterDist = Literal["uniform", "normal", "exponential", "lognormal"]

#: RTO back-off never stalls a chunk longer than this (Linux caps RTO at 120 s; we cap far
#: lower so that a scenario with heavy loss still finishes).
MAX_STALL_S = 10.0


class SimnetError(MyceliumError):
    """A simnet harness failure: bad scenario parameters, missing privileges, a node that
    did not start, a command that timed out. The message says what to do about it."""

    reason = "simnet"


@dataclass(frozen=True)
class LinkParams:
    """Faults on one directed link (bytes flowing from ``src`` to ``dst``).

    ``latency_s``/``jitter_s`` are one-way; ``loss`` and ``reset`` are per-chunk
    probabilities in [0, 1]; ``bandwidth_bps`` is bytes per second (None = unlimited).
    For ``lognormal`` jitter, ``jitter_s`` is the median and ``jitter_sigma`` the sigma of
    the underlying normal.
    """

    latency_s: float = 0.0
    jitter_s: float = 0.0
    jitter_dist: JitterDist = "uniform"
    jitter_sigma: float = 0.5
    loss: float = 0.0
    rto_s: float = 0.2
    reset: float = 0.0
    bandwidth_bps: float | None = None
    burst_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.jitter_s < 0 or self.rto_s < 0:
            raise SimnetError(f"link times must be >= 0: {self}")
        for name in ("loss", "reset"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SimnetError(f"link {name} must be a probability in [0, 1], got {value}")
        if self.loss >= 1.0:
            raise SimnetError("link loss 1.0 would stall forever: use a partition instead")
        if self.bandwidth_bps is not None and self.bandwidth_bps <= 0:
            raise SimnetError(f"bandwidth_bps must be > 0 or None, got {self.bandwidth_bps}")
        if self.burst_bytes <= 0:
            raise SimnetError(f"burst_bytes must be > 0, got {self.burst_bytes}")
        if self.jitter_dist not in ("uniform", "normal", "exponential", "lognormal"):
            raise SimnetError(f"unknown jitter distribution {self.jitter_dist!r}")

    def sample_delay(self, rng: random.Random) -> tuple[float, bool]:
        """One chunk's extra one-way delay in seconds, and whether it suffered a "loss".

        Uniform adds ``[0, jitter]``; normal is ``N(latency, jitter)`` clipped at 0 (the
        only one that can go below ``latency_s``); exponential adds a sample of mean
        ``jitter``; lognormal adds a sample of median ``jitter``.
        """
        delay = self.latency_s
        if self.jitter_s > 0:
            if self.jitter_dist == "uniform":
                delay += rng.uniform(0.0, self.jitter_s)
            elif self.jitter_dist == "normal":
                delay = max(0.0, delay + rng.gauss(0.0, self.jitter_s))
            elif self.jitter_dist == "lognormal":
                delay += rng.lognormvariate(math.log(self.jitter_s), self.jitter_sigma)
            else:
                delay += rng.expovariate(1.0 / self.jitter_s)
        lost = False
        if self.loss > 0:
            rto = self.rto_s
            stall = 0.0
            while rng.random() < self.loss and stall < MAX_STALL_S:
                lost = True
                stall += rto
                rto *= 2
            delay += min(stall, MAX_STALL_S)
        return delay, lost


PERFECT = LinkParams()


def cuts_for_partition(groups: Sequence[Collection[str]]) -> set[frozenset[str]]:
    """Unordered node pairs separated by a partition into ``groups``.

    Nodes within one group still reach each other; nodes named in no group are not cut
    from anyone (list every node to isolate it). A node listed in two groups is an error.
    """
    seen: dict[str, int] = {}
    for index, group in enumerate(groups):
        for node in group:
            if node in seen and seen[node] != index:
                raise SimnetError(f"node {node!r} is in two partition groups")
            seen[node] = index
    return {
        frozenset((a, b))
        for a, ga in seen.items()
        for b, gb in seen.items()
        if a < b and ga != gb
    }


def cuts_between(group_a: Iterable[str], group_b: Iterable[str]) -> set[frozenset[str]]:
    """Unordered pairs with one end in each group (a node in both is not cut from itself)."""
    b_list = list(group_b)
    return {frozenset((a, b)) for a in group_a for b in b_list if a != b}


class TokenBucket:
    """Bandwidth limit for one directed link, shared by all its connections.

    ``take(n)`` waits until ``n`` bytes may pass; callers split chunks larger than the
    burst. A lock keeps waiters FIFO so one connection cannot starve another.
    """

    def __init__(self, rate_bps: float, burst: int) -> None:
        self.rate = float(rate_bps)
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = trio.current_time()
        self._lock = trio.Lock()

    def _refill(self) -> None:
        now = trio.current_time()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def take(self, n: int) -> None:
        if n > self.burst:
            raise SimnetError(f"chunk of {n} bytes exceeds the bucket burst {self.burst:.0f}")
        async with self._lock:
            self._refill()
            if self._tokens < n:
                wait = (n - self._tokens) / self.rate
                await trio.sleep(wait)
                self._refill()
            self._tokens -= n
            if math.isclose(self._tokens, 0.0, abs_tol=1e-9):
                self._tokens = 0.0

"""Anti-entropy scheduling: deterministic, jittered, backing off, urgent requests."""

from __future__ import annotations

import itertools
import random

import pytest

from mycelium.sync.scheduler import AntiEntropyScheduler


def run(seed: int, steps: int = 200) -> list[object]:
    s = AntiEntropyScheduler(10.0, 0.2, random.Random(seed))
    for p in ("a", "b", "c", "d"):
        s.add_peer(p)
    picks = []
    for t in range(steps):
        peer = s.due(float(t))
        if peer is not None:
            picks.append((t, peer))
            s.report_success(peer, float(t))
    return picks


def test_deterministic_given_the_rng() -> None:
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_interval_and_jitter_bounds() -> None:
    times = [t for t, _ in run(3, 1000)]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(8 <= g <= 13 for g in gaps)
    assert len({p for _, p in run(3, 1000)}) == 4  # every peer gets picked


def test_failing_peer_backs_off_exponentially() -> None:
    s = AntiEntropyScheduler(1.0, 0.0, random.Random(0), backoff=2.0, max_backoff=8.0)
    s.add_peer("x")
    assert s.due(1.0) == "x"
    s.report_failure("x", 1.0)
    assert s.due(2.0) is None and s.due(3.0) == "x"  # retry after 2 s
    s.report_failure("x", 3.0)
    assert s.due(6.0) is None and s.due(7.0) == "x"  # then 4 s
    for _ in range(5):
        s.report_failure("x", 7.0)
    assert s.due(14.9) is None and s.due(15.0) == "x"  # capped at 8 s
    s.report_success("x", 15.0)
    assert s.due(16.0) == "x"


def test_busy_peers_are_skipped_and_urgent_requests_jump_the_queue() -> None:
    s = AntiEntropyScheduler(100.0, 0.0, random.Random(0))
    s.add_peer("a")
    s.add_peer("b")
    s.started("a")
    s.request("a")
    s.request("b")
    assert s.due(0.0) == "b"  # a is busy, so its request is dropped
    assert s.next_deadline() == 100.0
    assert s.due(100.0) is None  # both busy now
    s.report_success("a", 100.0)
    s.remove_peer("b")
    assert s.due(200.0) == "a" and s.peers == ["a"]


def test_rejects_bad_parameters() -> None:
    with pytest.raises(ValueError):
        AntiEntropyScheduler(0, 0.1, random.Random())
    with pytest.raises(ValueError):
        AntiEntropyScheduler(1, 1.0, random.Random())

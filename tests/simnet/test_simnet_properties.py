"""Property: any small random history of partitions, crashes and joins converges.

This drives the real sync core through the simulator, so a failure here is a finding
about ``mycelium.sync`` (or the simulator), reproducible from the printed scenario + seed.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simnet import report
from simnet.scenario import parse
from simnet.virtual import run
from tests.budget import CI, examples

pytestmark = pytest.mark.timeout(120)


@st.composite
def histories(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(4, 12))
    mode = draw(st.sampled_from(["sessions", "gossip"]))
    loss = draw(st.sampled_from([0.0, 0.0, 0.05, 0.2]))
    degree = draw(st.integers(2, min(4, n - 1)))
    split = draw(st.integers(1, n - 1))
    writers = sorted(draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=3)))
    events: list[dict[str, Any]] = []
    t = 0.0
    crashed: set[int] = set()
    partitioned = False
    for _ in range(draw(st.integers(0, 6))):
        t += draw(st.sampled_from([0.5, 1.0, 2.0, 3.0]))
        choice = draw(st.sampled_from(["partition", "crash", "restart"]))
        if choice == "partition":
            if partitioned:
                events.append({"at": t, "kind": "heal"})
            else:
                events.append({"at": t, "kind": "partition", "groups": ["a", "b"]})
            partitioned = not partitioned
        elif choice == "crash":
            node = draw(st.integers(0, n - 1))
            if node not in crashed:
                crashed.add(node)
                events.append({"at": t, "kind": "crash", "node": node})
        elif crashed:
            node = sorted(crashed)[0]
            crashed.discard(node)
            events.append({"at": t, "kind": "restart", "node": node})
    if partitioned:
        t += 1.0
        events.append({"at": t, "kind": "heal"})
    joiner = draw(st.integers(0, n - 1))
    if draw(st.booleans()) and joiner not in crashed and all(e.get("node") != joiner
                                                             for e in events):
        t += 0.5
        events.append({"at": t, "kind": "join", "node": joiner})
    if draw(st.booleans()):
        removed = draw(st.integers(0, n - 1))
        if removed not in crashed and (not events or events[-1].get("node") != removed):
            t += draw(st.sampled_from([0.0, 0.5]))
            events.append({"at": t, "kind": "remove_member", "node": removed})
    for node in sorted(crashed):  # everyone is back at the end
        t += 0.5
        events.append({"at": t, "kind": "restart", "node": node})
    return {
        "name": "random-history", "duration": t + 120.0,
        "nodes": {"count": n, "groups": {"a": f"0-{split - 1}", "b": f"{split}-{n - 1}"}},
        "topology": {"kind": "random", "degree": degree},
        "link": {"latency": {"dist": "uniform", "low": 2.0, "high": 30.0}, "loss": loss},
        "sync": {"mode": mode, "anti_entropy_interval": 2.0},
        "writes": {"writers": writers, "rate": draw(st.sampled_from([2.0, 10.0, 50.0])),
                   "total": draw(st.integers(1, 80)), "start": 0.2},
        "events": events,
    }


@settings(max_examples=examples(ci=120, local=30), deadline=None, derandomize=not CI,
          suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.integers(0, 2**16))
def test_random_histories_converge(data: dict[str, Any], seed: int) -> None:
    res = run(parse(data), seed)
    conv = report.check(res)
    assert conv.converged, (conv.problems, data, seed)

"""The virtual backend: determinism, convergence, and that broken sync is caught."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import pytest

from mycelium.sync import MemoryStore, VerifyCache
from mycelium.sync.messages import Envelopes, decode_message
from mycelium.sync.ports import IngestResult
from mycelium.sync.session import SyncSession
from simnet import report
from simnet.scenario import Scenario, parse, resolve
from simnet.virtual import run
from simnet.virtual.network import build_overlay, diameter
from simnet.virtual.sim import Simulation

pytestmark = pytest.mark.timeout(60)


def small(mode: str = "sessions", **extra: Any) -> Scenario:
    data: dict[str, Any] = {
        "name": "small", "duration": 60.0,
        "nodes": {"count": 12, "groups": {"a": "0-5", "b": "6-11"}},
        "topology": {"kind": "random", "degree": 3},
        "link": {"latency": {"dist": "lognormal", "median": 10.0, "sigma": 0.5},
                 "bandwidth": 1_000_000},
        "sync": {"mode": mode, "anti_entropy_interval": 3.0},
        "writes": {"writers": [0, 7], "rate": 10.0, "total": 60},
        "events": [{"at": 2.0, "kind": "partition", "groups": ["a", "b"]},
                   {"at": 8.0, "kind": "heal"}],
    }
    data.update(extra)
    return parse(data)


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    sc = small()
    a, b, c = run(sc, 7), run(sc, 7), run(sc, 8)
    assert a.trace_hash == b.trace_hash
    assert a.events == b.events
    assert a.trace_hash != c.trace_hash


def test_gossip_mode_is_deterministic_too() -> None:
    sc = small("gossip", link={"latency": {"dist": "constant", "value": 5.0}, "loss": 0.1})
    assert run(sc, 3).trace_hash == run(sc, 3).trace_hash


@pytest.mark.parametrize("mode", ["sessions", "gossip"])
def test_partition_heal_converges_with_finite_ratio(mode: str) -> None:
    res = run(small(mode), 1)
    conv = report.check(res)
    assert conv.converged, conv.problems
    assert conv.written == 60
    assert conv.t_ref == 8.0  # the heal comes after the last write
    assert conv.convergence_time is not None and conv.lower_bound > 0
    assert 0 < conv.ratio < 100


def test_builtin_partition_heal_converges() -> None:
    res = run(resolve("partition-heal"), 1)
    conv = report.check(res)
    assert conv.converged and conv.ratio > 0 and res.written == 400


class LossyStore(MemoryStore):
    """Silently loses some envelopes it receives from peers, yet claims it stored them."""

    def ingest(self, space: bytes, envelopes: Sequence[bytes]) -> IngestResult:
        kept = [e for e in envelopes if hashlib.sha256(e).digest()[0] % 7 != 0]
        result = super().ingest(space, kept)
        result.duplicates += len(envelopes) - len(kept)
        return result


class NoEnvelopesSession(SyncSession):
    """Drops every reconciliation batch (ENVELOPES frames); live pushes still work."""

    def receive_frame(self, payload: bytes, now: float) -> None:
        if isinstance(decode_message(payload), Envelopes):
            return
        super().receive_frame(payload, now)


def test_store_that_loses_envelopes_is_detected() -> None:
    def factory(cache: VerifyCache) -> MemoryStore:
        return LossyStore(cache=cache)

    res = Simulation(small(), 1, store_factory=factory).run()
    conv = report.check(res)
    assert not conv.converged
    assert conv.set_mismatches > 0 and conv.ratio == -1.0
    assert conv.problems


def test_sync_that_drops_envelope_batches_is_detected() -> None:
    res = Simulation(small(), 1, session_factory=NoEnvelopesSession).run()
    conv = report.check(res)
    assert not conv.converged
    assert conv.set_mismatches > 0 or conv.vv_mismatches > 0


@pytest.mark.parametrize("name", ["late-joiner", "churn", "lossy-wifi", "member-removal",
                                  "relay-only"])
def test_builtin_scenarios_converge(name: str) -> None:
    res = run(resolve(name))
    conv = report.check(res)
    assert conv.converged, conv.problems
    if name == "member-removal":
        assert conv.live_nodes == 19 and conv.removed_leaks == 0
        assert res.nodes[19].held < res.written  # it missed what came after its removal


def test_crashed_node_is_excluded_until_restart() -> None:
    sc = small(events=[{"at": 1.0, "kind": "crash", "node": 3}])
    res = run(sc, 2)
    conv = report.check(res)
    assert conv.converged and conv.live_nodes == 11
    assert res.nodes[3].held < 60


def test_link_overrides_apply_per_group_pair() -> None:
    import random

    from simnet.virtual.network import Network

    sc = small(link={"latency": {"dist": "constant", "value": 10.0},
                     "override": [{"between": ["a", "b"], "loss": 0.5,
                                   "latency": {"dist": "constant", "value": 100.0}}]})
    net = Network(sc.link, random.Random(1), sc.groups)
    assert net.model(0, 1).loss == 0.0 and net.model(0, 7).loss == 0.5
    assert net.model(7, 0) is net.model(0, 7)
    assert net.arrival(0, 1, 100, 0.0, stream=True) == pytest.approx(0.010, abs=1e-3)
    times = [net.arrival(0, 7, 100, 0.0, stream=False) for _ in range(200)]
    assert 50 < times.count(None) < 150
    res = run(sc, 1)
    assert report.check(res).converged and res.stalls > 0
    assert 0.02 < res.rtt < 0.2  # between the two link classes


def test_bandwidth_serialises_messages_on_a_link() -> None:
    import random

    from simnet.virtual.network import Network

    sc = small(link={"latency": {"dist": "constant", "value": 10.0}, "bandwidth": 1000})
    net = Network(sc.link, random.Random(1), sc.groups)
    assert net.arrival(0, 1, 500, 0.0, stream=True) == pytest.approx(0.51)
    assert net.arrival(0, 1, 500, 0.0, stream=True) == pytest.approx(1.01)  # queued
    assert net.arrival(1, 0, 500, 0.0, stream=True) == pytest.approx(0.51)  # other way
    net.partition(12, [sc.groups["a"], sc.groups["b"]])
    assert net.reachable(0, 5) and not net.reachable(0, 6)
    net.heal()
    assert net.reachable(0, 6)


def test_overlays_are_connected_and_symmetric() -> None:
    import random

    for kind, extra in [("full", {}), ("random", {"degree": 3}),
                        ("lan_relay", {"lans": ["a", "b"], "relays": "r", "lan_links": "none"})]:
        sc = parse({"duration": 1.0, "nodes": {"count": 30, "groups": {
            "a": "1-14", "b": "15-29", "r": [0]}}, "topology": {"kind": kind, **extra}})
        adj = build_overlay(sc, random.Random(1))
        assert all(v in adj[w] for v in range(30) for w in adj[v])
        hops, exact = diameter(adj, [True] * 30, random.Random(1))
        assert exact and hops >= 1
        if kind == "lan_relay":
            assert hops == 2 and adj[5] == [0]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize(("nodes", "deltas"), [(1000, 2000), (10_000, 50)])
def test_large_communities_converge(nodes: int, deltas: int) -> None:
    """1000 nodes (about 35 s here) and 10 000 nodes (about 25 s) still converge."""
    from simnet.bench import scaled

    res = run(scaled(nodes, deltas), 1)
    conv = report.check(res)
    assert conv.converged, conv.problems
    assert conv.live_nodes == nodes and res.written == deltas


def test_trace_hash_is_independent_of_the_process_hash_seed() -> None:
    """Nothing may depend on set/hash order: two interpreters, two PYTHONHASHSEEDs."""
    import os
    import subprocess
    import sys

    code = ("from simnet.scenario import resolve; from simnet.virtual import run; "
            "print(run(resolve('partition-heal'), 5).trace_hash)")
    hashes = set()
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs}
        out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                             capture_output=True, text=True, timeout=60).stdout.strip()
        hashes.add(out)
    assert len(hashes) == 1 and len(hashes.pop()) == 64


def test_lazy_push_converges_with_fewer_receptions_than_eager() -> None:
    base: dict[str, Any] = {
        "nodes": {"count": 60}, "topology": {"kind": "random", "degree": 4},
        "writes": {"writers": 4, "rate": 20.0, "total": 400}, "events": [],
    }
    out = {}
    for push in ("eager", "lazy"):
        res = run(small(**base, sync={"mode": "sessions", "push": push,
                                      "anti_entropy_interval": 30.0}), 2)
        conv = report.check(res)
        assert conv.converged, (push, conv.problems)
        out[push] = report.summary(res, conv)["traffic"]
    assert out["lazy"]["envelopes_received"] < 0.8 * out["eager"]["envelopes_received"]
    assert out["lazy"]["duplicate_ratio"] < out["eager"]["duplicate_ratio"] / 2

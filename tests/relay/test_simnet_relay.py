"""simnet's process backend runs real relay processes for ``lan_relay`` topologies: nodes
with no LAN links converge through the relays, across a relay crash and restart."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from simnet.backends import RealRunResult, run_real
from simnet.backends.process import ProcessBackend
from simnet.scenario import parse

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

SCENARIO = {
    "name": "process-relay-only",
    "description": "1 relay + 4 nodes on 2 LANs without LAN links; the relay crashes "
                   "while they write and comes back",
    "duration": 14.0,
    "nodes": {"count": 5, "groups": {"relays": [0], "lan_a": [1, 2], "lan_b": [3, 4]}},
    "topology": {"kind": "lan_relay", "lans": ["lan_a", "lan_b"], "relays": "relays",
                 "lan_links": "none"},
    "link": {"latency": {"dist": "uniform", "low": 5, "high": 15}},
    "writes": {"writers": [1, 3, 4], "total": 12, "rate": 1.0, "start": 1.0},
    "events": [
        {"at": 3.0, "kind": "crash", "node": 0},
        {"at": 7.0, "kind": "restart", "node": 0},
    ],
}


def test_relay_topology_converges_through_a_crashing_relay(tmp_path: Path) -> None:
    sc = parse(SCENARIO)
    backend = ProcessBackend(sc, workdir=tmp_path)
    assert backend.relay_indices == {0}
    assert all(not peers for peers in backend.adjacency)  # no LAN links at all
    assert backend.relay_links == {i: {0} for i in range(1, 5)}

    async def bounded() -> RealRunResult:
        with trio.fail_after(250):
            return await run_real(sc, "process", workdir=tmp_path, converge_timeout=90)

    result = trio.run(bounded)
    logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in tmp_path.glob("*.log"))
    kinds = [e["kind"] for e in result.events]
    assert "crash" in kinds and "restart" in kinds, result.events
    assert result.writes["ok"] == 12, (result.events, logs)
    assert result.converged, (result.events, result.vectors, logs)
    assert sorted(result.live_nodes) == [1, 2, 3, 4]
    assert len(result.expected) == 3
    assert any("relay process" in note for note in result.notes), result.notes
    relay_log = (tmp_path / "relay0.log").read_text(errors="replace")
    assert relay_log.count("--- start") == 2  # it really was restarted

"""The netns backend: orchestration on a namespace LAN (root), with the stand-in CLI
(multicast discovery instead of mDNS), and real nodes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from simnet.backends.netns import NetnsBackend
from simnet.lan import leftover_namespaces
from simnet.scenario import parse

from .test_process_backend import assert_cli_complete, run_bounded

FAKE = [sys.executable, str(Path(__file__).with_name("fake_mycelium.py"))]
RUN = "b" + str(os.getpid())

pytestmark = [pytest.mark.root, pytest.mark.timeout(200),
              pytest.mark.usefixtures("root_lan_tools")]


def scenario(**overrides: Any) -> Any:
    data: dict[str, Any] = {
        "name": "netns-partition-heal",
        "duration": 4.0,
        "nodes": {"count": 3, "groups": {"a": [0], "b": [1, 2]}},
        "link": {"latency": {"dist": "constant", "value": 5}, "loss": 0.05},
        "writes": {"writers": 3, "total": 6, "rate": 2.0, "start": 0.3},
        "events": [
            {"at": 0.2, "kind": "partition", "groups": ["a", "b"]},
            {"at": 2.5, "kind": "heal"},
        ],
    }
    data.update(overrides)
    return parse(data)


async def test_fake_nodes_discover_partition_heal(tmp_path: Path) -> None:
    backend = NetnsBackend(scenario(), run_id=RUN, workdir=tmp_path, command=FAKE,
                           converge_timeout=30)
    with trio.fail_after(120):
        result = await backend.run()
    assert result.converged, result.events
    assert result.writes["ok"] == 6
    assert any("transparent proxy" in note for note in result.notes)
    assert result.bytes_per_link["0->lan"] > 0 and result.bytes_per_link["lan->2"] > 0
    assert leftover_namespaces(RUN) == []


async def test_fake_nodes_split_without_heal_diverge(tmp_path: Path) -> None:
    sc = scenario(events=[{"at": 0.0, "kind": "partition", "groups": ["a", "b"]}],
                  duration=2.0)
    backend = NetnsBackend(sc, run_id=RUN, workdir=tmp_path, command=FAKE, converge_timeout=3)
    with trio.fail_after(120):
        result = await backend.run()
    assert not result.converged
    dids = {i: backend.nodes[i].identity.did for i in range(3)}  # type: ignore[union-attr]
    assert set(result.vectors[0]) == {dids[0]}
    assert set(result.vectors[1]) == set(result.vectors[2]) == {dids[1], dids[2]}
    assert leftover_namespaces(RUN) == []


@pytest.mark.slow
def test_real_nodes_partition_heal_over_mdns(tmp_path: Path) -> None:
    assert_cli_complete()
    sc = scenario(duration=12.0, writes={"writers": 3, "total": 9, "rate": 1.0, "start": 1.0},
                  link={"latency": {"dist": "constant", "value": 0}},
                  events=[{"at": 1.5, "kind": "partition", "groups": ["a", "b"]},
                          {"at": 6.0, "kind": "heal"}])
    result = trio.run(run_bounded, sc, "netns", tmp_path)
    logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in tmp_path.glob("*.log"))
    assert result.writes["ok"] == 9, (result.events, logs)
    assert result.converged, (result.events, result.vectors, logs)
    assert leftover_namespaces() == []

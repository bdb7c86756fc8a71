"""End to end: a partition-heal scenario on three real ``mycelium`` processes.

This is the process backend's acceptance test. It needs the node CLI of DESIGN §10
(``init``, ``id``, ``run``, ``space``, ``doc``, ``status``). A missing command or module
fails it with the exact list of what is missing: never a skip or an xfail, which would
hide a regression in CI (issue 17 §4).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from simnet.backends import RealRunResult, run_real
from simnet.backends.process import NodeProcess, mycelium_command, node_env
from simnet.scenario import parse

pytestmark = pytest.mark.timeout(240)

NEEDED = ("init", "id", "run", "space", "doc", "status")


def missing_commands() -> list[str]:
    """Commands of the node CLI contract that ``mycelium --help`` does not list yet."""
    try:
        out = subprocess.run(
            [*mycelium_command(), "--help"], capture_output=True, text=True, timeout=60,
            env={**node_env(), "COLUMNS": "200"}, check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [f"(mycelium not runnable: {exc})"]
    listed = {line.strip(" │|").split()[0] for line in out.splitlines()
              if line.strip(" │|") and not line.strip(" │|").startswith(("-", "Usage"))}
    return [cmd for cmd in NEEDED if cmd not in listed]


async def run_bounded(sc: Any, backend: Any, workdir: Path) -> RealRunResult:
    with trio.fail_after(200):
        return await run_real(sc, backend, workdir=workdir, converge_timeout=90)


def assert_cli_complete(needed: tuple[str, ...] = NEEDED) -> None:
    """Fail, naming them, if commands of the node CLI contract are missing."""
    missing = [c for c in missing_commands() if c in needed]
    assert not missing, f"the node CLI lacks {', '.join(missing)} (DESIGN §10)"


SCENARIO = {
    "name": "process-partition-heal",
    "description": "3 real nodes; node 0 is cut off while everyone writes, then healed",
    "duration": 12.0,
    "nodes": {"count": 3, "groups": {"left": [0], "right": [1, 2]}},
    "link": {"latency": {"dist": "uniform", "low": 5, "high": 15}},
    "writes": {"writers": 3, "total": 9, "rate": 1.0, "start": 1.0},
    "events": [
        {"at": 1.5, "kind": "partition", "groups": ["left", "right"]},
        {"at": 6.0, "kind": "heal"},
    ],
}


async def test_node_process_inits_real_identity(tmp_path: Path) -> None:
    assert_cli_complete(("init", "id"))
    node = NodeProcess("n0", tmp_path / "n0")
    with trio.fail_after(60):
        ident = await node.init()
        assert ident.did.startswith("did:key:z6Mk")
        assert ident.peer_id.startswith("12D3KooW")
        assert await node.read_identity() == ident
    assert not node.alive


@pytest.mark.slow
def test_three_nodes_partition_heal_converge(tmp_path: Path) -> None:
    assert_cli_complete()
    sc = parse(SCENARIO)
    result = trio.run(run_bounded, sc, "process", tmp_path)
    logs = "\n".join(p.read_text(errors="replace")[-1500:] for p in tmp_path.glob("*.log"))
    assert result.writes["ok"] == 9, (result.events, logs)
    assert result.converged, (result.events, result.vectors, logs)
    assert sorted(result.live_nodes) == [0, 1, 2]
    assert len(result.expected) == 3
    vectors = list(result.vectors.values())
    assert all(v == vectors[0] for v in vectors)
    assert result.bytes_per_link, "no traffic went through the proxy"
    assert result.convergence_s is not None and result.convergence_s < 90

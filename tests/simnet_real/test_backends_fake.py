"""The real-backend orchestration, driven against a stand-in ``mycelium`` CLI.

``fake_mycelium.py`` speaks the CLI contract and swaps version vectors over TCP through
the fault proxy, so these tests check what the harness itself does (homes, identities,
invites, the timeline, partitions through the proxy, crash/restart, convergence polling,
teardown) independently of the real node, which has its own end-to-end test.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from simnet.backends import RealRunResult, link_params, partition_groups
from simnet.backends.netns import NetnsBackend, per_port_loss
from simnet.backends.process import NodeError, NodeProcess, ProcessBackend, node_env
from simnet.errors import BackendUnavailable
from simnet.scenario import parse

FAKE = [sys.executable, str(Path(__file__).with_name("fake_mycelium.py"))]

pytestmark = pytest.mark.timeout(90)


def scenario(**overrides: Any) -> Any:
    data: dict[str, Any] = {
        "name": "fake-partition-heal",
        "duration": 4.0,
        "nodes": {"count": 3, "groups": {"a": [0], "b": [1, 2]}},
        "link": {"latency": {"dist": "constant", "value": 5}},
        "writes": {"writers": 3, "total": 6, "rate": 2.0, "start": 0.2},
        "events": [
            {"at": 0.5, "kind": "partition", "groups": ["a", "b"]},
            {"at": 2.5, "kind": "heal"},
        ],
    }
    data.update(overrides)
    return parse(data)


async def test_node_process_lifecycle(tmp_path: Path) -> None:
    node = NodeProcess("n0", tmp_path / "n0", command=FAKE)
    with trio.fail_after(30):
        ident = await node.init()
        assert ident.did.startswith("did:key:")
        assert (await node.status())["running"] is False
        from simnet.backends.process import free_port

        port = free_port()
        await node.start(["--listen", f"/ip4/127.0.0.1/tcp/{port}"])
        assert node.alive and (await node.status())["running"] is True
        with pytest.raises(NodeError, match="already running"):
            await node.start()
        await node.kill()
        assert not node.alive
        await node.start()  # same arguments again: a restart
        assert node.starts == 2
        await node.stop()
        assert not node.alive
        assert "start 2" in node.log_tail()


async def test_cli_errors_are_precise(tmp_path: Path) -> None:
    node = NodeProcess("n0", tmp_path / "n0", command=FAKE)
    with trio.fail_after(10), pytest.raises(NodeError, match="no identity"):
        await node.read_identity()


async def test_start_failure_reports_log(tmp_path: Path) -> None:
    node = NodeProcess("n0", tmp_path / "n0", command=[sys.executable, "-c",
                                                       "import sys; print('kaputt'); sys.exit(3)"])
    with trio.fail_after(10), pytest.raises(NodeError, match="kaputt"):
        await node.start([])
    assert not node.alive


async def test_partition_heal_converges(tmp_path: Path) -> None:
    backend = ProcessBackend(scenario(), workdir=tmp_path, command=FAKE, converge_timeout=20)
    with trio.fail_after(80):
        result = await backend.run()
    assert isinstance(result, RealRunResult)
    assert result.converged, result.events
    assert result.writes["ok"] == 6
    assert sorted(result.live_nodes) == [0, 1, 2]
    assert sum(result.expected.values()) == 6
    kinds = [e["kind"] for e in result.events]
    assert kinds[:1] == ["partition"] and "heal" in kinds and kinds[-1] == "converged"
    assert result.bytes_per_link["0->1"] > 0 and result.bytes_per_link["2->1"] > 0
    assert result.convergence_ratio() == 1.0
    assert not any(p.alive for p in backend.nodes)
    assert not list(tmp_path.glob("*.pid"))
    assert result.write(tmp_path / "out").exists()
    assert (tmp_path / "out" / "report.md").read_text().startswith("# simnet report")
    assert (tmp_path / "out" / "deltas.png").exists()
    assert result.samples and result.samples[-1]["written"] == 6


async def test_partition_without_heal_does_not_converge(tmp_path: Path) -> None:
    sc = scenario(events=[{"at": 0.0, "kind": "partition", "groups": ["a", "b"]}],
                  duration=2.0)
    backend = ProcessBackend(sc, workdir=tmp_path, command=FAKE, converge_timeout=2)
    with trio.fail_after(60):
        result = await backend.run()
    assert not result.converged
    assert result.convergence_s is None
    assert result.events[-1]["kind"] == "not_converged"
    # Writes started after the cut: each side only knows its own authors.
    dids = {i: backend.nodes[i].identity.did for i in range(3)}  # type: ignore[union-attr]
    assert set(result.vectors[0]) == {dids[0]}
    assert set(result.vectors[1]) == set(result.vectors[2]) == {dids[1], dids[2]}
    assert backend.proxy is None
    assert result.bytes_per_link["1->2"] > 0


async def test_crash_and_restart(tmp_path: Path) -> None:
    sc = scenario(events=[{"at": 0.3, "kind": "crash", "node": 2},
                          {"at": 1.5, "kind": "restart", "node": 2}], duration=3.0)
    backend = ProcessBackend(sc, workdir=tmp_path, command=FAKE, converge_timeout=20)
    with trio.fail_after(80):
        result = await backend.run()
    assert result.converged, result.events
    kinds = [e["kind"] for e in result.events]
    assert "crash" in kinds and "restart" in kinds
    assert result.writes["skipped"] >= 1  # node 2 wrote nothing while down
    assert backend.nodes[2].starts == 2


def test_scenario_translation() -> None:
    sc = scenario(link={"latency": {"dist": "uniform", "low": 10, "high": 30}, "loss": 0.1,
                        "bandwidth": 50000})
    params = link_params(sc.link)
    assert params.latency_s == pytest.approx(0.01)
    assert params.jitter_s == pytest.approx(0.02)
    assert params.loss == 0.1 and params.bandwidth_bps == 50000
    assert params.rto_s == pytest.approx(0.2)
    sc2 = parse({"duration": 1, "nodes": {"count": 5, "groups": {"x": [0, 1], "y": [1, 2]}}})
    assert partition_groups(sc2, ("x", "y")) == [[0, 1], [2], [3, 4]]


def test_node_env_is_scripted() -> None:
    os.environ["MYCELIUM_HOME"] = "/should/not/leak"
    try:
        env = node_env()
    finally:
        del os.environ["MYCELIUM_HOME"]
    assert "MYCELIUM_HOME" not in env
    assert env["MYCELIUM_INSECURE_FAST_KDF"] == "1" and env["MYCELIUM_PASSPHRASE"]


def test_loss_split_over_two_ports() -> None:
    p = per_port_loss(0.19)
    assert 1 - (1 - p) ** 2 == pytest.approx(0.19)


def test_not_root_is_backend_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BackendUnavailable, match="needs root"):
        NetnsBackend(scenario())


SMALL_TOML = """
name = "cli-small"
duration = 3.0
[nodes]
count = 3
groups = { a = [0], b = [1, 2] }
[link]
latency = { dist = "constant", value = 5.0 }
[writes]
writers = 2
total = 4
rate = 2.0
start = 0.2
[[events]]
at = 0.5
kind = "partition"
groups = ["a", "b"]
[[events]]
at = 1.5
kind = "heal"
"""


def test_simnet_cli_process_backend(tmp_path: Path) -> None:
    """``simnet run --backend process --json`` honours the §10 contract end to end."""
    import json
    import shlex
    import subprocess

    toml = tmp_path / "small.toml"
    toml.write_text(SMALL_TOML)
    out = tmp_path / "report"
    env = {**os.environ, "SIMNET_MYCELIUM": shlex.join(FAKE)}
    simnet = Path(sys.executable).parent / "simnet"
    proc = subprocess.run(
        [str(simnet), "run", str(toml), "--backend", "process", "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["converged"] is True and data["nodes"] == 3
    assert data["convergence_ratio"] == 1.0 and data["wall_s"] > 0
    assert isinstance(data["trace_hash"], str)
    for name in ("report.json", "report.md", "deltas.png", "bytes.png"):
        assert (out / name).exists(), name
    assert not Path(data["workdir"]).exists()  # a converged run cleans its homes


def test_module_entry_points() -> None:
    from simnet import lan, proxy

    assert lan.main([]) == 2  # usage
    with pytest.raises(SystemExit):
        proxy.main(["transparent", "--src", "0", "--params", "{\"loss\": 2}"])


def test_free_ports_are_never_handed_out_twice_and_lie_below_the_ephemeral_range() -> None:
    """Tests take several ports before anything listens on them: a repeat would make two
    processes race for one port (500 random draws from ~12 000 ports repeat one almost
    surely, so this fails without the record of handed-out ports)."""
    from simnet.backends.process import _ephemeral_range, free_port

    ports = [free_port() for _ in range(500)]
    assert len(set(ports)) == len(ports)
    low, _ = _ephemeral_range()
    assert all(p < low for p in ports)

"""Done-when of issue 12 §2 with real processes (`mycelium relay` + `mycelium run`).

The owner's device is lost; two of three guardians rebuild the identity on a new device,
which names the relay and gets back the market space (as its admin) and the personal
diary; it writes and the other member accepts the writes. Then the old device turns up
again: both devices of the one identity write concurrently, and everything converges
with nothing refused (device chains, protocols/delta.md §10).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio

from simnet.backends.process import NodeProcess, RelayProcess, free_port
from tests.integration.cluster import community, converged, run_args, stop_all

pytestmark = pytest.mark.slow

DIARY = {"title": "seeds", "body": "planted the beans by the south fence", "mood": "hopeful"}


def _run_args(relay: RelayProcess) -> list[str]:
    return ["--listen", f"/ip4/127.0.0.1/tcp/{free_port()}", "--no-mdns", "--api",
            "127.0.0.1:0", "--web", "off", "--relay", relay.pinned_url]


async def _put(node: NodeProcess, doc_id: str) -> None:
    data = {"title": doc_id, "quantity": 1, "unit": "kg"}
    await node.op("doc_put", ["doc", "put", "market", "products", doc_id, "--data",
                              json.dumps(data)], space="market", coll="products", doc_id=doc_id,
                  data=data)


async def _products(node: NodeProcess) -> set[str]:
    listed = await node.op("doc_list", ["doc", "list", "market", "products"],
                           space="market", coll="products")
    return {d["_id"] for d in listed["docs"]}


async def _backlog_empty(node: NodeProcess, timeout: float) -> None:
    with trio.fail_after(timeout):
        while True:
            relays = (await node.status())["relays"]
            if relays and relays[0]["state"] == "connected" and relays[0]["backlog"] == 0:
                return
            await trio.sleep(0.3)


def _refused(status: dict[str, Any]) -> dict[str, int]:
    """Every refusal a node counted (``rejected.<reason>``) and forks it detected."""
    metrics = status["metrics"]
    assert any(k.startswith("ingest") or k.startswith("local_writes") for k in metrics), metrics
    return {k: v for k, v in metrics.items()
            if (k.startswith("rejected.") or k == "forks_detected") and v}


async def _recover(tmp_path: Path, old: NodeProcess, new: NodeProcess) -> None:
    """Guardians (set up on the old device, its node stopped) rebuild the identity."""
    assert old.identity is not None
    guardians = [NodeProcess(f"g{i}", tmp_path / f"g{i}") for i in range(3)]
    dids = [(await g.init()).did for g in guardians]
    package = (await old.cli_json("guardians", "setup", "--threshold", "2", *dids))["package"]
    (tmp_path / "new").mkdir()
    start = await new.cli_json("recover", "start", old.identity.did)
    approvals = [(await g.cli_json("recover", "approve", start["request"], "--package",
                                   package, "--code", start["code"]))["approval"]
                 for g in guardians[:2]]
    assert (await new.cli_json("recover", "finish", *approvals))["did"] == old.identity.did
    await new.read_identity()


async def test_lost_device_comes_back_whole_then_two_devices_write(tmp_path: Path) -> None:
    relay = RelayProcess("relay", tmp_path / "relay")
    nodes, space_id = await community(tmp_path, 2)
    old, bob = nodes
    assert old.identity is not None
    new = NodeProcess("new", tmp_path / "new", direct_api=True)
    everyone = [old, bob, new]
    try:
        await relay.start()
        await old.start(_run_args(relay))
        await bob.start(_run_args(relay))
        await old.op("doc_put", ["doc", "put", "personal", "diary", "2026-12-01", "--data",
                                 json.dumps(DIARY)], space="personal", coll="diary",
                     doc_id="2026-12-01", data=DIARY)
        await _put(old, "before-loss")
        await converged([old, bob], space_id, timeout=30)
        await _backlog_empty(old, timeout=30)  # the relay holds the diary's ciphertext
        await old.stop()

        await _recover(tmp_path, old, new)
        # The new device writes before it has synced anything (its own device chain).
        await new.cli("doc", "put", "personal", "diary", "2026-12-06", "--data",
                      json.dumps(DIARY))

        # First contact with the relay brings the market and the diary back.
        await new.start(_run_args(relay))
        await converged([new, bob], space_id, timeout=60)
        with trio.fail_after(30):  # the personal space syncs beside the market
            while True:
                listed = await new.op("doc_list", ["doc", "list", "personal", "diary"],
                                      space="personal", coll="diary")
                if sorted(d["_id"] for d in listed["docs"]) == ["2026-12-01", "2026-12-06"]:
                    break
                await trio.sleep(0.3)
        got = await new.op("doc_get", ["doc", "get", "personal", "diary", "2026-12-01"],
                           space="personal", coll="diary", doc_id="2026-12-01")
        assert {k: got["doc"][k] for k in DIARY} == DIARY
        assert "before-loss" in await _products(new)
        newcomer = NodeProcess("newcomer", tmp_path / "newcomer")
        invited = await new.cli_json("space", "invite", "market", (await newcomer.init()).did)
        assert invited["invite"]  # still the market's admin

        # The old device was only mislaid: both devices write at the same time.
        await old.start()
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(_put, new, f"new-{i}")
                nursery.start_soon(_put, old, f"old-{i}")
        await converged(everyone, space_id, timeout=60)
        want = {"before-loss", *(f"new-{i}" for i in range(5)), *(f"old-{i}" for i in range(5))}
        for node in everyone:
            assert want <= await _products(node), node.name
            assert _refused(await node.status()) == {}, node.name
    finally:
        await stop_all(everyone)
        await relay.stop()


async def test_recovered_device_gets_its_spaces_back_from_a_peer(tmp_path: Path) -> None:
    """No relay: the first peer the recovered node meets gives its spaces back
    (``/mycelium/restore/1``, protocols/sync.md §9), with its admin rights."""
    nodes, space_id = await community(tmp_path, 2)
    old, bob = nodes
    new = NodeProcess("new", tmp_path / "new", direct_api=True)
    bob_port = free_port()
    try:
        await bob.start(run_args(bob_port, []))
        await old.start(run_args(free_port(), [(bob_port, bob)]))
        await _put(old, "before-loss")
        await converged([old, bob], space_id, timeout=30)
        await old.stop()
        await _recover(tmp_path, old, new)
        await new.start(run_args(free_port(), [(bob_port, bob)]))
        await converged([new, bob], space_id, timeout=60)
        assert "before-loss" in await _products(new)
        await _put(new, "after-recovery")
        await converged([new, bob], space_id, timeout=30)
        assert "after-recovery" in await _products(bob)
        assert _refused(await bob.status()) == {} == _refused(await new.status())
        newcomer = NodeProcess("newcomer", tmp_path / "newcomer")
        invited = await new.op("space_invite", ["space", "invite", "market",
                                                (await newcomer.init()).did],
                               space="market", did=newcomer.identity.did if newcomer.identity
                               else "")
        assert invited["invite"]
    finally:
        await stop_all([old, bob, new])

"""A running node process against misbehaving peers: garbage, oversized frames, forged and
replayed envelopes, a stream flood. Each is cut off with a logged reason; the node keeps
serving an honest peer and its store stays intact."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from mycelium.codec.frames import encode_frame, encode_uvarint
from mycelium.identity.keystore import load_keystore
from mycelium.log import envelope
from mycelium.net.host import open_host
from mycelium.net.sync_driver import SessionRunner
from mycelium.store.soil import Soil
from mycelium.sync.messages import Live, encode_message
from mycelium.sync.session import SessionState, SyncSession
from simnet.backends.process import PASSPHRASE, NodeProcess, free_port

from .cluster import community, converged, put, run_args, stop_all

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class WireTamperer:
    """Wraps a FramedStream: forges outgoing envelopes (one ``ct`` byte flipped, so the CBOR
    stays valid and only the signature check can notice) or, once the session is live,
    replays every envelope the rogue holds. The honest SyncSession would never send either,
    so the attack is made on the wire, as a malicious implementation would."""

    def __init__(self, framed: Any, envelopes: list[bytes], mode: str) -> None:
        self.framed, self.envelopes, self.mode = framed, envelopes, mode

    def __getattr__(self, name: str) -> Any:
        return getattr(self.framed, name)

    async def send(self, data: bytes) -> None:
        if self.mode == "forge":
            for raw in self.envelopes:
                data = data.replace(raw, _flip(raw))
        await self.framed.send(data)


def _flip(raw: bytes) -> bytes:
    """The same envelope with one bit of its ciphertext flipped (still canonical CBOR)."""
    env = envelope.decode(raw)
    ct = bytes([env.ct[0] ^ 0x01]) + env.ct[1:]
    return dataclasses.replace(env, ct=ct, raw=b"").encode()


async def rogue_session(rogue: NodeProcess, target: NodeProcess, port: int, mode: str,
                        done: Callable[[dict[str, int]], bool]) -> None:
    """Run one sync session from ``rogue``'s identity against the node process ``target``,
    until ``done(target's metrics)`` says the target has handled the attack (a positive
    signal polled with a bound, not a pause that a slow machine outlasts)."""
    identity = load_keystore(rogue.home / "keystore.json", PASSPHRASE)
    assert target.identity is not None
    with Soil.open(rogue.home / "soil.db", identity) as soil:
        space = soil.resolve_space("market")
        mine = soil.envelopes_since(space, {}, limit=1000, max_bytes=1 << 24)
        async with open_host(identity, ["/ip4/127.0.0.1/tcp/0"]) as host:
            await host.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{target.identity.peer_id}")
            framed = WireTamperer(await host.open_sync_stream(target.identity.peer_id), mine, mode)
            session = SyncSession(soil, local_id=identity.public_key,
                                  remote_id=_pub(target.identity.peer_id), initiator=True,
                                  now=trio.current_time())
            runner = SessionRunner(session, framed, on_event=lambda e: None)  # type: ignore[arg-type]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(runner.run)
                with trio.move_on_after(8):
                    while session.state is not SessionState.LIVE:
                        await trio.sleep(0.05)
                if mode == "replay" and session.state is SessionState.LIVE:
                    index = session._offered.index(space)  # test-only peek at the offer order
                    await framed.framed.send(encode_frame(encode_message(Live(index, mine))))
                with trio.move_on_after(60):
                    while not done((await target.status())["metrics"]):
                        await trio.sleep(0.2)
                nursery.cancel_scope.cancel()


def _counted(metrics: dict[str, int], prefix: str) -> int:
    return sum(v for k, v in metrics.items() if k.startswith(prefix))


def _pub(peer_id: str) -> bytes:
    from mycelium.identity.didkey import public_key_from_peer_id

    return public_key_from_peer_id(peer_id)


async def _raw_garbage(target: NodeProcess, port: int, payloads: list[bytes]) -> None:
    from mycelium.identity.identity import Identity

    assert target.identity is not None
    async with open_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"]) as host:
        await host.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{target.identity.peer_id}")
        for payload in payloads:
            framed = await host.open_sync_stream(target.identity.peer_id)
            try:
                await framed.send(payload)
                with trio.move_on_after(3):
                    while await framed.receive_some() is not None:
                        pass
            except Exception:
                pass


async def test_misbehaving_peers_are_cut_off_and_the_node_keeps_serving(tmp_path: Path) -> None:
    nodes, space_id = await community(tmp_path, 3)
    target, honest, rogue = nodes
    ports = [free_port(), free_port()]
    try:
        await put(target, "seed", "from the target")
        await put(rogue, "rogue-1", "written by the rogue member")
        await target.start(run_args(ports[0], []))

        await _raw_garbage(target, ports[0], [
            b"\xff" * 64,                                  # not a frame of CBOR
            encode_uvarint(64 << 20) + b"x" * 32,          # announces a 64 MiB frame
            encode_uvarint(5) + b"\xa1\x61t\x61z",         # well-framed, unknown message
        ])
        start = (await target.status())["metrics"]
        await rogue_session(rogue, target, ports[0], "forge",
                            lambda m: _counted(m, "rejected.") > _counted(start, "rejected."))
        before = (await target.status())["metrics"]
        await rogue_session(rogue, target, ports[0], "replay",
                            lambda m: m.get("duplicates", 0) > before.get("duplicates", 0))
        after = (await target.status())["metrics"]
        assert after.get("duplicates", 0) > before.get("duplicates", 0), (before, after)

        async def flood() -> None:
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(_raw_garbage, target, ports[0], [b"\x00"])

        with trio.move_on_after(30):
            await flood()

        status = await target.status()
        assert status["running"]
        await honest.start(run_args(ports[1], [(ports[0], target)]))
        await put(honest, "honest-1", "after the attacks")
        await converged([target, honest], space_id, timeout=60)
        log = target.log_path.read_text()
        for reason in ("bad_frame", "oversized_frame", "bad_signature"):
            assert f"reason={reason}" in log or reason in log, reason
        metrics = (await target.status())["metrics"]
        assert any(k.startswith("rejected.") for k in metrics), metrics
        listed = await target.op("doc_list", ["doc", "list", "market", "products"],
                                 space="market", coll="products")
        assert {d["_id"] for d in listed["docs"]} >= {"seed", "honest-1"}
        await target.stop()
        assert json.loads(json.dumps(await target.cli_json("doc", "get", "market", "products",
                                                           "seed")))["doc"]["title"]
    finally:
        await stop_all(nodes)

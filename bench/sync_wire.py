"""Sync efficiency (issue #5): wire bytes vs delta bytes, round trips, loopback throughput.

Three measurements, side by side in one run:

* **wire overhead** — a node holding N deltas syncs an empty peer over an in-memory byte
  pipe (real Soil stores, real SyncSession): bytes written by both sessions vs the bytes of
  the envelopes that had to move. Target: ratio <= 1.2 plus a small per-session constant.
* **round trips** — flights until the empty side holds everything (a flight = each side's
  pending output delivered once; two flights = one round trip).
* **loopback throughput** — the same N deltas over two real py-libp2p hosts on 127.0.0.1
  (TCP + Noise + Yamux), in deltas per second, next to the in-memory rate of the same sync
  so the network's share is visible as a ratio.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from mycelium.identity.identity import Identity
from mycelium.spaces import service
from mycelium.store.soil import Soil
from mycelium.sync.session import SyncSession


def _community(root: Path, n: int) -> tuple[Soil, Soil, bytes, int]:
    """Writer with ``n`` product deltas; an empty joiner. Returns bytes of all envelopes."""
    a = Soil.open(root / "a.db", Identity.generate(), synchronous="NORMAL")
    b = Soil.open(root / "b.db", Identity.generate(), synchronous="NORMAL")
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, b.identity.did))
    for i in range(n):
        a.put_doc(space, "products", f"p{i}", {"title": f"tomatoes batch {i}", "quantity": 5,
                                              "unit": "kg", "price": 250, "currency": "EUR"})
    missing = a.envelopes_since(space, b.version_vector(space), limit=10**9, max_bytes=1 << 40)
    return a, b, space, sum(len(raw) for raw in missing)


def _flight(s: SyncSession) -> bytes:
    """Everything the session has to send now (``data_to_send`` hands it out as the
    transport drains, ``max_out_bytes`` at a time)."""
    out = [s.data_to_send()]
    while s.output_pending:
        out.append(s.data_to_send())
    return b"".join(out)


def _pump(sa: SyncSession, sb: SyncSession, done: Any) -> tuple[int, int]:
    """Deliver flights until ``done()``; returns (flights, wire bytes)."""
    flights = wire = 0
    while not done() and flights < 10_000:
        da, db = _flight(sa), _flight(sb)
        if not da and not db:
            break
        wire += len(da) + len(db)
        now = float(flights)
        if da:
            sb.receive_data(da, now)
        if db:
            sa.receive_data(db, now)
        flights += 1
    return flights, wire


def wire_and_round_trips(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        a, b, space, delta_bytes = _community(Path(tmp), n)
        try:
            target = a.version_vector(space)
            ia, ib = a.identity, b.identity
            sb = SyncSession(b, local_id=ib.public_key, remote_id=ia.public_key,
                             initiator=True, now=0.0)
            sa = SyncSession(a, local_id=ia.public_key, remote_id=ib.public_key,
                             initiator=False, now=0.0)
            start = time.perf_counter()
            # With nothing to move, run to quiescence: that is the per-session constant.
            flights, wire = _pump(sa, sb, (lambda: b.version_vector(space) == target) if n
                                  else (lambda: False))
            elapsed = time.perf_counter() - start
            assert b.version_vector(space) == target, "in-memory sync did not converge"
            return {
                "deltas": sum(target.values()), "delta_bytes": delta_bytes, "wire_bytes": wire,
                "overhead_ratio": round(wire / delta_bytes, 4) if delta_bytes else None,
                "overhead_bytes": wire - delta_bytes,
                "flights": flights, "round_trips": flights / 2,
                "in_memory_deltas_per_s": round(sum(target.values()) / elapsed),
            }
        finally:
            a.close()
            b.close()


async def _loopback(n: int) -> dict[str, Any]:
    from mycelium.identity.didkey import public_key_from_peer_id
    from mycelium.net.host import open_host
    from mycelium.net.sync_driver import SessionRunner

    with tempfile.TemporaryDirectory() as tmp:
        a, b, space, _ = _community(Path(tmp), n)
        target = a.version_vector(space)
        try:
            async with open_host(a.identity, ["/ip4/127.0.0.1/tcp/0"]) as ha, \
                    open_host(b.identity, ["/ip4/127.0.0.1/tcp/0"]) as hb, \
                    trio.open_nursery() as nursery:

                async def serve(peer_id: str, framed: Any) -> None:
                    s = SyncSession(a, local_id=a.identity.public_key,
                                    remote_id=public_key_from_peer_id(peer_id), initiator=False,
                                    now=trio.current_time())
                    await SessionRunner(s, framed, on_event=lambda e: None).run()

                ha.set_sync_handler(serve)
                start = trio.current_time()
                await hb.connect(ha.addrs()[0])
                framed = await hb.open_sync_stream(ha.peer_id)
                session = SyncSession(b, local_id=b.identity.public_key,
                                      remote_id=a.identity.public_key, initiator=True,
                                      now=trio.current_time())
                runner = SessionRunner(session, framed, on_event=lambda e: None)
                nursery.start_soon(runner.run)
                with trio.fail_after(300):
                    while b.version_vector(space) != target:
                        await trio.sleep(0.005)
                elapsed = trio.current_time() - start
                nursery.cancel_scope.cancel()
            return {"deltas": sum(target.values()), "seconds": round(elapsed, 3),
                    "deltas_per_s": round(sum(target.values()) / elapsed)}
        finally:
            a.close()
            b.close()


def run(quick: bool = False) -> dict[str, Any]:
    n = 1_000 if quick else 10_000
    memory = wire_and_round_trips(n)
    loopback = trio.run(_loopback, n)
    empty_side = wire_and_round_trips(0)
    return {
        "n": n,
        "in_memory": memory,
        "loopback_libp2p": loopback,
        "loopback_vs_memory": round(loopback["deltas_per_s"] / memory["in_memory_deltas_per_s"], 3),
        "session_constant_bytes": empty_side["wire_bytes"],
        "target_overhead_ratio": 1.2,
        "meets_target": memory["overhead_ratio"] <= 1.2
        or memory["wire_bytes"] <= 1.2 * memory["delta_bytes"] + 4 * empty_side["wire_bytes"],
    }


def markdown(result: dict[str, Any]) -> str:
    m, lo = result["in_memory"], result["loopback_libp2p"]
    return "\n".join([
        "### sync_wire (issue #5)",
        "",
        f"Syncing {m['deltas']} missing deltas to an empty peer (real Soil, real SyncSession).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| envelope bytes that had to move | {m['delta_bytes']} |",
        f"| bytes on the wire (both directions) | {m['wire_bytes']} |",
        f"| wire / delta bytes | {m['overhead_ratio']} (target <= 1.2 + small constant) |",
        f"| per-session constant (nothing to sync) | {result['session_constant_bytes']} B |",
        f"| flights until caught up (empty side initiates) | {m['flights']} "
        f"({m['round_trips']} round trips) |",
        f"| in-memory sync rate | {m['in_memory_deltas_per_s']} deltas/s |",
        f"| loopback libp2p (TCP+Noise+Yamux) rate | {lo['deltas_per_s']} deltas/s "
        f"({lo['seconds']} s) |",
        f"| loopback / in-memory | {result['loopback_vs_memory']} |",
    ])

"""The node under attack (issue 16), and round trips to catch up (issue 12).

Side by side in one run:

* **WANT loop amplification** — a hostile peer (a former member: it knows the space id)
  drives a real SyncSession: HELLO, then ``ack`` with huge credit + ``want(s, {})`` until
  the session ends. Bytes the victim sent per byte it received, and per byte of one full
  sync of the space (before issue 16: 186 bytes in, 51 MB out, never ending).
* **slot attack** — an honest member's catch-up time over real py-libp2p hosts on
  127.0.0.1, alone and while 16 throwaway ids hold 64 inbound sync streams.
* **CPU per MiB of hostile frames** — decoding 1 MiB frames built to be dear to refuse
  (a million empty arrays; a vector claiming a million entries), next to an honest batch.
* **round trips to catch up 10k deltas** from empty (in-memory pair, flights / 2), with
  the adaptive window and with a fixed 256-envelope window, and the time that implies on
  a 100 ms-RTT, 10 MiB/s link next to one bulk transfer of the same bytes; then the same
  catch-up between real hosts through simnet's fault proxy (100 ms RTT) next to a bulk
  transfer of the same wire bytes over that link, and both on loopback (the CPU share);
  before/after issue 12's first flight (window grown from 256 envelopes, or 1 MiB first).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import trio

from mycelium.sync.messages import (
    Ack,
    Envelopes,
    ProtocolError,
    Want,
    decode_message,
    encode_message,
)
from mycelium.sync.session import CaughtUp, SessionError, SyncLimits
from tests.sync.hostile import Hostile
from tests.sync.pair import make_nodes, open_pair, pump

S1 = b"\x01" * 32


def want_loop(n: int, size: int) -> dict[str, Any]:
    (node,) = make_nodes(1)
    node.store.add_space(S1)
    space_bytes = sum(map(len, node.write(S1, n, size=size)))
    h = Hostile(node.store, node.id, spaces=(S1,))
    h.drain()
    first_in, first_out = h.bytes_in, h.bytes_out  # the honest-looking first sync
    wants = 0
    while not h.closed and wants < 10_000:
        h.send(Ack(1 << 20, 1 << 30))
        h.send(Want(0, {}))
        wants += 1
        h.drain()
    reason = next((e.reason for e in h.victim.events() if isinstance(e, SessionError)), None)
    return {"envelopes": n, "space_bytes": space_bytes, "wants": wants,
            "bytes_in": h.bytes_in, "bytes_out": h.bytes_out,
            "out_per_in": round(h.bytes_out / h.bytes_in, 1),
            "out_per_space": round(h.bytes_out / space_bytes, 2), "ended": reason,
            "loop_out_per_in": round((h.bytes_out - first_out) / max(1, h.bytes_in - first_in),
                                     1)}


def _cpu_per_mib(payload: bytes, repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        with contextlib.suppress(ProtocolError):
            decode_message(payload)
    spent = (time.process_time() - start) / repeat
    return round(spent * 1000 * (1 << 20) / len(payload), 3)  # ms per MiB


def cpu_per_mib(quick: bool) -> dict[str, Any]:
    n = (1 << 20) - 5
    arrays = b"\x9a" + n.to_bytes(4, "big") + b"\x80" * n
    vector = b"\xa3\x61s\x00\x61tbvv\x62vv\xba\x00\x0f\x42\x40" + b"\x00" * ((1 << 20) - 20)
    (node,) = make_nodes(1)
    node.store.add_space(S1)
    honest = encode_message(Envelopes(0, node.write(S1, 200, size=3000)))
    repeat = 3 if quick else 20
    return {"empty_arrays_ms_per_mib": _cpu_per_mib(arrays, repeat),
            "huge_vector_ms_per_mib": _cpu_per_mib(vector, repeat),
            "honest_batch_ms_per_mib": _cpu_per_mib(honest, repeat),
            **_small_batch_vs_cbor2(node, 50 if quick else 500)}


def _small_batch_vs_cbor2(node: Any, repeat: int) -> dict[str, Any]:
    """The bounded reader next to cbor2's C decoder on a batch of 256 small envelopes
    (the per-item cost simnet's virtual nodes pay on every frame)."""
    import cbor2

    frame = encode_message(Envelopes(0, node.write(S1, 256, size=150)))
    start = time.process_time()
    for _ in range(repeat):
        decode_message(frame)
    ours = time.process_time() - start
    start = time.process_time()
    for _ in range(repeat):
        cbor2.loads(frame)
    theirs = time.process_time() - start
    return {"small_batch_us_per_envelope": round(ours / repeat / 256 * 1e6, 3),
            "small_batch_vs_cbor2": round(ours / theirs, 2) if theirs else None}


#: Before issue 12's first-flight fix: the window grew from 256 envelopes (~80 KB of
#: small deltas) instead of 1 MiB. Run side by side with the defaults.
FIRST_256 = SyncLimits(credit_envelopes=256)


def round_trips(n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"deltas": n}
    for name, limits in (("adaptive", SyncLimits()), ("from_256", FIRST_256),
                         ("fixed_256", SyncLimits(credit_envelopes=256, credit_growth=1))):
        a, b = make_nodes(2)
        for node in (a, b):
            node.store.add_space(S1)
        moved = sum(map(len, b.write(S1, n, size=200)))
        sa, sb = open_pair(a, b, limits=limits)
        trace = pump(sa, sb)
        rts = (trace.caught_up_a or trace.flights) / 2
        out[f"{name}_round_trips"] = rts
        rtt, bw = 0.1, 10 * (1 << 20)
        out[f"{name}_model_s"] = round(rts * rtt + moved / bw, 2)
        out["bulk_model_s"] = round(rtt + moved / bw, 2)
    return out


async def _bulk(ha: Any, hb: Any, wire: int) -> float:
    """Seconds to open a stream from ``ha`` to ``hb``, send ``wire`` bytes and get a reply."""
    from mycelium.net.framing import FramedStream

    async def sink(peer_id: str, stream: FramedStream) -> None:
        total = 0
        while total < wire:
            data = await stream.receive_some()
            if data is None:
                break
            total += len(data)
        await stream.send(b"ok")

    hb.set_sync_handler(sink)
    start = trio.current_time()
    bulk = await ha.open_sync_stream(hb.peer_id)
    await bulk.send(b"x" * wire)
    await bulk.receive_some()
    return trio.current_time() - start


@contextlib.asynccontextmanager
async def _linked_hosts(rtt: float) -> AsyncIterator[tuple[Any, Any]]:
    """Two real hosts, ``a`` connected to ``b`` through simnet's fault proxy (``rtt``)."""
    from simnet.faults import LinkParams
    from simnet.proxy import FaultProxy
    from tests.net.util import hosts

    async with hosts(2) as (ha, hb), FaultProxy() as proxy:
        proxy.set_target("b", "127.0.0.1", int(hb.addrs()[0].split("/")[4]))
        port = await proxy.open_route("a", "b")
        proxy.set_default(LinkParams(latency_s=rtt / 2))
        await ha.connect(f"/ip4/127.0.0.1/tcp/{port}/p2p/{hb.peer_id}")
        yield ha, hb


async def _over_link(n: int, rtt: float, limits: SyncLimits | None = None) -> dict[str, Any]:
    """Catch up ``n`` deltas from empty over real hosts whose link has ``rtt`` (the
    simnet fault proxy adds latency), next to one bulk transfer of the same wire bytes
    over a libp2p stream: on a fresh connection (``bulk_s``, what the sync has) and on
    the connection the sync warmed up (``warm_bulk_s``, measured before issue 12's
    fix): the first megabytes of a fresh connection are slower through this stack."""
    from tests.net.syncpeer import SyncPeer, wait_until

    async with _linked_hosts(rtt) as (ha, hb), trio.open_nursery() as nursery:
        a, b = SyncPeer(ha, limits=limits), SyncPeer(hb, limits=limits)
        for p in (a, b):
            p.store.add_space(S1)
        b.write(S1, n)
        start = trio.current_time()
        framed = await ha.open_sync_stream(hb.peer_id)
        runner = a.runner(hb.peer_id, framed, initiator=True)
        nursery.start_soon(runner.run)
        await wait_until(lambda: any(isinstance(e, CaughtUp) for e in a.events), timeout=120)
        sync_s = trio.current_time() - start
        wire = framed.bytes_in + framed.bytes_out
        warm_s = await _bulk(ha, hb, wire)
        nursery.cancel_scope.cancel()
    async with _linked_hosts(rtt) as (ha, hb):
        bulk_s = await _bulk(ha, hb, wire)
    return {"deltas": n, "rtt_s": rtt, "wire_bytes": wire, "sync_s": round(sync_s, 2),
            "bulk_s": round(bulk_s, 2), "warm_bulk_s": round(warm_s, 2),
            "sync_rtts": round(sync_s / rtt, 1), "ratio": round(sync_s / bulk_s, 2),
            "warm_ratio": round(sync_s / warm_s, 2)}


def over_link(n: int, limits: SyncLimits | None = None, repeat: int = 3) -> dict[str, Any]:
    """The run with the median ratio of ``repeat`` (one run varies by +-30 % here)."""
    runs = sorted((trio.run(_over_link, n, 0.1, limits) for _ in range(repeat)),
                  key=lambda r: r["ratio"])
    return runs[len(runs) // 2]


async def _slot_attack(n: int, attack: bool) -> float:
    from mycelium.codec.frames import encode_frame
    from mycelium.errors import MyceliumError
    from mycelium.net.framing import FramedStream
    from mycelium.sync.messages import Hello
    from tests.net.syncpeer import SyncPeer, wait_until
    from tests.net.util import hosts

    hello = encode_frame(encode_message(Hello(salt=b"\x00" * 16, offers=(),
                                              credit_envelopes=256, credit_bytes=1 << 20)))
    async with hosts(18) as (hs, hm, *attackers), trio.open_nursery() as nursery:
        server, member = SyncPeer(hs), SyncPeer(hm)
        hs.set_member_check(lambda peer_id: peer_id == hm.peer_id)
        for p in (server, member):
            p.store.add_space(S1)
        server.write(S1, n)
        held: list[FramedStream] = []
        if attack:
            for i, attacker in enumerate(attackers):
                await attacker.connect(hs.addrs()[0])
                for k in range(6):
                    with contextlib.suppress(MyceliumError):
                        framed = await attacker.open_sync_stream(hs.peer_id)
                        if (i + k) % 3 == 0:
                            await framed.send(hello)
                        held.append(framed)
            await trio.sleep(hs.limits.evict_grace_s)
        start = trio.current_time()
        nursery.start_soon(member.sync_with, server)
        await wait_until(lambda: any(isinstance(e, CaughtUp) for e in member.events),
                         timeout=60.0)
        took = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return took


def slot_attack(n: int) -> dict[str, Any]:
    calm = trio.run(_slot_attack, n, False)
    attacked = trio.run(_slot_attack, n, True)
    return {"envelopes": n, "calm_s": round(calm, 3), "attacked_s": round(attacked, 3),
            "ratio": round(attacked / calm, 2) if calm else None}


def run(quick: bool = False) -> dict[str, Any]:
    return {
        "name": "sync_attack",
        "want_loop": want_loop(200 if quick else 2000, 4000),
        "slot_attack": slot_attack(200 if quick else 2000),
        "cpu": cpu_per_mib(quick),
        "round_trips": round_trips(2000 if quick else 10_000),
        "over_link": over_link(2000 if quick else 10_000),
        "over_link_from_256": over_link(2000 if quick else 10_000, FIRST_256),
        "over_loopback": trio.run(_over_link, 2000 if quick else 10_000, 0.002),
    }


def markdown(result: dict[str, Any]) -> str:
    w, s, c, r = (result["want_loop"], result["slot_attack"], result["cpu"],
                  result["round_trips"])
    link, lo, old = result["over_link"], result["over_loopback"], result["over_link_from_256"]
    added = round((link["sync_s"] - lo["sync_s"]) / link["rtt_s"], 1)
    added_bulk = round((link["bulk_s"] - lo["bulk_s"]) / link["rtt_s"], 1)
    return "\n".join([
        "### sync_attack (issue 16; round trips: issue 12)",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| hostile WANT loop over {w['envelopes']} x 4 KB: bytes in / out | "
        f"{w['bytes_in']} / {w['bytes_out']} ({w['wants']} WANTs, ended: {w['ended']}) |",
        f"| bytes out per byte in: whole session / the WANT loop after the first sync | "
        f"{w['out_per_in']} / {w['loop_out_per_in']} |",
        f"| bytes out per byte of one full sync | {w['out_per_space']} |",
        f"| honest catch-up of {s['envelopes']}, calm / under 64-stream slot attack | "
        f"{s['calm_s']} s / {s['attacked_s']} s (x{s['ratio']}) |",
        f"| CPU per MiB: a million empty arrays | {c['empty_arrays_ms_per_mib']} ms |",
        f"| CPU per MiB: vector claiming a million entries | {c['huge_vector_ms_per_mib']} ms |",
        f"| CPU per MiB: honest batch (decode only) | {c['honest_batch_ms_per_mib']} ms |",
        f"| bounded reader, batch of 256 small envelopes: per envelope / x cbor2's C decoder "
        f"| {c['small_batch_us_per_envelope']} us / x{c['small_batch_vs_cbor2']} |",
        f"| round trips to catch up {r['deltas']} deltas: adaptive / window grown from 256 "
        f"envelopes (before) / fixed 256 window | {r['adaptive_round_trips']} / "
        f"{r['from_256_round_trips']} / {r['fixed_256_round_trips']} |",
        f"| modelled time at 100 ms RTT, 10 MiB/s: adaptive / fixed / one bulk transfer | "
        f"{r['adaptive_model_s']} s / {r['fixed_256_model_s']} s / {r['bulk_model_s']} s |",
        f"| real hosts, {link['deltas']} deltas over a 100 ms-RTT proxy: sync / bulk of the "
        f"same {link['wire_bytes']} bytes, each on a fresh connection | "
        f"{link['sync_s']} s ({link['sync_rtts']} RTT) / "
        f"{link['bulk_s']} s (x{link['ratio']}) |",
        f"| the same, window grown from 256 envelopes (before; same run) | "
        f"{old['sync_s']} s ({old['sync_rtts']} RTT) / {old['bulk_s']} s (x{old['ratio']}) |",
        f"| bulk on the connection the sync warmed (the comparison before): after / before | "
        f"{link['warm_bulk_s']} s (x{link['warm_ratio']}) / {old['warm_bulk_s']} s "
        f"(x{old['warm_ratio']}) |",
        f"| the same on loopback (CPU share) | {lo['sync_s']} s / {lo['bulk_s']} s |",
        f"| round trips the 100 ms link adds: sync / bulk | {added} / {added_bulk} |",
    ])

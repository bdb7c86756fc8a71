"""Gateway (issue 18): webhook -> listing -> reply with 50 concurrent senders, next to a plain
Starlette endpoint that only stores the raw body (same run, same server and client), the
intent parser alone, and the membership cost of 10 000 custodial senders.

* **twilio**: signed form POST; the reply comes back in the response (TwiML), so latency is
  the whole path: verify, inbox commit, parse, listing delta (signed, encrypted, applied to
  Soil), reply commit.
* **meta**: signed WhatsApp JSON POST; latency runs until the reply reaches a loopback
  fake of the Graph API (ack, inbox, worker, listing, outbox, HTTP send).
* **baseline**: the same POSTs to an endpoint that stores the raw body in SQLite
  (WAL, synchronous=FULL, like the gateway's inbox) and answers 200.
* **membership**: N senders as delegated custodial writers (protocols/delegation.md): time
  to resolve the space's membership from its stored envelopes (what a node does on start),
  a member node's sync (ingest) of every certificate and listing, and the bytes synced;
  next to the same senders as ordinary members, which the control-log budget and the
  member cap (4096) limit.

Client and servers share this process (hypercorn on loopback, trio): both sides of each
comparison pay the same client cost. Numbers are reported, never asserted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import trio

SENDERS = 50
PUBLIC_URL = "https://bench.example.org"
SECRET = "bench-secret"
TOKEN = "bench-token"
OFFERS = ["I have 5kg of tomatoes", "tengo 3 docenas de huevos a 2 euros",
          "vendo 2 potes de mel por 20 reais", "who has honey?", "¿quién tiene huevos?",
          "sold out of tomatoes", "help", "I need chamomile tea"]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _summary(latencies: list[float], wall: float) -> dict[str, float]:
    return {"messages": len(latencies), "msgs_per_s": round(len(latencies) / wall, 1),
            "p50_ms": round(_pct(latencies, 0.5) * 1000, 2),
            "p99_ms": round(_pct(latencies, 0.99) * 1000, 2)}


def _twilio_signature(url: str, params: dict[str, str]) -> str:
    import base64

    data = url + "".join(k + v for k, v in sorted(params.items()))
    return base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()
                            ).decode()


def _wa_body(wamid: str, text: str, sender: int) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "W", "changes": [
        {"field": "messages", "value": {
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PN1"},
            "contacts": [{"wa_id": f"55119{sender:08d}"}],
            "messages": [{"from": f"55119{sender:08d}", "id": wamid,
                          "timestamp": str(int(time.time())), "type": "text",
                          "text": {"body": text}}]}}]}]}).encode()


async def _serve(nursery: trio.Nursery, app: Any) -> str:
    from hypercorn.config import Config
    from hypercorn.trio import serve

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = logging.getLogger("bench.hypercorn")
    return str((await nursery.start(serve, app, config))[0])


def _baseline_app(db: Path) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    conn = sqlite3.connect(str(db), isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE raw (id INTEGER PRIMARY KEY, body BLOB)")

    async def store(request: Request) -> PlainTextResponse:
        conn.execute("INSERT INTO raw (body) VALUES (?)", (await request.body(),))
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/store", store, methods=["POST"])])


async def _load(per_sender: int, send: Any) -> tuple[list[float], float]:
    """SENDERS concurrent senders, each sending ``per_sender`` messages one after another."""
    latencies: list[float] = []
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for s in range(SENDERS):
            async def one(s: int = s) -> None:
                for i in range(per_sender):
                    t0 = time.perf_counter()
                    await send(s, i)
                    latencies.append(time.perf_counter() - t0)
            nursery.start_soon(one)
    return latencies, time.perf_counter() - start


async def _http(root: Path, per_sender: int) -> dict[str, Any]:
    from mycelium.gateway.db import GatewayDB
    from mycelium.gateway.market import Market, ensure_market
    from mycelium.gateway.server import GatewayServer
    from mycelium.gateway.service import Gateway, GatewayConfig
    from mycelium.identity.identity import Identity
    from mycelium.store.soil import Soil

    received: dict[str, trio.Event] = {}

    async def graph_post(url: str, body: dict[str, Any], headers: dict[str, str]
                         ) -> tuple[int, Any]:
        received.setdefault(str(body["to"]), trio.Event()).set()
        return 200, {"messages": [{"id": "wamid.out"}]}

    soil = Soil.open(root / "soil.db", Identity.generate())
    db = GatewayDB(root / "gateway.db")
    out: dict[str, Any] = {}
    limits = httpx.Limits(max_connections=SENDERS, max_keepalive_connections=SENDERS)
    try:
        async with trio.open_nursery() as nursery, httpx.AsyncClient(
                timeout=60, limits=limits) as client:
            base = await _serve(nursery, _baseline_app(root / "baseline.db"))
            config = GatewayConfig(public_url=PUBLIC_URL, twilio_auth_token=TOKEN,
                                   meta_app_secret=SECRET, graph_url="http://unused")
            gateway = Gateway(config, db, Market(soil, ensure_market(soil, "market")))
            server = GatewayServer(gateway, listen="127.0.0.1:0", post=graph_post)
            await nursery.start(server.serve)
            url = str(server.url)

            async def baseline(s: int, i: int) -> None:
                r = await client.post(base + "/store", content=_wa_body(f"b{s}.{i}", "x", s))
                r.raise_for_status()

            async def twilio(s: int, i: int) -> None:
                params = {"MessageSid": f"SM{s}x{i}", "From": f"whatsapp:+55119{s:08d}",
                          "To": "whatsapp:+14155238886", "Body": OFFERS[i % len(OFFERS)]}
                sig = _twilio_signature(PUBLIC_URL + "/webhooks/twilio", params)
                r = await client.post(url + "/webhooks/twilio", data=params,
                                      headers={"X-Twilio-Signature": sig})
                r.raise_for_status()

            async def meta(s: int, i: int) -> None:
                raw = _wa_body(f"wamid.{s}.{i}", OFFERS[i % len(OFFERS)], s)
                sig = "sha256=" + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest()
                to = f"55119{s:08d}"
                received[to] = trio.Event()
                r = await client.post(url + "/webhooks/meta", content=raw,
                                      headers={"X-Hub-Signature-256": sig})
                r.raise_for_status()
                with trio.fail_after(60):
                    await received[to].wait()

            for name, send in (("baseline", baseline), ("twilio", twilio), ("meta", meta),
                               ("baseline_again", baseline)):
                latencies, wall = await _load(per_sender, send)
                out[name] = _summary(latencies, wall)
            out["listings"] = len(soil.list_docs(gateway.market.space, "products"))
            nursery.cancel_scope.cancel()
    finally:
        db.close()
        soil.close()
    return out


def _parser(n: int) -> dict[str, float]:
    from mycelium.gateway.intent import parse

    start = time.perf_counter()
    for i in range(n):
        parse(OFFERS[i % len(OFFERS)])
    return {"messages": n, "msgs_per_s": round(n / (time.perf_counter() - start))}


def _membership(root: Path, senders: int) -> dict[str, Any]:
    from mycelium.identity.identity import Identity
    from mycelium.log.envelope import Kind
    from mycelium.log.envelope import decode as decode_envelope
    from mycelium.spaces import delegation, service
    from mycelium.spaces.genesis import parse_genesis
    from mycelium.spaces.state import SpaceState
    from mycelium.store.soil import Soil

    gw = Identity(b"\x05" * 32)
    soil = Soil.open(root / f"gw{senders}.db", gw, synchronous="NORMAL")
    space = service.create_space(soil, "market")
    t0 = time.perf_counter()
    idents = [Identity(hashlib.sha256(b"sender%d" % i).digest()) for i in range(senders)]
    for i, ident in enumerate(idents):
        cert = delegation.issue(gw.signing_key, kind="custodial", space=space,
                                subject=ident.public_key, issued_ms=i)
        soil.append(space, Kind.CONTROL, cert.payload(), signer=ident)
        soil.put_doc(space, "products", f"l{i}", {"title": "tomatoes", "status": "available",
                                                  "shared": True}, signer=ident)
    write_s = time.perf_counter() - t0
    controls = [decode_envelope(raw) for raw in soil.control_envelopes(space)]
    genesis = parse_genesis(soil.genesis(space))
    t0 = time.perf_counter()
    state = SpaceState(genesis)
    state.apply_many(controls)  # as received from a peer: every certificate verified
    resolve_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    SpaceState(genesis).apply_many(controls, stored=True)  # a node loading its own store
    load_s = time.perf_counter() - t0
    probe = decode_envelope(soil.envelopes_since(space, {}, limit=10**6, max_bytes=1 << 40)[-1])
    t0 = time.perf_counter()
    for _ in range(10_000):
        state.check_data_author(probe)
    check_us = (time.perf_counter() - t0) / 10_000 * 1e6
    raws = soil.envelopes_since(space, {}, limit=10**7, max_bytes=1 << 40)
    member = Identity(b"\x06" * 32)
    code = service.invite(soil, space, member.did)
    fresh = Soil.open(root / f"member{senders}.db", member, synchronous="NORMAL")
    service.join(fresh, code)
    t0 = time.perf_counter()
    result = fresh.ingest(space, soil.envelopes_since(space, fresh.version_vector(space),
                                                      limit=10**7, max_bytes=1 << 40))
    ingest_s = time.perf_counter() - t0
    docs = len(fresh.list_docs(space, "products"))
    ops = state.control_count
    fresh.close()
    soil.close()
    return {"senders": senders, "control_ops": ops, "delegations": len(state.delegations),
            "write_s": round(write_s, 2), "resolve_ms": round(resolve_s * 1000, 1),
            "load_ms": round(load_s * 1000, 1),
            "check_author_us": round(check_us, 2), "sync_envelopes": len(raws),
            "sync_bytes": sum(len(r) for r in raws), "member_ingest_s": round(ingest_s, 2),
            "member_sees_listings": docs, "rejected": len(result.rejected)}


def _as_members(root: Path, senders: int) -> dict[str, Any]:
    """The same senders added as ordinary members (add op + key grant each)."""
    from mycelium.errors import MyceliumError
    from mycelium.identity.identity import Identity
    from mycelium.log.envelope import Kind
    from mycelium.spaces import control, service
    from mycelium.spaces.state import SpaceState
    from mycelium.store.soil import Soil

    gw = Identity(b"\x07" * 32)
    soil = Soil.open(root / f"members{senders}.db", gw, synchronous="NORMAL")
    space = service.create_space(soil, "market")
    added, error = 0, None
    for i in range(senders):
        pub = Identity(hashlib.sha256(b"m%d" % i).digest()).public_key
        try:  # what invite does, without building an invite code each time
            lc = soil.space_state(space).next_lc()
            soil.append(space, Kind.CONTROL, control.op_add_member(lc=lc, member=pub))
            service.maintain(soil, space)  # the key grant for the new member
            added += 1
        except MyceliumError as exc:
            error = getattr(exc, "reason", type(exc).__name__)
            break
    from mycelium.log.envelope import decode as decode_envelope

    controls = [decode_envelope(raw) for raw in soil.control_envelopes(space)]
    t0 = time.perf_counter()
    state = SpaceState(soil.space_state(space).genesis)
    state.apply_many(controls, stored=True)
    members = len(state.members)  # forces the replay
    resolve_s = time.perf_counter() - t0
    skipped = Counter(state.ignored.values())
    soil.close()
    return {"senders": senders, "added": added, "stopped_by": error,
            "members": members - 1, "skipped_ops": dict(skipped),
            "control_ops": len(controls), "resolve_ms": round(resolve_s * 1000, 1)}


def run(quick: bool) -> dict[str, Any]:
    per_sender = 2 if quick else 10
    senders = 300 if quick else 10_000
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        root = Path(tmp)
        http = trio.run(_http, root, per_sender)
        membership = _membership(root, senders)
        members = _as_members(root, 200 if quick else 10_000)
    parser = _parser(2_000 if quick else 20_000)
    base = http["baseline"]["msgs_per_s"]
    return {"name": "gateway", "quick": quick, "senders_concurrent": SENDERS, "http": http,
            "ratio_twilio_vs_baseline": round(http["twilio"]["msgs_per_s"] / base, 3),
            "ratio_meta_vs_baseline": round(http["meta"]["msgs_per_s"] / base, 3),
            "parser": parser, "delegated": membership, "as_members": members}


def markdown(result: dict[str, Any]) -> str:
    h = result["http"]
    rows = ["| path | messages | msgs/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for name in ("baseline", "twilio", "meta", "baseline_again"):
        r = h[name]
        rows.append(f"| {name} | {r['messages']} | {r['msgs_per_s']} | {r['p50_ms']} | "
                    f"{r['p99_ms']} |")
    d, m = result["delegated"], result["as_members"]
    return "\n".join([
        f"{result['senders_concurrent']} concurrent senders on loopback "
        f"(twilio: reply in the response; meta: until the reply reaches the Graph fake).", "",
        *rows, "",
        f"twilio / baseline = {result['ratio_twilio_vs_baseline']}, "
        f"meta / baseline = {result['ratio_meta_vs_baseline']}; "
        f"parser alone {result['parser']['msgs_per_s']} msgs/s.", "",
        "| senders as | senders | control ops | resolve ms (received / loaded) | notes |",
        "|---|---|---|---|---|",
        f"| delegated (custodial) | {d['senders']} | {d['control_ops']} | {d['resolve_ms']} / "
        f"{d['load_ms']} | {d['delegations']} certificates; author check "
        f"{d['check_author_us']} µs; sync {d['sync_envelopes']} envelopes / "
        f"{d['sync_bytes'] // 1024} KiB, member ingest {d['member_ingest_s']} s, sees "
        f"{d['member_sees_listings']} listings |",
        f"| members (add + grant) | {m['senders']} | {m['control_ops']} | — / "
        f"{m['resolve_ms']} | {m['members']} effective members; skipped ops "
        f"{m['skipped_ops']}; stopped by {m['stopped_by']} |",
    ])


if __name__ == "__main__":
    import sys

    res = run(quick="--quick" in sys.argv)
    print(json.dumps(res, indent=2))
    print(markdown(res))


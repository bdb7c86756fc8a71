"""Generate protocols/vectors/delta-*.json (run: ``python -m tests.log.vectors_gen``).

Everything is derived from fixed seeds, keys and nonces, so the output is stable; the
checks in ``test_vectors.py`` recompute each value from its inputs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.codec import cbor
from mycelium.crdt.doc import DocState
from mycelium.crdt.hlc import HLC, Timestamp
from mycelium.crdt.payload import delete_doc, set_fields
from mycelium.log.envelope import Envelope, Kind, seal
from mycelium.log.validate import validate_batch

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
SEED = bytes([1]) * 32
SEED_B = bytes([2]) * 32
SPACE = hashlib.sha256(b"mycelium delta vectors space").digest()
KEY = bytes(range(32))
EPOCH = 7


def nonce(i: int) -> bytes:
    return bytes([i]) * 24


def signer(seed: bytes = SEED) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(seed)


def envelope_case(env: Envelope, payload: bytes, seed: bytes, n: bytes | None) -> dict[str, Any]:
    return {
        "seed_hex": seed.hex(), "space_hex": env.space.hex(), "seq": env.seq,
        "prev_hex": env.prev.hex() if env.prev else None, "epoch": env.epoch,
        "kind": int(env.kind), "group_key_hex": KEY.hex() if env.kind is Kind.DATA else None,
        "nonce_hex": n.hex() if n is not None else "", "payload_hex": payload.hex(),
        "aad_hex": env.aad().hex(), "signing_input_hex": env.signing_input().hex(),
        "ct_hex": env.ct.hex(), "sig_hex": env.sig.hex(), "envelope_hex": env.raw.hex(),
        "delta_id_hex": env.delta_id.hex(),
    }


def chain() -> tuple[list[Envelope], list[bytes], list[bytes | None]]:
    payloads = [
        set_fields("products", "p1", {"title": "Tomatoes", "quantity": 5, "unit": "kg",
                                      "price": 250, "currency": "EUR", "status": "available"},
                   Timestamp(1764000000000, 0, SEED[:8])).encode(),
        set_fields("products", "p1", {"status": "sold", "price": None},
                   Timestamp(1764000000500, 0, SEED[:8])).encode(),
        delete_doc("products", "p1", Timestamp(1764000001000, 3, SEED[:8])).encode(),
    ]
    envs, prev = [], None
    nonces: list[bytes | None] = []
    for i, p in enumerate(payloads, start=1):
        env = seal(signer=signer(), space=SPACE, seq=i, prev=prev, epoch=EPOCH, payload=p,
                   group_key=KEY, nonce=nonce(i))
        envs.append(env)
        nonces.append(nonce(i))
        prev = env.delta_id
    ctrl_payload = cbor.encode({"op": "example", "lc": 1})
    control = seal(signer=signer(SEED_B), space=SPACE, seq=1, prev=None, epoch=0,
                   payload=ctrl_payload, group_key=None, kind=Kind.CONTROL)
    envs.append(control)
    payloads.append(ctrl_payload)
    nonces.append(None)
    return envs, payloads, nonces


def envelope_vectors() -> dict[str, Any]:
    envs, payloads, nonces = chain()
    seeds = [SEED, SEED, SEED, SEED_B]
    return {
        "description": "Delta envelopes (protocols/delta.md §2-§4): seal(seed, space, seq, prev,"
                       " epoch, payload, group_key, nonce, kind) must give envelope_hex; "
                       "aad, signing input, ct, sig and delta_id as listed. The first three "
                       "form one author's chain (prev = delta_id of the previous).",
        "envelopes": [envelope_case(e, p, s, n)
                      for e, p, s, n in zip(envs, payloads, seeds, nonces, strict=True)],
    }


def flip(raw: bytes, index: int) -> str:
    b = bytearray(raw)
    b[index] ^= 1
    return bytes(b).hex()


def validation_vectors() -> dict[str, Any]:
    envs, _, _ = chain()
    a1, a2, a3, _ = envs
    cases = []

    def case(name: str, batch: list[bytes], head: Envelope | None) -> None:
        heads = {head.author: (head.seq, head.delta_id)} if head else {}
        held = {e.seq: e.delta_id for e in (a1, a2, a3) if head and e.seq <= head.seq}
        v = validate_batch(SPACE, batch, heads, lambda a, s: held.get(s))
        cases.append({
            "name": name, "batch_hex": [r.hex() for r in batch],
            "head": {"seq": head.seq, "delta_id_hex": head.delta_id.hex()} if head else None,
            "ready_seqs": [e.seq for e in v.ready], "pending_seqs": [e.seq for e in v.pending],
            "duplicates": len(v.duplicates),
            "rejected": sorted(reason for _, reason in v.rejected),
        })

    case("whole chain out of order", [a3.raw, a1.raw, a2.raw], None)
    case("gap held pending", [a1.raw, a3.raw], None)
    case("extends head; duplicate", [a1.raw, a2.raw, a3.raw], a1)
    case("bit flip in ct", [bytes.fromhex(flip(a1.raw, a1.raw.index(a1.ct) + 5))], None)
    case("bit flip in sig", [bytes.fromhex(flip(a1.raw, a1.raw.index(a1.sig) + 5))], None)
    case("bit flip in author", [bytes.fromhex(flip(a1.raw, len(a1.raw) - 1))], None)
    case("bit flip in space", [bytes.fromhex(flip(a1.raw, a1.raw.index(a1.space) + 1))], None)
    case("seq changed", [bytes.fromhex(flip(a1.raw, a1.raw.index(b"cseq") + 4))], None)
    case("not CBOR", [b"\xff"], None)
    case("wrong space", [seal(signer=signer(), space=bytes(32), seq=1, prev=None, epoch=EPOCH,
                              payload=b"x", group_key=KEY, nonce=nonce(9)).raw], None)
    case("seq 2^63: beyond any store", [seal(signer=signer(), space=SPACE, seq=2**63,
                                              prev=a3.delta_id, epoch=EPOCH, payload=b"x",
                                              group_key=KEY, nonce=nonce(10)).raw, a1.raw], None)
    return {
        "description": "validate_batch verdicts (protocols/delta.md §5-§6) for the chain in "
                       "delta-envelope.json: each case gives the batch, the receiver's head for "
                       "the author (or null) and the expected buckets.",
        "space_hex": SPACE.hex(), "cases": cases,
    }


def document_vectors() -> dict[str, Any]:
    envs, payloads, _ = chain()
    doc, steps = DocState(), []
    author = envs[0].author
    from mycelium.crdt.payload import decode_payload

    for p in payloads[:3]:
        doc.apply(decode_payload(p), author)
        steps.append({"payload_hex": p.hex(), "visible": doc.visible()})
    clock = HLC(b"n", Timestamp(0, 0, b"n"))
    hlc_steps = []
    events: list[tuple[str, int, Timestamp | None]] = [
        ("now", 100, None), ("now", 100, None), ("recv", 90, Timestamp(200, 4, b"r")),
        ("now", 150, None), ("now", 201, None)]
    for kind, wall, remote in events:
        ts = clock.now(wall) if remote is None else clock.recv(remote, wall)
        hlc_steps.append({"event": kind, "wall_ms": wall,
                          "remote": [remote[0], remote[1], remote[2].hex()] if remote else None,
                          "result": [ts.wall_ms, ts.counter, ts.node.hex()]})
    return {
        "description": "Payload bytes and the visible document after applying each in order "
                       "(protocols/delta.md §7), and an HLC run from (0,0,'6e') (§7.2).",
        "author_hex": author.hex(), "steps": steps, "hlc_node_hex": b"n".hex(),
        "hlc": hlc_steps,
    }


def main() -> None:
    for name, data in (("envelope", envelope_vectors()), ("validation", validation_vectors()),
                       ("document", document_vectors())):
        path = VECTORS / f"delta-{name}.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""protocols/vectors/delta-*.json must hold for this implementation."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.crdt.doc import DocState
from mycelium.crdt.hlc import HLC, Timestamp
from mycelium.crdt.payload import decode_payload
from mycelium.log.envelope import Kind, decode, seal
from mycelium.log.validate import validate_batch

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"delta-{name}.json").read_text())
    return data


def hx(value: str | None) -> bytes | None:
    return None if value is None else bytes.fromhex(value)


def test_envelope_vectors() -> None:
    cases = load("envelope")["envelopes"]
    assert len(cases) >= 4
    for c in cases:
        kind = Kind(c["kind"])
        env = seal(signer=Ed25519PrivateKey.from_private_bytes(bytes.fromhex(c["seed_hex"])),
                   space=bytes.fromhex(c["space_hex"]), seq=c["seq"], prev=hx(c["prev_hex"]),
                   epoch=c["epoch"], payload=bytes.fromhex(c["payload_hex"]),
                   group_key=hx(c["group_key_hex"]), kind=kind,
                   nonce=bytes.fromhex(c["nonce_hex"]) if kind is Kind.DATA else None)
        assert env.raw.hex() == c["envelope_hex"]
        assert env.aad().hex() == c["aad_hex"]
        assert env.signing_input().hex() == c["signing_input_hex"]
        assert env.ct.hex() == c["ct_hex"] and env.sig.hex() == c["sig_hex"]
        assert env.delta_id.hex() == c["delta_id_hex"]
        back = decode(bytes.fromhex(c["envelope_hex"]))
        back.verify_signature()
        if kind is Kind.DATA:
            assert back.open(bytes.fromhex(c["group_key_hex"])).hex() == c["payload_hex"]
    chain = [c for c in cases if c["kind"] == 0]
    for prev, nxt in itertools.pairwise(chain):
        assert nxt["prev_hex"] == prev["delta_id_hex"]


def test_validation_vectors() -> None:
    v = load("validation")
    space = bytes.fromhex(v["space_hex"])
    envelopes = {c["seq"]: c for c in load("envelope")["envelopes"] if c["kind"] == 0}
    for case in v["cases"]:
        head = case["head"]
        heads = {}
        if head is not None:
            author = decode(bytes.fromhex(envelopes[1]["envelope_hex"])).author
            heads = {author: (head["seq"], bytes.fromhex(head["delta_id_hex"]))}
        held = {s: bytes.fromhex(e["delta_id_hex"]) for s, e in envelopes.items()
                if head is not None and s <= head["seq"]}
        verdict = validate_batch(space, [bytes.fromhex(b) for b in case["batch_hex"]], heads,
                                 _lookup(held))
        assert [e.seq for e in verdict.ready] == case["ready_seqs"], case["name"]
        assert [e.seq for e in verdict.pending] == case["pending_seqs"], case["name"]
        assert len(verdict.duplicates) == case["duplicates"], case["name"]
        assert sorted(r for _, r in verdict.rejected) == case["rejected"], case["name"]


def test_document_and_hlc_vectors() -> None:
    v = load("document")
    author = bytes.fromhex(v["author_hex"])
    doc = DocState()
    for step in v["steps"]:
        doc.apply(decode_payload(bytes.fromhex(step["payload_hex"])), author)
        assert doc.visible() == step["visible"]
    node = bytes.fromhex(v["hlc_node_hex"])
    clock = HLC(node, Timestamp(0, 0, node))
    for step in v["hlc"]:
        if step["event"] == "now":
            ts = clock.now(step["wall_ms"])
        else:
            wall, counter, rnode = step["remote"]
            ts = clock.recv(Timestamp(wall, counter, bytes.fromhex(rnode)), step["wall_ms"])
        assert [ts.wall_ms, ts.counter, ts.node.hex()] == step["result"]


def _lookup(held: dict[int, bytes]) -> Callable[[bytes, int], bytes | None]:
    return lambda author, seq: held.get(seq)

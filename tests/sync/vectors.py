"""Builds protocols/vectors/sync-*.json deterministically (fixed keys, salts and nonces).

Regenerate after an intentional wire change with ``python -m tests.sync.vectors``;
``test_vectors.py`` checks the committed files against this builder and decodes them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.codec import cbor
from mycelium.codec.frames import encode_frame
from mycelium.log.envelope import seal
from mycelium.sync.gossip import encode_gossip, topic_for_space
from mycelium.sync.memstore import MemoryStore
from mycelium.sync.messages import (
    Ack,
    Bye,
    Done,
    Envelopes,
    Error,
    Have,
    Hello,
    Live,
    Message,
    Prune,
    Vector,
    Want,
    encode_message,
)
from mycelium.sync.offers import initiator_token, responder_token
from mycelium.sync.session import SyncSession

OUT = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
SPACE = bytes.fromhex("5a" * 32)
OTHER_SPACE = bytes.fromhex("6b" * 32)
GROUP_KEY = bytes(range(32))
SALT_I = bytes.fromhex("00112233445566778899aabbccddeeff")
SALT_R = bytes.fromhex("ffeeddccbbaa99887766554433221100")


def key(n: int) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)


def pub(k: Ed25519PrivateKey) -> bytes:
    return k.public_key().public_bytes_raw()


def jsonable(value: Any) -> Any:
    """CBOR value -> JSON: byte strings become lowercase hex (also as map keys)."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {(k.hex() if isinstance(k, bytes) else k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def envelope(seq: int = 1, prev: bytes | None = None) -> bytes:
    return seal(signer=key(3), space=SPACE, seq=seq, prev=prev, epoch=0, payload=b"hello",
                group_key=GROUP_KEY, nonce=bytes(24)).raw


def frame_case(name: str, msg: Message, note: str) -> dict[str, Any]:
    payload = encode_message(msg)
    return {"name": name, "note": note, "message": jsonable(cbor.decode(payload)),
            "payload_hex": payload.hex(), "frame_hex": encode_frame(payload).hex()}


def frames() -> dict[str, Any]:
    a, b = pub(key(1)), pub(key(2))
    env = envelope()
    tok = initiator_token(SPACE, salt_i=SALT_I, initiator=a, responder=b)
    ans = responder_token(SPACE, salt_i=SALT_I, salt_r=SALT_R, initiator=a, responder=b)
    cases = [
        frame_case("hello-initiator", Hello(SALT_I, (tok,), 256, 1 << 20),
                   "initiator offers one space; grants 256 envelopes / 1 MiB credit"),
        frame_case("hello-responder", Hello(SALT_R, (ans,), 256, 1 << 20),
                   "responder answers the offer it shares"),
        frame_case("vv", Vector(0, {pub(key(3)): 1}), "version vector of offer 0"),
        frame_case("vv-empty", Vector(0, {}), "empty version vector"),
        frame_case("env", Envelopes(0, [env]), "reconciliation batch with one envelope"),
        frame_case("live", Live(0, [env]), "live push"),
        frame_case("ack", Ack(1, len(env)), "credit top-up after one envelope"),
        frame_case("keepalive", Ack(0, 0), "zero ACK: keepalive"),
        frame_case("done", Done(0), "offer 0: everything the peer lacked was sent"),
        frame_case("want", Want(0, {}), "still missing after DONE: resend from this vector"),
        frame_case("bye", Bye(), "orderly close"),
        frame_case("err", Error("bad_signature"), "close with a reason"),
        frame_case("hello-lazy", Hello(SALT_I, (tok,), 256, 1 << 20, caps=("lazy",)),
                   "initiator offering the lazy push capability (§7.5)"),
        frame_case("have", Have(0, {pub(key(3)): 7}), "lazy push: the sender holds these"),
        frame_case("prune", Prune(0), "lazy push: stop pushing envelopes on this link"),
    ]
    return {"description": "Sync frames: uvarint length prefix + canonical CBOR message "
                           "(protocols/sync.md §2, §4). Byte strings are hex in 'message'.",
            "envelope_hex": env.hex(), "cases": cases}


def offers() -> dict[str, Any]:
    a, b = pub(key(1)), pub(key(2))
    cases = []
    for space in (SPACE, OTHER_SPACE):
        cases.append({
            "space_id": space.hex(), "initiator_id": a.hex(), "responder_id": b.hex(),
            "salt_i": SALT_I.hex(), "salt_r": SALT_R.hex(),
            "initiator_token": initiator_token(space, salt_i=SALT_I, initiator=a,
                                               responder=b).hex(),
            "responder_token": responder_token(space, salt_i=SALT_I, salt_r=SALT_R,
                                               initiator=a, responder=b).hex(),
        })
    return {"description": "Space offer tokens (protocols/sync.md §3): "
                           "HMAC-SHA256(key=space_id, msg)[:16]", "cases": cases}


def topics() -> dict[str, Any]:
    env = envelope()
    return {"description": "GossipSub topics and messages (protocols/sync.md §8)",
            "cases": [{"space_id": s.hex(), "topic": topic_for_space(s)}
                      for s in (SPACE, OTHER_SPACE)],
            "gossip_message_hex": encode_gossip([env]).hex()}


def transcript() -> dict[str, Any]:
    """A whole session: empty initiator, responder holding two envelopes of SPACE."""
    ka, kb = key(1), key(2)
    sa_store, sb_store = MemoryStore(), MemoryStore()
    sa_store.add_space(SPACE)
    sb_store.add_space(SPACE)
    first = envelope()
    second = seal(signer=key(3), space=SPACE, seq=2, prev=sb_store.cache.info(first).delta_id,
                  epoch=0, payload=b"world", group_key=GROUP_KEY, nonce=bytes(24)).raw
    sb_store.ingest(SPACE, [first, second])
    sa = SyncSession(sa_store, local_id=pub(ka), remote_id=pub(kb), initiator=True, now=0,
                     salt=SALT_I)
    sb = SyncSession(sb_store, local_id=pub(kb), remote_id=pub(ka), initiator=False, now=0,
                     salt=SALT_R)
    flights = []
    while True:
        out_a, out_b = sa.frames_to_send(), sb.frames_to_send()
        if not out_a and not out_b:
            break
        flights.append({"initiator": [f.hex() for f in out_a],
                        "responder": [f.hex() for f in out_b]})
        for f in out_a:
            sb.receive_frame(f, 0)
        for f in out_b:
            sa.receive_frame(f, 0)
    return {"description": "Full session transcript (protocols/sync.md §7): initiator key "
                           "0x01*32, responder key 0x02*32, both members of space_id; "
                           "the responder holds two envelopes by author key 0x03*32. Each "
                           "flight lists frame payloads sent at once by each side.",
            "space_id": SPACE.hex(), "initiator_id": pub(ka).hex(), "responder_id": pub(kb).hex(),
            "salt_i": SALT_I.hex(), "salt_r": SALT_R.hex(),
            "responder_envelopes": [first.hex(), second.hex()], "flights": flights}


def refused() -> dict[str, Any]:
    """Payloads a receiver must refuse, and the reason (protocols/sync.md §4.1, §5, §6)."""
    envs = [envelope(i, prev=bytes([i]) * 32 if i > 1 else None) for i in range(1, 31)]
    batch = encode_message(Envelopes(0, envs))
    # array of 30: 2-byte head 0x98 0x1e after the map head and the "e" key
    indefinite = batch[:3] + b"\x9f" + batch[5:-9] + b"\xff" + batch[-9:]
    n = 64
    cases = [
        ("indefinite-length batch (same length as the canonical form)", indefinite,
         "bad_frame"),
        ("batch holding empty arrays instead of envelopes",
         b"\xa3\x61e\x98" + bytes([n]) + b"\x80" * n + b"\x61s\x00\x61tcenv", "bad_message"),
        ("vector claiming a million entries (refused from its head)",
         b"\xa3\x61s\x00\x61tbvv\x62vv\xba\x00\x0f\x42\x40", "too_many_entries"),
        ("non-minimal head: done with s=0 as a 1-byte argument",
         b"\xa2\x61s\x18\x00\x61tddone", "bad_frame"),
        ("keys out of canonical order", b"\xa2\x61tddone\x61s\x00", "bad_frame"),
        ("trailing byte after the message", b"\xa1\x61tcbye\x00", "bad_frame"),
        ("a top-level array", b"\x82\x01\x02", "bad_message"),
        ("unknown key before the type tag", b"\xa2\x61a\x00\x61tcbye", "unknown_message"),
    ]
    return {"description": "Payloads a receiver refuses (protocols/sync.md §4.1): hex "
                           "payload (no length prefix) and the error reason",
            "cases": [{"name": name, "payload": payload.hex(), "reason": reason}
                      for name, payload, reason in cases]}


def build() -> dict[str, dict[str, Any]]:
    return {"sync-frames.json": frames(), "sync-offers.json": offers(),
            "sync-topics.json": topics(), "sync-session.json": transcript(),
            "sync-refused.json": refused()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, content in build().items():
        (OUT / name).write_text(json.dumps(content, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Regenerate protocols/vectors/spaces-*.json: ``.venv/bin/python -m tests.spaces.vectors_gen``.

Genesis, control-op, epoch-id and invite vectors are deterministic. The resolution
vector embeds sealed boxes (random by construction), so regenerating it changes its
bytes but never its expected outcome.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mycelium.codec import cbor
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Envelope, Kind, seal
from mycelium.spaces import control
from mycelium.spaces.genesis import make_genesis, parse_genesis
from mycelium.spaces.invite import encode_invite
from mycelium.spaces.state import epoch_id_for

OUT = Path(__file__).resolve().parents[2] / "protocols" / "vectors"
SEEDS = {name: bytes([i]) * 32 for i, name in enumerate("ABCDE", start=1)}  # E: a stranger
KEYS = {"E1": b"\x11" * 32, "E2": b"\x22" * 32, "E3": b"\x33" * 32}


def ident(name: str) -> Identity:
    return Identity.from_seed(SEEDS[name])


def pub(name: str) -> bytes:
    return ident(name).public_key


def genesis_vectors() -> dict[str, Any]:
    cases = [("A", "market", "community", 1_764_000_000_000, bytes(range(16))),
             ("A", "personal", "personal", 0, b""),
             ("B", "Huerta Sol ☀", "community", 1, b"\x00")]
    valid = []
    for who, name, kind, created, salt in cases:
        raw = make_genesis(ident(who), name, kind, created, salt)  # type: ignore[arg-type]
        valid.append({"seed_hex": SEEDS[who].hex(), "name": name, "kind": kind,
                      "created_ms": created, "salt_hex": salt.hex(), "genesis_hex": raw.hex(),
                      "space_id_hex": parse_genesis(raw).space_id.hex()})
    tampered = bytearray(bytes.fromhex(valid[0]["genesis_hex"]))
    tampered[-1] ^= 1
    return {
        "description": "Space genesis (protocols/spaces.md §2): make_genesis(seed, name, kind, "
                       "created_ms, salt) must equal genesis_hex; space_id = sha256(genesis).",
        "valid": valid,
        "invalid": [{"genesis_hex": bytes(tampered).hex(), "reason": "bad_genesis",
                     "why": "last signature byte flipped"}],
    }


def control_vectors() -> dict[str, Any]:
    box = b"\xbb" * 133
    a = pub("A")
    ops = [
        ("epoch", {"lc": 1, "keys": {a.hex(): box.hex()}}, control.op_epoch(lc=1, keys={a: box})),
        ("grant", {"lc": 2, "epoch": 42, "keys": {a.hex(): box.hex()}},
         control.op_grant(lc=2, epoch=42, keys={a: box})),
        ("add", {"lc": 3, "member": a.hex(), "role": "admin"},
         control.op_add_member(lc=3, member=a, role="admin")),
        ("remove", {"lc": 4, "member": a.hex(), "keep": 7, "head": (b"\x07" * 32).hex()},
         control.op_remove_member(lc=4, member=a, keep=7, head=b"\x07" * 32)),
        ("remove", {"lc": 4, "member": a.hex(), "keep": 0},
         control.op_remove_member(lc=4, member=a, keep=0)),
        ("role", {"lc": 5, "member": a.hex(), "role": "member"},
         control.op_set_role(lc=5, member=a, role="member")),
        ("revoke", {"lc": 6, "pins": {a.hex(): [2, (b"\x02" * 32).hex()],
                                      pub("B").hex(): [0, None]}},
         control.op_revoke(lc=6, pins={a: (2, b"\x02" * 32), pub("B"): (0, None)})),
    ]
    delta_ids = [bytes(32), b"\xff" * 32, bytes(range(32))]
    return {
        "description": "Control ops (protocols/spaces.md §3): builder(fields) == payload_hex. "
                       "epoch_ids: epoch id derived from the epoch op's delta_id (§4.1).",
        "ops": [{"op": name, "fields": fields, "payload_hex": payload.hex()}
                for name, fields, payload in ops],
        "epoch_ids": [{"delta_id_hex": d.hex(), "epoch": epoch_id_for(d)} for d in delta_ids],
        "invalid": [
            {"payload_hex": cbor.encode({"op": "remove", "lc": 0}).hex(),
             "reason": "bad_control_op", "why": "remove without member, lc 0"},
            {"payload_hex": cbor.encode({"op": "add", "lc": 1, "member": b"\0", "role": "x"}).hex(),
             "reason": "bad_control_op", "why": "1-byte member, unknown role"},
            {"payload_hex": "a3626c6301626f7066726f746174656a6d656d626572",
             "reason": "bad_control_op", "why": "truncated CBOR"},
            {"payload_hex": cbor.encode({"op": "remove", "lc": 4, "member": a,
                                         "keep": 7}).hex(),
             "reason": "bad_control_op", "why": "keep > 0 without the pinned head"},
            {"payload_hex": cbor.encode({"op": "remove", "lc": 4, "member": a, "keep": 0,
                                         "head": b"\x07" * 32}).hex(),
             "reason": "bad_control_op", "why": "a head with keep 0"},
            {"payload_hex": cbor.encode({"op": "remove", "lc": 4, "member": a, "keep": 7,
                                         "head": b"\x07" * 31}).hex(),
             "reason": "bad_control_op", "why": "a 31-byte head"},
            {"payload_hex": cbor.encode({"op": "revoke", "lc": 6, "pins": {}}).hex(),
             "reason": "bad_control_op", "why": "revoke naming no key"},
            {"payload_hex": cbor.encode({"op": "revoke", "lc": 6,
                                         "pins": {a: [2, None]}}).hex(),
             "reason": "bad_control_op", "why": "revoke: keep > 0 without the pinned head"},
            {"payload_hex": cbor.encode({"op": "revoke", "lc": 6, "pins": {a: 2}}).hex(),
             "reason": "bad_control_op", "why": "revoke: a pin that is not [keep, head]"},
            {"payload_hex": cbor.encode({"op": "revoke", "lc": 6, "member": a,
                                         "pins": {a: [0, None]}}).hex(),
             "reason": "bad_control_op", "why": "revoke with an extra field"},
        ],
    }


class _Chain:
    def __init__(self, name: str, space: bytes) -> None:
        self.ident, self.space, self.seq, self.prev = ident(name), space, 0, None

    def op(self, payload: bytes) -> Envelope:
        env = seal(signer=self.ident.signing_key, space=self.space, seq=self.seq + 1,
                   prev=self.prev, epoch=0, payload=payload, group_key=None, kind=Kind.CONTROL)
        self.seq, self.prev = env.seq, env.delta_id
        return env


#: The id A's removal pins as C's envelope 3 (C's data envelopes are not in the vector).
C_HEAD = bytes.fromhex("c3" * 32)


def resolution_vectors() -> dict[str, Any]:
    genesis = make_genesis(ident("A"), "market", "community", 1, b"vec")
    space = parse_genesis(genesis).space_id
    ca, cb, cc = _Chain("A", space), _Chain("B", space), _Chain("C", space)

    def keys(epoch: str, *who: str) -> dict[bytes, bytes]:
        return control.seal_keys(space, KEYS[epoch], [pub(w) for w in who])

    steps: list[tuple[str, Envelope]] = []
    e1 = ca.op(control.op_epoch(lc=1, keys=keys("E1", "A")))
    steps.append(("A: epoch E1 -> {A}", e1))
    eid1 = epoch_id_for(e1.delta_id)
    steps.append(("A: add B as admin", ca.op(control.op_add_member(lc=2, member=pub("B"),
                                                                     role="admin"))))
    steps.append(("A: grant E1 -> B", ca.op(control.op_grant(lc=3, epoch=eid1,
                                                              keys=keys("E1", "B")))))
    steps.append(("A: add C", ca.op(control.op_add_member(lc=4, member=pub("C")))))
    steps.append(("A: grant E1 -> C", ca.op(control.op_grant(lc=5, epoch=eid1,
                                                              keys=keys("E1", "C")))))
    steps.append(("A: remove C (concurrent with B's next two ops)",
                  ca.op(control.op_remove_member(lc=6, member=pub("C"), keep=3,
                                                 head=C_HEAD))))
    cb.seq, cb.prev = 0, None
    e2 = cb.op(control.op_epoch(lc=6, keys=keys("E2", "A", "B", "C")))
    steps.append(("B: epoch E2 -> {A,B,C} (has not seen the removal: tainted)", e2))
    steps.append(("B: add D", cb.op(control.op_add_member(lc=7, member=pub("D")))))
    steps.append(("C: remove B (C is no admin: ignored)",
                  cc.op(control.op_remove_member(lc=7, member=pub("B")))))
    e3 = ca.op(control.op_epoch(lc=8, keys=keys("E3", "A", "B")))
    steps.append(("A: epoch E3 -> {A,B} (rotation after the removal)", e3))
    eid3 = epoch_id_for(e3.delta_id)
    steps.append(("A: grant E3 -> D", ca.op(control.op_grant(lc=9, epoch=eid3,
                                                              keys=keys("E3", "D")))))
    epochs = {"E1": eid1, "E2": epoch_id_for(e2.delta_id), "E3": eid3}
    ignored = {steps[8][1].delta_id.hex(): "not_admin"}

    def env(who: str, kind: Kind, seq: int) -> Envelope:
        data = kind is Kind.DATA
        return seal(signer=ident(who).signing_key, space=space, seq=seq,
                    prev=None if seq == 1 else b"\x01" * 32, epoch=eid3 if data else 0,
                    payload=b"x" if data else control.op_add_member(lc=20, member=pub("E")),
                    group_key=KEYS["E3"] if data else None, kind=kind, nonce=b"\x05" * 24)

    admission = [
        ("D (member) writes data", env("D", Kind.DATA, 1), None),
        ("D (member, no admin) writes a control op", env("D", Kind.CONTROL, 1), "not_admin"),
        ("B (admin) writes a control op", env("B", Kind.CONTROL, 9), None),
        ("E (stranger) writes data", env("E", Kind.DATA, 1), "not_member"),
        ("E (stranger) writes a control op", env("E", Kind.CONTROL, 1), "not_admin"),
        ("C (removed, keep 3) seq 3: only on the chain pinned at C_HEAD",
         env("C", Kind.DATA, 3), None),
        ("C (removed, keep 3) seq 4", env("C", Kind.DATA, 4), "removed_author"),
        ("C (removed, keep 3) control op seq 4", env("C", Kind.CONTROL, 4), "removed_author"),
    ]
    return {
        "description": "Control-log resolution (protocols/spaces.md §4): applying 'envelopes' in "
                       "ANY order must give 'expect'. Identities are seeds A..D; group keys are "
                       "fixed so key opening can be checked; sealed boxes are random bytes.",
        "seeds_hex": {k: v.hex() for k, v in SEEDS.items()},
        "genesis_hex": genesis.hex(),
        "envelopes": [{"note": note, "envelope_hex": env.raw.hex()} for note, env in steps],
        "expect": {
            "members": {pub("A").hex(): "admin", pub("B").hex(): "admin", pub("D").hex(): "member"},
            "former": [pub("C").hex()],
            "kept_seq": {pub("C").hex(): 3},
            "pinned_heads": {pub("C").hex(): [3, C_HEAD.hex()]},
            "epochs": {name: eid for name, eid in epochs.items()},
            "group_keys_hex": {name: KEYS[name].hex() for name in epochs},
            "current_epoch": "E3",
            "needs_rotation": False,
            "can_open": {"E1": ["A", "B", "C"], "E2": ["A", "B", "C"], "E3": ["A", "B", "D"]},
            "ignored": ignored,
            "admission": [{"note": note, "envelope_hex": e.raw.hex(), "reason": reason}
                          for note, e, reason in admission],
        },
    }


def invite_vectors() -> dict[str, Any]:
    genesis = bytes.fromhex(genesis_vectors()["valid"][0]["genesis_hex"])
    control_envs = [b"\x01\x02", b"\x03"]
    return {
        "description": "Invite code (protocols/spaces.md §6): 'z' + base58btc(canonical CBOR "
                       "{v: 1, genesis, envelopes}).",
        "valid": [{"genesis_hex": genesis.hex(), "envelopes_hex": [c.hex() for c in control_envs],
                   "code": encode_invite(genesis, control_envs)}],
        "invalid": [{"code": "z", "reason": "bad_invite"},
                    {"code": "m0000", "reason": "bad_invite"},
                    {"code": "zOOOO", "reason": "bad_invite"}],
    }


def heads_vectors() -> dict[str, Any]:
    """The ``heads`` sync message (protocols/sync.md §4, §6a), as a length-prefixed frame."""
    from mycelium.codec.frames import encode_frame
    from mycelium.sync.messages import Heads, encode_message

    vv = {pub("A"): 7, pub("B"): 2}
    ids = {pub("A"): bytes(range(32)), pub("B"): b"\xbb" * 32}
    msg = Heads(0, vv, b"".join(ids[a][:8] for a in sorted(vv)))
    return {
        "description": "HEADS (cap 'heads', protocols/sync.md §6a): vector and the first 8 "
                       "bytes of each author's head delta id, authors ascending.",
        "cases": [{"space": 0, "vv": {a.hex(): s for a, s in sorted(vv.items())},
                   "head_ids_hex": {a.hex(): ids[a].hex() for a in sorted(vv)},
                   "frame_hex": encode_frame(encode_message(msg)).hex()}],
    }


def main() -> None:
    for name, build in (("genesis", genesis_vectors), ("control", control_vectors),
                        ("resolution", resolution_vectors), ("invite", invite_vectors),
                        ("heads", heads_vectors)):
        path = OUT / (f"spaces-{name}.json" if name != "heads" else "sync-heads.json")
        path.write_text(json.dumps(build(), indent=2, ensure_ascii=False) + "\n")
        print(path)


if __name__ == "__main__":
    main()

"""protocols/vectors/spaces-*.json must hold for this implementation."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from mycelium.codec import cbor
from mycelium.identity.identity import Identity
from mycelium.log.envelope import decode
from mycelium.spaces import control
from mycelium.spaces.errors import SpaceError
from mycelium.spaces.genesis import make_genesis, parse_genesis
from mycelium.spaces.invite import decode_invite, encode_invite
from mycelium.spaces.state import SpaceState, epoch_id_for

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / f"spaces-{name}.json").read_text())
    return data


def test_genesis_vectors() -> None:
    v = load("genesis")
    for case in v["valid"]:
        who = Identity.from_seed(bytes.fromhex(case["seed_hex"]))
        raw = make_genesis(who, case["name"], case["kind"], case["created_ms"],
                           bytes.fromhex(case["salt_hex"]))
        assert raw.hex() == case["genesis_hex"]
        assert parse_genesis(raw).space_id.hex() == case["space_id_hex"]
    for case in v["invalid"]:
        with pytest.raises(SpaceError) as exc:
            parse_genesis(bytes.fromhex(case["genesis_hex"]))
        assert exc.value.reason == case["reason"]


def _build(name: str, f: dict[str, Any]) -> bytes:
    keys = {bytes.fromhex(k): bytes.fromhex(b) for k, b in f.get("keys", {}).items()}
    member = bytes.fromhex(f["member"]) if "member" in f else b""
    if name == "epoch":
        return control.op_epoch(lc=f["lc"], keys=keys)
    if name == "grant":
        return control.op_grant(lc=f["lc"], epoch=f["epoch"], keys=keys)
    if name == "add":
        return control.op_add_member(lc=f["lc"], member=member, role=f["role"])
    if name == "remove":
        head = bytes.fromhex(f["head"]) if "head" in f else None
        return control.op_remove_member(lc=f["lc"], member=member, keep=f["keep"], head=head)
    if name == "revoke":
        pins = {bytes.fromhex(k): (keep, None if h is None else bytes.fromhex(h))
                for k, (keep, h) in f["pins"].items()}
        return control.op_revoke(lc=f["lc"], pins=pins)
    return control.op_set_role(lc=f["lc"], member=member, role=f["role"])


def test_control_vectors() -> None:
    v = load("control")
    for case in v["ops"]:
        payload = bytes.fromhex(case["payload_hex"])
        assert _build(case["op"], case["fields"]) == payload
        assert cbor.decode(payload)["op"] == case["op"]
        assert control.decode_op(payload).lc == case["fields"]["lc"]
    for case in v["epoch_ids"]:
        assert epoch_id_for(bytes.fromhex(case["delta_id_hex"])) == case["epoch"]
    for case in v["invalid"]:
        with pytest.raises(SpaceError) as exc:
            control.decode_op(bytes.fromhex(case["payload_hex"]))
        assert exc.value.reason == case["reason"]


@pytest.mark.parametrize("order_seed", [None, 1, 2, 3, 4])
def test_resolution_vector_in_any_order(order_seed: int | None) -> None:
    v = load("resolution")
    exp = v["expect"]
    genesis = parse_genesis(bytes.fromhex(v["genesis_hex"]))
    envs = [decode(bytes.fromhex(e["envelope_hex"])) for e in v["envelopes"]]
    for env in envs:
        env.verify_signature()
    if order_seed is not None:
        random.Random(order_seed).shuffle(envs)
    state = SpaceState(genesis)
    for env in envs:
        state.apply(env)
    assert {k.hex(): r for k, r in state.members.items()} == exp["members"]
    assert sorted(p.hex() for p in state.former_members) == exp["former"]
    assert {p: state.kept_seq(bytes.fromhex(p)) for p in exp["kept_seq"]} == exp["kept_seq"]
    for p, (keep, head) in exp["pinned_heads"].items():
        assert state.pinned_head(bytes.fromhex(p)) == (keep, bytes.fromhex(head))
    for case in exp["admission"]:  # SpaceState.admission, spaces.md §4.5
        assert state.admission(decode(bytes.fromhex(case["envelope_hex"]))) == case["reason"]
    assert state.current_epoch == exp["epochs"][exp["current_epoch"]]
    assert state.needs_rotation() is exp["needs_rotation"]
    assert {k.hex(): r for k, r in state.ignored.items()} == exp["ignored"]
    people = {n: Identity.from_seed(bytes.fromhex(s)) for n, s in v["seeds_hex"].items()}
    for name, eid in exp["epochs"].items():
        for who, person in people.items():
            key = state.epoch_key(eid, person)
            if who in exp["can_open"][name]:
                assert key is not None and key.hex() == exp["group_keys_hex"][name]
            else:
                assert key is None


def test_invite_vectors() -> None:
    v = load("invite")
    for case in v["valid"]:
        genesis = bytes.fromhex(case["genesis_hex"])
        ctl = [bytes.fromhex(c) for c in case["envelopes_hex"]]
        assert encode_invite(genesis, ctl) == case["code"]
        inv = decode_invite(case["code"])
        assert inv.genesis == genesis and list(inv.envelopes) == ctl
    for case in v["invalid"]:
        with pytest.raises(SpaceError) as exc:
            decode_invite(case["code"])
        assert exc.value.reason == case["reason"]

"""Revoking delegated writers and bounding certificates (protocols/delegation.md §4a–§4b),
through real stores: whatever order a node receives a custodial key's listings, its
revocation and its issuer's demotion in, it ends with the same listings as every other."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium.identity.identity import Identity
from mycelium.log.envelope import Kind, decode, seal
from mycelium.spaces import delegation, service
from mycelium.store.soil import LocalWriteRefused, Soil
from tests.store.hostile import sync_rounds

LISTING = {"title": "tomatoes", "quantity": 5.0, "unit": "kg", "status": "available"}


def _certify(issuer: Identity, space: bytes, subject: Identity,
             kind: delegation.DelegationKind = "custodial") -> bytes:
    return delegation.issue(issuer.signing_key, kind=kind, space=space,
                            subject=subject.public_key, issued_ms=1_700_000_000_000).payload()


def _all(soil: Soil, space: bytes) -> list[bytes]:
    return soil.envelopes_since(space, {}, limit=100_000, max_bytes=1 << 28)


def _listings(soil: Soil, space: bytes) -> set[str]:
    return {d["_id"] for d in soil.list_docs(space, "products")}


@pytest.fixture
def demoted(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """A gateway (creator) with custodial senders; ``boss`` (made admin) demotes it after
    seeing s1 and s2's listings, which it pins; s1 then writes once more at the gateway
    (not yet aware), and s3 appears only after the demotion (never pinned)."""
    gw, boss = Identity.generate(), Identity.generate()
    soil_g = Soil.open(tmp_path / "g.db", gw)
    space = service.create_space(soil_g, "market")
    soil_b = Soil.open(tmp_path / "b.db", boss)
    service.join(soil_b, service.invite(soil_g, space, boss.did))
    service.set_role(soil_g, space, boss.did, "admin")
    s1, s2, s3 = (Identity.generate() for _ in range(3))
    for i, s in enumerate((s1, s2)):
        soil_g.append(space, Kind.CONTROL, _certify(gw, space, s), signer=s)
        soil_g.put_doc(space, "products", f"s{i + 1}-a", LISTING, signer=s)
    before = _all(soil_g, space)
    sync_rounds(soil_g, soil_b, space)
    service.set_role(soil_b, space, gw.did, "member")  # pins s1 and s2 at what boss holds
    soil_g.append(space, Kind.CONTROL, _certify(gw, space, s3), signer=s3)
    soil_g.put_doc(space, "products", "s3-a", LISTING, signer=s3)
    soil_g.put_doc(space, "products", "s1-late", LISTING, signer=s1)
    late = [r for r in _all(soil_g, space) if r not in set(before)]
    control = [r for r in _all(soil_b, space) if r not in set(before)]
    yield {"space": space, "before": before, "late": late, "control": control,
           "genesis": soil_g.genesis(space), "g": soil_g, "b": soil_b, "s1": s1,
           "tmp": tmp_path}
    soil_g.close()
    soil_b.close()


def test_revoked_delegate_keeps_its_chain_up_to_keep(demoted: dict) -> None:
    space, soil_b = demoted["space"], demoted["b"]
    state = soil_b.space_state(space)
    assert state.kept_seq(demoted["s1"].public_key) == 2  # certificate + one listing
    sync_rounds(demoted["g"], soil_b, space)
    assert _listings(soil_b, space) == {"s1-a", "s2-a"}
    sync_rounds(soil_b, demoted["g"], space)  # the gateway learns of it: cuts what came after
    assert _listings(demoted["g"], space) == {"s1-a", "s2-a"}
    with pytest.raises(LocalWriteRefused):
        demoted["g"].put_doc(space, "products", "s1-after", LISTING, signer=demoted["s1"])


@pytest.mark.parametrize("order", list(itertools.permutations(("before", "late", "control"))))
def test_outcome_is_independent_of_arrival_order(demoted: dict, order: tuple[str, ...]) -> None:
    """The three parts (listings seen by the demoting admin, listings written after it,
    the demotion and revocations) in every order, one batch each: every node ends with
    the pinned listings only, like the admin that demoted the gateway."""
    space = demoted["space"]
    member = Identity.generate()
    code = service.invite(demoted["b"], space, member.did)
    with Soil.open(demoted["tmp"] / f"m-{'-'.join(order)}.db", member) as soil_m:
        service.join(soil_m, code)
        for part in order:
            soil_m.ingest(space, demoted[part])
        for part in order:  # a second round: what was pending can now come in
            soil_m.ingest(space, demoted[part])
        assert _listings(soil_m, space) == {"s1-a", "s2-a"}
        ref = demoted["b"].version_vector(space)
        vv = soil_m.version_vector(space)
        assert {a: vv.get(a) for a in ref} == ref  # the same chains, cut at the same seqs
        s3 = {decode(r).author for r in demoted["late"]} - set(ref)
        assert not s3 & set(vv)  # the never-pinned delegate: nothing, anywhere


def test_issuer_may_revoke_its_own_device(tmp_path: Path) -> None:
    admin, member, device = Identity.generate(), Identity.generate(), Identity.generate()
    with Soil.open(tmp_path / "a.db", admin) as soil_a, \
            Soil.open(tmp_path / "m.db", member) as soil_m:
        space = service.create_space(soil_a, "market")
        service.join(soil_m, service.invite(soil_a, space, member.did))
        soil_m.append(space, Kind.CONTROL, _certify(member, space, device, "device"),
                      signer=device)
        soil_m.put_doc(space, "products", "d1", LISTING, signer=device)
        service.revoke(soil_m, space, [device.public_key])  # a plain member, its own device
        with pytest.raises(LocalWriteRefused):
            soil_m.put_doc(space, "products", "d2", LISTING, signer=device)
        sync_rounds(soil_m, soil_a, space)
        assert soil_a.space_state(space).kept_seq(device.public_key) == 2
        assert _listings(soil_a, space) == {"d1"}


def test_each_issuer_counts_its_first_devices_in_any_order(tmp_path: Path) -> None:
    """A member certifying more devices than the per-issuer cap holds only its first by
    subject key, on every node whatever the order; another member is not blocked."""
    admin, hostile, honest = Identity.generate(), Identity.generate(), Identity.generate()
    cap = delegation.MAX_DEVICES_PER_ISSUER
    devices = sorted((Identity.generate() for _ in range(cap + 2)), key=lambda i: i.public_key)
    with Soil.open(tmp_path / "a.db", admin) as soil_a:
        space = service.create_space(soil_a, "market")
        for who in (hostile, honest):
            service.invite(soil_a, space, who.did)
        envs = []
        for device in devices:
            payload = _certify(hostile, space, device, "device")
            envs.append(seal(signer=device.signing_key, space=space, seq=1, prev=None,
                             epoch=0, payload=payload, group_key=None,
                             kind=Kind.CONTROL).raw)
        mine = Identity.generate()
        own = seal(signer=mine.signing_key, space=space, seq=1, prev=None, epoch=0,
                   payload=_certify(honest, space, mine, "device"), group_key=None,
                   kind=Kind.CONTROL).raw
        held = []
        for name, batches in (("up", [[e] for e in envs]), ("down", [[e] for e in envs[::-1]]),
                              ("one", [envs[::-1]])):
            with Soil.open(tmp_path / f"{name}.db", Identity.generate()) as soil:
                soil.add_space(soil_a.genesis(space))
                soil.ingest(space, _all(soil_a, space))
                for batch in batches:
                    soil.ingest(space, batch)
                soil.ingest(space, [own])
                state = soil.space_state(space)
                held.append({decode(r).author for r in _all(soil, space)}
                            & {d.public_key for d in devices})
                assert state.delegations.get(mine.public_key) is not None
        assert held[0] == held[1] == held[2] == {d.public_key for d in devices[:cap]}


def test_a_revoked_device_may_no_longer_sync(tmp_path: Path) -> None:
    admin, device = Identity.generate(), Identity.generate()
    with Soil.open(tmp_path / "a.db", admin) as soil:
        space = service.create_space(soil, "market")
        soil.append(space, Kind.CONTROL, _certify(admin, space, device, "device"),
                    signer=device)
        assert soil.space_state(space).may_sync(device.public_key)
        service.revoke(soil, space, [device.public_key])
        assert not soil.space_state(space).may_sync(device.public_key)


def test_removing_a_gateway_keeps_its_senders_listings(demoted: dict) -> None:
    """Removal (not only demotion) pins the issuer's custodial keys before it applies."""
    space, soil_b, soil_g = demoted["space"], demoted["b"], demoted["g"]
    s4 = Identity.generate()
    service.set_role(soil_b, space, soil_g.identity.did, "admin")
    sync_rounds(soil_b, soil_g, space)
    soil_g.append(space, Kind.CONTROL, _certify(soil_g.identity, space, s4), signer=s4)
    soil_g.put_doc(space, "products", "s4-a", LISTING, signer=s4)
    sync_rounds(soil_g, soil_b, space)
    assert "s4-a" in _listings(soil_b, space)
    service.remove(soil_b, space, soil_g.identity.did)
    assert soil_b.space_state(space).kept_seq(s4.public_key) == 2
    assert "s4-a" in _listings(soil_b, space)


def test_resolution_of_revocations_is_independent_of_arrival_order() -> None:
    """SpaceState alone, every envelope applied one by one in random orders: the same
    delegates are kept (with the same keep), stopped or writing, and the same certificates
    refused, as in the order they were written (hypothesis)."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from mycelium.spaces import control
    from mycelium.spaces.errors import SpaceError
    from mycelium.spaces.genesis import make_genesis, parse_genesis
    from mycelium.spaces.state import SpaceState
    from tests.spaces.conftest import Chain, ident

    gw, boss, member = ident(1), ident(2), ident(3)
    genesis = parse_genesis(make_genesis(gw, "market", "community", 1, b"salt"))
    space = genesis.space_id
    cg, cb, cm = (Chain(who, space) for who in (gw, boss, member))
    senders = [ident(i) for i in (4, 5, 6)]
    devices = sorted((Identity.generate() for _ in range(delegation.MAX_DEVICES_PER_ISSUER + 1)),
                     key=lambda i: i.public_key)
    log = [cg.control(control.op_add_member(lc=1, member=boss.public_key, role="admin")),
           cg.control(control.op_add_member(lc=2, member=member.public_key, role="member"))]
    for who in [*senders, *devices]:
        kind: delegation.DelegationKind = "device" if who in devices else "custodial"
        issuer = member if kind == "device" else gw
        log.append(Chain(who, space).control(_certify(issuer, space, who, kind)))
    log.append(cb.control(control.op_revoke(lc=3, pins={senders[0].public_key: (1, b"\1" * 32)})))
    log.append(cb.control(control.op_set_role(lc=4, member=gw.public_key, role="member")))
    log.append(cm.control(control.op_revoke(lc=5, pins={devices[0].public_key: (1, b"\2" * 32)})))
    everyone = [s.public_key for s in [*senders, *devices]]

    Resolved = tuple[set[tuple[int, str]], dict[bytes, int], frozenset[bytes], set[bytes]]

    def resolve(order: list[int]) -> Resolved:
        state = SpaceState(genesis)
        refused: set[tuple[int, str]] = set()
        for i in order:
            try:
                state.apply(log[i])
            except SpaceError as exc:
                refused.add((i, exc.reason))
        # a certificate pushed out after it was stored is cut to nothing: the same end
        # as one refused on arrival, so it is not compared as a chain to cut
        return (refused, {p: state.kept_seq(p) for p in everyone},
                (state.chains_to_cut - state.delegations.displaced) & set(everyone),
                {p for p in everyone if state.may_sync(p)})

    written = resolve(list(range(len(log))))
    assert written[1][senders[0].public_key] == 1 and written[1][devices[0].public_key] == 1
    assert senders[1].public_key in written[2]  # its issuer was demoted, nothing pinned it
    assert written[0] == {(len(log) - 4, "too_many_delegations")}  # the 17th device
    assert devices[-1].public_key not in written[3]

    @settings(max_examples=40, deadline=None)
    @given(st.permutations(range(len(log))))
    def check(order: list[int]) -> None:
        got = resolve(order)
        assert got[1:] == written[1:]
        # a refused certificate is the 17th by key, or one a smaller one displaced
        assert {r for _, r in got[0]} <= {"too_many_delegations"}

    check()

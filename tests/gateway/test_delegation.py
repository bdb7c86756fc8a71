"""Delegated writers (protocols/delegation.md) through real stores: a custodial key certified
by an admin writes listings that a member's node accepts, with no control op per key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.identity.identity import Identity
from mycelium.log.envelope import Kind, seal
from mycelium.spaces import delegation, service
from mycelium.spaces.errors import SpaceError
from mycelium.store.soil import LocalWriteRefused, Soil

LISTING = {"title": "tomatoes", "quantity": 5.0, "unit": "kg", "status": "available"}


def _sync(src: Soil, dst: Soil, space: bytes) -> list[tuple[bytes | None, str]]:
    raws = src.envelopes_since(space, dst.version_vector(space), limit=10_000, max_bytes=1 << 26)
    result = dst.ingest(space, raws)
    return result.rejected


@pytest.fixture
def market(tmp_path: Path) -> tuple[Identity, Soil, bytes, Identity, Soil]:
    gw, member = Identity.generate(), Identity.generate()
    soil_g = Soil.open(tmp_path / "g.db", gw)
    space = service.create_space(soil_g, "market")
    code = service.invite(soil_g, space, member.did)
    soil_m = Soil.open(tmp_path / "m.db", member)
    service.join(soil_m, code)
    return gw, soil_g, space, member, soil_m


def _certify(issuer: Identity, space: bytes, subject: Identity,
             kind: delegation.DelegationKind = "custodial") -> bytes:
    return delegation.issue(issuer.signing_key, kind=kind, space=space,
                            subject=subject.public_key, issued_ms=1_700_000_000_000).payload()


def test_custodial_writes_reach_a_member_without_control_ops(market: tuple) -> None:
    gw, soil_g, space, _member, soil_m = market
    ops_before = soil_g.space_state(space).control_count
    senders = [Identity.generate() for _ in range(3)]
    for i, sender in enumerate(senders):
        soil_g.append(space, Kind.CONTROL, _certify(gw, space, sender), signer=sender)
        soil_g.put_doc(space, "products", f"l{i}", LISTING, signer=sender)
    assert soil_g.space_state(space).control_count == ops_before
    assert _sync(soil_g, soil_m, space) == []
    state = soil_m.space_state(space)
    assert state.control_count == ops_before
    for sender in senders:
        cert = state.delegations.get(sender.public_key)
        assert cert is not None and (cert.kind, cert.issuer) == ("custodial", gw.public_key)
    assert [d["_id"] for d in soil_m.list_docs(space, "products")] == ["l0", "l1", "l2"]
    assert not any(state.is_member(s.public_key) for s in senders)


def test_certificate_from_a_plain_member_does_not_authorize(market: tuple) -> None:
    _gw, soil_g, space, member, soil_m = market
    sender = Identity.generate()
    # A member (not admin) certifies a custodial key: held pending, never stored (it
    # could only be cut again, delegation.md §3), and the key may not write.
    with pytest.raises(LocalWriteRefused):
        soil_m.append(space, Kind.CONTROL, _certify(member, space, sender), signer=sender)
    assert soil_m.space_state(space).delegations.get(sender.public_key) is None
    # The same member may certify one of its own devices (kind "device").
    device = Identity.generate()
    soil_m.append(space, Kind.CONTROL, _certify(member, space, device, "device"), signer=device)
    soil_m.put_doc(space, "products", "d", LISTING, signer=device)
    assert _sync(soil_m, soil_g, space) == []
    assert soil_g.get_doc(space, "products", "d") is not None


def test_forged_or_misplaced_certificates_are_rejected(market: tuple) -> None:
    gw, soil_g, space, _member, _soil_m = market
    sender, stranger = Identity.generate(), Identity.generate()
    forged = bytearray(_certify(gw, space, sender))
    forged[-1] ^= 1  # last byte of the issuer's signature
    with pytest.raises(LocalWriteRefused, match="bad_delegation"):
        soil_g.append(space, Kind.CONTROL, bytes(forged), signer=sender)
    # Subject must be the envelope's author.
    with pytest.raises(LocalWriteRefused, match="bad_delegation"):
        soil_g.append(space, Kind.CONTROL, _certify(gw, space, sender), signer=stranger)
    # Not a chain's first envelope.
    soil_g.append(space, Kind.CONTROL, _certify(gw, space, stranger), signer=stranger)
    with pytest.raises(LocalWriteRefused):  # refused or held, never applied
        soil_g.append(space, Kind.CONTROL, _certify(gw, space, stranger), signer=stranger)
    assert soil_g.version_vector(space)[stranger.public_key] == 1


def test_issuer_losing_admin_role_stops_new_custodial_writes(market: tuple) -> None:
    gw, soil_g, space, member, _soil_m = market
    sender = Identity.generate()
    soil_g.append(space, Kind.CONTROL, _certify(gw, space, sender), signer=sender)
    soil_g.put_doc(space, "products", "a", LISTING, signer=sender)
    service.set_role(soil_g, space, member.did, "admin")
    service.set_role(soil_g, space, gw.did, "member")
    with pytest.raises(LocalWriteRefused):  # parked as not_member, not stored
        soil_g.put_doc(space, "products", "b", LISTING, signer=sender)
    assert soil_g.get_doc(space, "products", "b") is None
    assert soil_g.get_doc(space, "products", "a") is not None


def test_certificate_payload_checks() -> None:
    issuer, subject = Identity.generate(), Identity.generate()
    cert = delegation.issue(issuer.signing_key, kind="device", space=b"\x01" * 32,
                            subject=subject.public_key, issued_ms=0)
    assert delegation.decode(cert.payload()) == cert
    assert delegation.is_delegation(cert.payload())
    with pytest.raises(SpaceError, match="itself"):
        delegation.issue(issuer.signing_key, kind="device", space=b"\x01" * 32,
                         subject=issuer.public_key, issued_ms=0)
    for bad in (b"", b"\xa3bophdelegate", cert.payload()[:-1] + b"\x00" * 2):
        with pytest.raises(delegation.BadDelegation):
            delegation.decode(bad)


def test_invites_stay_small_with_many_delegates(market: tuple, tmp_path: Path) -> None:
    gw, soil_g, space, _member, _soil_m = market
    senders = [Identity.generate() for _ in range(150)]
    for sender in senders:  # their certificates alone are ~4x an invite's size limit
        soil_g.append(space, Kind.CONTROL, _certify(gw, space, sender), signer=sender)
    late = Identity.generate()
    code = service.invite(soil_g, space, late.did)
    with Soil.open(tmp_path / "late.db", late) as soil_l:
        service.join(soil_l, code)
        assert _sync(soil_g, soil_l, space) == []
        held = soil_l.space_state(space).delegations
        assert all(held.get(s.public_key) is not None for s in senders)


def test_a_reopened_store_keeps_its_delegates(tmp_path: Path) -> None:
    gw, sender = Identity.generate(), Identity.generate()
    with Soil.open(tmp_path / "g.db", gw) as soil:
        space = service.create_space(soil, "market")
        soil.append(space, Kind.CONTROL, _certify(gw, space, sender), signer=sender)
        soil.put_doc(space, "products", "a", LISTING, signer=sender)
    with Soil.open(tmp_path / "g.db", gw) as soil:  # loads without re-verifying certificates
        assert soil.space_state(space).delegations.get(sender.public_key) is not None
        soil.put_doc(space, "products", "b", LISTING, signer=sender)
        assert [d["_id"] for d in soil.list_docs(space, "products")] == ["a", "b"]


def test_certificates_of_strangers_wait_instead_of_filling_the_space(market: tuple) -> None:
    _gw, soil_g, space, _member, soil_m = market
    stranger, subject = Identity.generate(), Identity.generate()
    payload = _certify(stranger, space, subject)  # validly signed, by a non-member
    with pytest.raises(LocalWriteRefused):
        soil_g.append(space, Kind.CONTROL, payload, signer=subject)
    env = seal(signer=subject.signing_key, space=space, seq=1, prev=None, epoch=0,
               payload=payload, group_key=None, kind=Kind.CONTROL)
    result = soil_m.ingest(space, [env.raw])
    assert result.accepted == [] and result.pending == 1
    assert soil_m.space_state(space).delegations.get(subject.public_key) is None
    assert subject.public_key not in soil_m.version_vector(space)

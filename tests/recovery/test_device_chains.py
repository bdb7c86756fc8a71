"""Two devices of one identity write concurrently and nothing is rejected (issue 12 §2).

Each store writes with its own device key (protocols/delta.md §10, "Device chains"), so
two devices holding the same seed never sign two envelopes with the same (author, seq).
Before device chains both devices wrote as the identity: the second chain to reach a
third node was refused as a ``fork`` and every later write of that device with it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.identity.identity import Identity
from mycelium.log.envelope import Kind
from mycelium.log.envelope import decode as decode_envelope
from mycelium.spaces import service
from mycelium.store.soil import Soil
from mycelium.sync.session import SyncSession
from tests.sync.pair import pump

LISTING = {"title": "Tomatoes", "quantity": 5, "unit": "kg"}


def _sync(a: Soil, b: Soil) -> None:
    ia, ib = a.identity, b.identity
    pump(SyncSession(a, local_id=ia.public_key, remote_id=ib.public_key, initiator=True, now=0),
         SyncSession(b, local_id=ib.public_key, remote_id=ia.public_key, initiator=False, now=0))


def _all(soil: Soil, space: bytes) -> list[bytes]:
    return soil.envelopes_since(space, {}, limit=100_000, max_bytes=1 << 30)


def test_two_devices_of_one_identity_write_concurrently(tmp_path: Path) -> None:
    owner, other = Identity.generate(), Identity.generate()
    laptop = Soil.open(tmp_path / "laptop.db", owner, device_chains=True)
    phone = Soil.open(tmp_path / "phone.db", Identity.from_seed(owner.seed), device_chains=True)
    bob = Soil.open(tmp_path / "bob.db", other, device_chains=True)
    try:
        space = service.create_space(laptop, "market")
        service.join(bob, service.invite(laptop, space, other.did))
        phone.add_space(laptop.genesis(space))
        phone.ingest(space, _all(laptop, space))
        # Offline from each other, both devices write (and the phone runs maintenance).
        for i in range(3):
            laptop.put_doc(space, "products", f"laptop-{i}", LISTING)
            phone.put_doc(space, "products", f"phone-{i}", LISTING)
        service.maintain(phone, space)
        for soil in (laptop, phone):
            result = bob.ingest(space, _all(soil, space))
            assert not result.rejected, result.rejected
        _sync(laptop, bob)
        _sync(phone, bob)
        _sync(laptop, bob)
        ids = sorted(d["_id"] for d in bob.list_docs(space, "products"))
        assert ids == sorted([f"laptop-{i}" for i in range(3)] + [f"phone-{i}" for i in range(3)])
        for soil in (laptop, phone):
            assert sorted(d["_id"] for d in soil.list_docs(space, "products")) == ids
            assert soil.version_vector(space) == bob.version_vector(space)
        # Each device signed its own chain; neither signed as the identity.
        authors = {decode_envelope(r).author for r in _all(bob, space)
                   if decode_envelope(r).kind is Kind.DATA}
        assert owner.public_key not in authors and len(authors) == 2
    finally:
        for soil in (laptop, phone, bob):
            soil.close()


def test_without_device_chains_the_second_device_forks() -> None:
    """The bug device chains fix, kept visible: both devices sign as the identity."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        owner = Identity.generate()
        laptop = Soil.open(Path(tmp) / "l.db", owner)
        phone = Soil.open(Path(tmp) / "p.db", Identity.from_seed(owner.seed))
        space = service.create_space(laptop, "market")
        phone.add_space(laptop.genesis(space))
        phone.ingest(space, _all(laptop, space))
        laptop.put_doc(space, "products", "a", LISTING)
        phone.put_doc(space, "products", "b", LISTING)
        assert [r for _, r in laptop.ingest(space, _all(phone, space)).rejected] == ["fork"]
        laptop.close()
        phone.close()


def test_legacy_store_keeps_its_chain_and_writes_on_with_a_device(tmp_path: Path) -> None:
    """Migration: a store written by the previous version (the identity signed its own
    chain) opens unchanged; new writes go to a device chain every peer accepts."""
    owner, other = Identity.generate(), Identity.generate()
    old = Soil.open(tmp_path / "old.db", owner)  # the previous version's writer
    space = service.create_space(old, "market")
    bob = Soil.open(tmp_path / "bob.db", other, device_chains=True)
    service.join(bob, service.invite(old, space, other.did))
    old.put_doc(space, "products", "before", LISTING)
    old.close()
    new = Soil.open(tmp_path / "old.db", owner, device_chains=True)
    try:
        assert new.get_doc(space, "products", "before") is not None
        legacy = new.version_vector(space)[owner.public_key]
        new.put_doc(space, "products", "after", LISTING)
        vv = new.version_vector(space)
        assert vv[owner.public_key] == legacy and vv[new.device.public_key] == 2
        _sync(new, bob)
        assert sorted(d["_id"] for d in bob.list_docs(space, "products")) == ["after", "before"]
        assert bob.version_vector(space) == new.version_vector(space)
        # The device id is kept: the same store writes on the same chain after a reopen.
        device = new.device.public_key
        new.close()
        new = Soil.open(tmp_path / "old.db", owner, device_chains=True)
        new.put_doc(space, "products", "later", LISTING)
        assert new.version_vector(space)[device] == 3
    finally:
        new.close()
        bob.close()


def test_removing_a_member_pins_its_devices_chains(tmp_path: Path) -> None:
    """A removed member's device writes up to what the remover held stay valid
    everywhere; what it writes after the removal is accepted nowhere."""
    admin, carol = Identity.generate(), Identity.generate()
    a = Soil.open(tmp_path / "a.db", admin, device_chains=True)
    b = Soil.open(tmp_path / "b.db", Identity.generate(), device_chains=True)
    c = Soil.open(tmp_path / "c.db", carol, device_chains=True)
    try:
        space = service.create_space(a, "market")
        for soil in (b, c):
            service.join(soil, service.invite(a, space, soil.identity.did))
        c.put_doc(space, "products", "c1", LISTING)
        _sync(a, c)
        service.remove(a, space, carol.did)
        c.put_doc(space, "products", "c2", LISTING)  # written with the old epoch key
        _sync(b, c)  # b gets c2 before it hears of the removal
        _sync(a, b)
        _sync(a, c)
        for soil in (a, b):
            assert [d["_id"] for d in soil.list_docs(space, "products")] == ["c1"]
        assert a.version_vector(space) == b.version_vector(space)
        assert a.space_state(space).kept_seq(c.device.public_key) == 2
    finally:
        for soil in (a, b, c):
            soil.close()


def test_no_certificate_is_written_for_a_write_that_cannot_happen(tmp_path: Path) -> None:
    """A store that is not (or no longer) a member writes nothing at all, not even the
    certificate that would open its device chain."""
    from mycelium.errors import MyceliumError

    admin = Soil.open(tmp_path / "a.db", Identity.generate(), device_chains=True)
    outsider = Soil.open(tmp_path / "o.db", Identity.generate(), device_chains=True)
    try:
        space = service.create_space(admin, "market")
        outsider.add_space(admin.genesis(space))
        outsider.ingest(space, _all(admin, space))
        with pytest.raises(MyceliumError):
            outsider.put_doc(space, "products", "x", LISTING)
        assert outsider.device.public_key not in outsider.version_vector(space)
        assert outsider.version_vector(space) == admin.version_vector(space)
    finally:
        admin.close()
        outsider.close()

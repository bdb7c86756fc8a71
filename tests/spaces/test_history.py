"""A member who joins after a key rotation can read what was written before it joined
(old epoch keys are granted at invite), while the removed member still cannot read the
newer content."""

from __future__ import annotations

from pathlib import Path

from mycelium.identity.identity import Identity
from mycelium.spaces import service
from mycelium.store.soil import Soil
from mycelium.sync.session import SyncSession
from tests.sync.pair import pump


def _sync(a: Soil, b: Soil) -> None:
    ia, ib = a.identity, b.identity
    pump(SyncSession(a, local_id=ia.public_key, remote_id=ib.public_key, initiator=True, now=0),
         SyncSession(b, local_id=ib.public_key, remote_id=ia.public_key, initiator=False, now=0))


def test_late_joiner_reads_history_across_epochs(tmp_path: Path) -> None:
    a_id, b_id, c_id = Identity.generate(), Identity.generate(), Identity.generate()
    with Soil.open(tmp_path / "a.db", a_id) as a, Soil.open(tmp_path / "b.db", b_id) as b, \
            Soil.open(tmp_path / "c.db", c_id) as c:
        space = service.create_space(a, "market")
        service.join(b, service.invite(a, space, b_id.did))
        a.put_doc(space, "products", "old", {"title": "written in the first epoch"})
        first_epoch = a.space_state(space).current_epoch
        service.remove(a, space, b_id.did)
        assert a.space_state(space).current_epoch != first_epoch
        a.put_doc(space, "products", "new", {"title": "written after B left"})

        service.join(c, service.invite(a, space, c_id.did))
        _sync(a, c)
        _sync(a, b)
        assert c.get_doc(space, "products", "old")["title"] == "written in the first epoch"
        assert c.get_doc(space, "products", "new")["title"] == "written after B left"
        assert b.get_doc(space, "products", "new") is None
        assert service.grant_history(a, space, c_id.public_key) == 0  # idempotent

"""SyncSession against the real SQLite store (Soil) and real spaces: two nodes converge.

The project's own modules are imported plainly: a missing or broken one must fail this
test, never turn it into a skip (issue 17 §4).
"""

from __future__ import annotations

from pathlib import Path

from mycelium.identity.identity import Identity
from mycelium.spaces import service
from mycelium.store.soil import Soil
from mycelium.sync.session import SessionState, SyncSession

from .pair import pump


def test_two_soils_converge_over_a_session(tmp_path: Path) -> None:
    ia, ib = Identity.generate(), Identity.generate()
    a, b = Soil.open(tmp_path / "a.db", ia), Soil.open(tmp_path / "b.db", ib)
    try:
        space = service.create_space(a, "market")
        service.join(b, service.invite(a, space, ib.did))
        for i in range(20):
            a.put_doc(space, "products", f"p{i}", {"title": f"tomato {i}"})
        b.put_doc(space, "products", "bx", {"title": "pepper"})
        sa = SyncSession(a, local_id=ia.public_key, remote_id=ib.public_key, initiator=True,
                         now=0)
        sb = SyncSession(b, local_id=ib.public_key, remote_id=ia.public_key, initiator=False,
                         now=0)
        trace = pump(sa, sb)
        assert not trace.errors()
        assert sa.state is sb.state is SessionState.LIVE
        assert a.version_vector(space) == b.version_vector(space)
        assert b.get_doc(space, "products", "p7")["title"] == "tomato 7"
        assert a.get_doc(space, "products", "bx")["title"] == "pepper"
        # live: a new write on a reaches b through push_local
        env = a.put_doc(space, "products", "new", {"title": "basil"})
        assert sa.push_local(space, env.raw)
        pump(sa, sb)
        assert b.get_doc(space, "products", "new")["title"] == "basil"
    finally:
        a.close()
        b.close()

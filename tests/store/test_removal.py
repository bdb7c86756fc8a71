"""Removal with real Soils: C removed cannot read what is written afterwards; A and B can."""

from __future__ import annotations

from pathlib import Path

from mycelium.spaces import service

from .conftest import A, B, C, D, did, open_soil, sync


def test_removed_member_cannot_decrypt_later_deltas(tmp_path: Path) -> None:
    a, b, c = (open_soil(tmp_path / f"{n}.db", who) for n, who in (("a", A), ("b", B), ("c", C)))
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    service.join(c, service.invite(a, space, did(C)))
    c.put_doc(space, "products", "from-c", {"title": "written while a member"})
    a.put_doc(space, "products", "before", {"title": "everyone reads this"})
    for x in (a, b, c):
        for y in (a, b, c):
            sync(x, y, space)
    assert c.get_doc(space, "products", "before") is not None

    old_epoch = a.space_state(space).current_epoch
    service.remove(a, space, did(C))
    assert a.space_state(space).current_epoch != old_epoch
    a.put_doc(space, "products", "after", {"title": "secret from c"})
    sync(a, b, space)
    b.put_doc(space, "products", "after-b", {"title": "also secret from c"})
    for x in (a, b):
        for y in (a, b, c):
            sync(x, y, space)

    for reader in (a, b):
        assert reader.get_doc(space, "products", "after") is not None
        assert reader.get_doc(space, "products", "after-b") is not None
        assert reader.get_doc(space, "products", "from-c") is not None  # pre-removal data stays
    assert c.get_doc(space, "products", "after") is None
    assert c.get_doc(space, "products", "after-b") is None
    assert c.get_doc(space, "products", "before") is not None
    # c holds the ciphertext (it relays), but it stays deferred: no key for the new epoch
    assert c.version_vector(space) == a.version_vector(space)
    assert c.metrics()["deferred_now"] >= 2
    assert space not in c.member_spaces() and space in b.member_spaces()
    # a member who joins later stores c's earlier chain too (no anti-entropy loop on it)
    d = open_soil(tmp_path / "d.db", D)
    service.join(d, service.invite(a, space, did(D)))
    sync(a, d, space)
    assert d.version_vector(space) == a.version_vector(space)
    assert d.get_doc(space, "products", "after") is not None
    assert not any(k.startswith("rejected.") for k in d.metrics())
    for s in (a, b, c, d):
        s.close()

"""The service over the real SQLite Soil: three identities, sync by envelopes_since/ingest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium.identity.didkey import did_from_public_key
from mycelium.spaces import service
from mycelium.spaces.errors import NoEpochKey
from mycelium.spaces.invite import decode_invite

from .conftest import ident

A, B, C = ident(1), ident(2), ident(3)


@pytest.fixture
def soils(tmp_path: Path) -> Iterator[dict[str, Any]]:
    from mycelium.store.soil import Soil

    opened = {n: Soil.open(tmp_path / f"{n}.db", who, synchronous="OFF")
              for n, who in (("a", A), ("b", B), ("c", C))}
    yield opened
    for s in opened.values():
        s.close()


def did(who: Any) -> str:
    return did_from_public_key(who.public_key)


def sync(x: Any, y: Any, space: bytes) -> None:
    for src, dst in ((x, y), (y, x)):
        dst.ingest(space, src.envelopes_since(space, dst.version_vector(space), limit=10_000,
                                              max_bytes=1 << 24))


def put(soil: Any, space: bytes, doc: str, title: str) -> None:
    soil.put_doc(space, "products", doc, {"title": title})


def titles(soil: Any, space: bytes) -> set[str]:
    return {d["title"] for d in soil.list_docs(space, "products")}


def test_invite_after_data_ships_the_chain_so_join_is_immediate(soils: dict[str, Any]) -> None:
    a, b = soils["a"], soils["b"]
    space = service.create_space(a, "market")
    for i in range(3):
        put(a, space, f"p{i}", f"tomatoes {i}")
    code = service.invite(a, space, did(B))
    assert len(decode_invite(code).envelopes) > len(a.control_envelopes(space))
    assert service.join(b, code) == space
    state = b.space_state(space)
    assert state.is_member(B.public_key) and space in b.member_spaces()
    assert state.current_epoch == a.space_state(space).current_epoch
    put(b, space, "q", "beans")
    sync(a, b, space)
    assert "beans" in titles(a, space)


def test_removal_end_to_end(soils: dict[str, Any]) -> None:
    a, b, c = soils["a"], soils["b"], soils["c"]
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    service.join(c, service.invite(a, space, did(C)))
    put(a, space, "a1", "from a")
    put(c, space, "c1", "from c")
    for x, y in ((a, b), (a, c), (b, c)):
        sync(x, y, space)
    before = {"from a", "from c"}
    assert titles(a, space) == titles(b, space) == titles(c, space) == before

    service.remove(a, space, did(C))
    sync(a, b, space)
    put(a, space, "a2", "secret from a")
    put(b, space, "b2", "secret from b")
    put(c, space, "c2", "late write by c")       # C has not heard of its removal yet
    for x, y in ((a, b), (a, c), (b, c)):
        sync(x, y, space)

    after = before | {"secret from a", "secret from b"}
    assert titles(a, space) == titles(b, space) == after
    assert "secret from a" not in titles(c, space) and "secret from b" not in titles(c, space)
    assert before <= titles(c, space)
    assert not c.space_state(space).is_member(C.public_key)
    with pytest.raises(NoEpochKey):
        put(c, space, "c3", "c after learning")


def test_removed_members_earlier_writes_reach_everyone_later_ones_nobody(
        soils: dict[str, Any]) -> None:
    a, b, c = soils["a"], soils["b"], soils["c"]
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    service.join(c, service.invite(a, space, did(C)))
    put(c, space, "c1", "c one")
    put(c, space, "c2", "c two")
    sync(a, c, space)                       # only A has C's writes when removing C
    service.remove(a, space, did(C))
    put(c, space, "c3", "c three, after removal")
    sync(a, b, space)                       # B hears of the removal and of c1, c2 together
    sync(b, c, space)
    sync(a, c, space)
    vv_a, vv_b = a.version_vector(space), b.version_vector(space)
    assert vv_a == vv_b and vv_a[C.public_key] == 2
    assert titles(a, space) == titles(b, space) == {"c one", "c two"}

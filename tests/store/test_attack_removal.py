"""Issue 15 §2: a removed member cannot get writes accepted after its removal.

The removal op pins the removed member's chain (the delta id at ``keep``). A removed
member who signs a second chain for seqs 1..keep with an old epoch key it still holds
used to be accepted by a node that did not hold the originals yet (a member who joined
after the removal); the forged listing then won LWW. Now only the pinned chain is
accepted, in one batch or in pieces.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mycelium.log import envelope as envelope_mod
from mycelium.spaces import control, service
from mycelium.store.soil import Soil

from .conftest import A, B, C, D, did, ident, open_soil, sync
from .hostile import Forger, group_key, raws

SCAM = {"title": "Bike SOLD - pay deposit to scammer"}


@dataclass
class Removal:
    space: bytes
    a: Soil
    d: Soil
    originals: list[bytes]
    forged: list[bytes]


@pytest.fixture
def removal(tmp_path: Path) -> Iterator[Removal]:
    """C wrote three listings, A removed C (pinning them), D joined afterwards and holds
    the old epoch (history grant) but not yet C's envelopes; C forged a second chain."""
    a, b, c = (open_soil(tmp_path / f"{n}.db", w) for n, w in (("a", A), ("b", B), ("c", C)))
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    service.join(c, service.invite(a, space, did(C)))
    old_epoch, old_key = group_key(c, space)
    for i, title in enumerate(("Bike", "Lamp", "Chair")):
        c.put_doc(space, "products", f"p{i}", {"title": title})
    sync(c, a, space)
    service.remove(a, space, did(C))
    d = open_soil(tmp_path / "d.db", D)
    service.join(d, service.invite(a, space, did(D)))
    assert d.space_state(space).epoch_key(old_epoch, D) is not None  # history grant
    assert C.public_key not in d.version_vector(space)
    forger = Forger(C, space)
    forged = [forger.listing("p0", SCAM, old_epoch, old_key, wall_ms=1_900_000_000_000)]
    forged += [forger.listing(f"x{i}", {"title": "junk"}, old_epoch, old_key) for i in (1, 2)]
    originals = c.envelopes_since(space, {}, limit=100, max_bytes=1 << 22)
    originals = [r for r in originals if envelope_mod.decode(r).author == C.public_key]
    yield Removal(space, a, d, originals, raws(forged))
    for s in (a, b, c, d):
        s.close()


def test_removal_op_pins_the_head_the_remover_held(removal: Removal) -> None:
    st = removal.a.space_state(removal.space)
    assert st.pinned_head(C.public_key) == removal.a.heads(removal.space)[C.public_key]


def test_forged_chain_after_removal_is_not_accepted(removal: Removal) -> None:
    d, space = removal.d, removal.space
    result = d.ingest(space, removal.forged)
    assert not result.accepted
    assert d.get_doc(space, "products", "p0") is None
    assert C.public_key not in d.version_vector(space)
    # the originals still arrive and are accepted: the chains and heads agree with a's
    sync(removal.a, d, space)
    assert d.heads(space)[C.public_key] == removal.a.heads(space)[C.public_key]
    assert d.get_doc(space, "products", "p0")["title"] == "Bike"


def test_pinned_chain_accepted_in_pieces(removal: Removal) -> None:
    """One envelope per batch (the head comes last): held pending, then all accepted."""
    d, space = removal.d, removal.space
    for raw in removal.forged[:1] + removal.originals:
        d.ingest(space, [raw])
    assert d.get_doc(space, "products", "p0") is None
    # the forged envelope took seq 1's slot first; the next anti-entropy round brings
    # the real one again, and the pinned chain is complete
    for raw in removal.originals:
        d.ingest(space, [raw])
    assert d.heads(space)[C.public_key] == removal.a.heads(space)[C.public_key]
    assert d.get_doc(space, "products", "p0")["title"] == "Bike"
    assert d.pending_count(space) == 0


def test_forged_and_original_mixed_in_one_batch(removal: Removal) -> None:
    d, space = removal.d, removal.space
    d.ingest(space, removal.forged + removal.originals)
    assert d.get_doc(space, "products", "p0") is None or \
        d.get_doc(space, "products", "p0")["title"] == "Bike"
    # of two envelopes at one seq a batch keeps the lower id; if that was the forged one
    # (then held pending), the next anti-entropy round brings the real chain again
    sync(removal.a, d, space)
    assert d.heads(space)[C.public_key] == removal.a.heads(space)[C.public_key]
    assert d.get_doc(space, "products", "p0")["title"] == "Bike"


def _ops(soil: Soil, space: bytes) -> list[control.ControlOp]:
    return [control.decode_op(envelope_mod.decode(r).ct) for r in soil.control_envelopes(space)]


def test_removed_admins_later_ops_never_take_effect(tmp_path: Path) -> None:
    """Ops a removed admin signs after its removal (beyond the pinned chain) are refused
    by nodes that know the removal, and skipped (``removed_author``) by nodes that stored
    them before they heard of it, so both end with the same membership."""
    a, b = open_soil(tmp_path / "a.db", A), open_soil(tmp_path / "b.db", B)
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B), role="admin"))
    service.invite(b, space, did(ident(30)))  # B's own ops, while an admin
    sync(b, a, space)
    service.remove(a, space, did(B))
    # B, removed, makes an accomplice admin with an op that sorts after its removal
    removal_lc = max(op.lc for op in _ops(a, space))
    head_seq, head_id = b.heads(space)[B.public_key]
    late = Forger(B, space, seq=head_seq, prev=head_id).control(
        control.op_add_member(lc=removal_lc + 5, member=ident(40).public_key, role="admin"))
    b.ingest(space, [late.raw])
    x = open_soil(tmp_path / "x.db", ident(31))
    x.add_space(a.genesis(space))
    x.ingest(space, b.control_envelopes(space))  # B's late op first, the removal later
    assert x.space_state(space).is_admin(ident(40).public_key)
    x.ingest(space, a.control_envelopes(space))
    result = a.ingest(space, [late.raw])
    assert {r for _, r in result.rejected} == {"removed_author"}
    for node in (a, x):
        st = node.space_state(space)
        assert not st.is_member(B.public_key) and not st.is_member(ident(40).public_key)
    assert a.space_state(space).members == x.space_state(space).members
    for s in (a, b, x):
        s.close()


def test_late_writes_stored_before_the_removal_are_cut_when_it_arrives(tmp_path: Path) -> None:
    """A member that stored a removed member's writes beyond ``keep`` (it had not heard of
    the removal) cuts them when the removal arrives, and its documents go back to what
    the kept writes say: it ends like a node that knew the removal first."""
    a, c, x = (open_soil(tmp_path / f"{n}.db", w) for n, w in (("a", A), ("c", C),
                                                              ("x", ident(33))))
    space = service.create_space(a, "market")
    service.join(c, service.invite(a, space, did(C)))
    service.join(x, service.invite(a, space, did(ident(33))))
    c.put_doc(space, "products", "p0", {"title": "Bike"})
    sync(c, a, space)
    sync(c, x, space)
    service.remove(a, space, did(C))  # x has not heard of it yet
    c.put_doc(space, "products", "p0", {"title": "Bike SOLD - pay the deposit to me"})
    c.put_doc(space, "products", "late", {"title": "written after the removal"})
    sync(c, x, space)
    assert x.get_doc(space, "products", "p0")["title"].startswith("Bike SOLD")
    sync(a, x, space)  # the removal (and the rotation) arrive
    assert x.heads(space)[C.public_key] == a.heads(space)[C.public_key]
    assert x.version_vector(space) == a.version_vector(space)
    assert x.get_doc(space, "products", "p0")["title"] == "Bike"
    assert x.get_doc(space, "products", "late") is None
    assert x.metrics()["truncated_envelopes"] == 2
    for s in (a, c, x):
        s.close()


def test_a_forged_chain_stored_before_the_removal_is_replaced_by_the_pinned_one(
        removal: Removal, tmp_path: Path) -> None:
    a, space = removal.a, removal.space
    x = open_soil(tmp_path / "x2.db", ident(34))
    x.add_space(a.genesis(space))
    ops = a.control_envelopes(space)  # A's chain (only A writes control ops here)
    cut = next(i for i, r in enumerate(ops)
               if isinstance(control.decode_op(envelope_mod.decode(r).ct), control.RemoveMember))
    before, removal_ops = ops[:cut], ops[cut:]
    x.ingest(space, before)
    x.ingest(space, removal.forged)  # c is still a member for x: stored
    assert x.heads(space)[C.public_key][0] == len(removal.forged)
    x.ingest(space, removal_ops)
    assert C.public_key not in x.version_vector(space)  # cut to 0: not the pinned chain
    sync(a, x, space)  # the pinned chain comes again
    assert x.heads(space)[C.public_key] == a.heads(space)[C.public_key]
    assert x.version_vector(space) == a.version_vector(space)
    x.close()


def test_a_shorter_forged_chain_stored_before_the_removal_gives_way(removal: Removal,
                                                                    tmp_path: Path) -> None:
    """A forged chain shorter than ``keep`` cannot be told apart from the real one when
    the removal arrives; when the real pinned head then meets it (refused as a broken
    chain), the node cuts the forged chain and the next round brings the pinned one."""
    a, space = removal.a, removal.space
    x = open_soil(tmp_path / "x3.db", ident(35))
    x.add_space(a.genesis(space))
    ops = a.control_envelopes(space)
    cut = next(i for i, r in enumerate(ops)
               if isinstance(control.decode_op(envelope_mod.decode(r).ct), control.RemoveMember))
    x.ingest(space, ops[:cut])
    x.ingest(space, removal.forged[:2])  # c is still a member for x: stored
    x.ingest(space, ops[cut:])
    assert x.heads(space)[C.public_key][0] == 2  # shorter than keep: kept for now
    result = x.ingest(space, removal.originals)
    assert ("broken_chain" in {r for _, r in result.rejected}
            or "fork" in {r for _, r in result.rejected})
    assert C.public_key not in x.version_vector(space)  # the forged chain was cut
    x.ingest(space, removal.originals)  # the next anti-entropy round
    assert x.heads(space)[C.public_key] == a.heads(space)[C.public_key]
    x.close()

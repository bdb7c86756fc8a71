"""Issue 15 §2: two different chains behind equal version vectors are found and named.

A member who signs two chains (or a removed member whose forged chain reached a node
that stored it before hearing of the removal) leaves two nodes with equal vectors but
different heads; sync used to see nothing to do. Now both sides send their heads (cap
``heads``, protocols/sync.md §6a) and report ``ForkDetected`` with the author and seq.
"""

from __future__ import annotations

from pathlib import Path

from mycelium.spaces import service
from mycelium.sync.session import ForkDetected, SyncSession
from tests.sync.pair import pump

from .conftest import A, Clock, did, ident, open_soil
from .hostile import Forger, group_key, raws


def test_heads_message_vector() -> None:
    import json

    from mycelium.codec.frames import FrameDecoder
    from mycelium.sync.messages import HEAD_PREFIX_BYTES, Heads, decode_message, encode_message

    path = Path(__file__).resolve().parents[2] / "protocols" / "vectors" / "sync-heads.json"
    for case in json.loads(path.read_text())["cases"]:
        vv = {bytes.fromhex(a): s for a, s in case["vv"].items()}
        ids = [bytes.fromhex(case["head_ids_hex"][a]) for a in sorted(case["vv"])]
        msg = Heads(case["space"], vv, b"".join(i[:HEAD_PREFIX_BYTES] for i in ids))
        frame = bytes.fromhex(case["frame_hex"])
        (payload,) = FrameDecoder().feed(frame)
        assert decode_message(payload) == msg
        assert encode_message(msg) == payload


def test_two_chains_behind_equal_vectors_are_reported(tmp_path: Path) -> None:
    a = open_soil(tmp_path / "a.db", A)
    space = service.create_space(a, "market")
    mallory = ident(8)
    service.invite(a, space, did(mallory))
    x, y = open_soil(tmp_path / "x.db", ident(9), Clock()), open_soil(tmp_path / "y.db", ident(10))
    for node in (x, y):
        service.join(node, service.invite(a, space, did(node.identity)))
    epoch, key = group_key(a, space)
    one, two = Forger(mallory, space), Forger(mallory, space)
    first = [one.listing(f"d{i}", {"title": "to x"}, epoch, key) for i in range(3)]
    second = [two.listing(f"d{i}", {"title": "to y"}, epoch, key) for i in range(3)]
    assert x.ingest(space, raws(first)).accepted and y.ingest(space, raws(second)).accepted
    for node in (x, y):  # the same membership, control log and counts everywhere
        node.ingest(space, a.control_envelopes(space))
    assert x.version_vector(space) == y.version_vector(space)
    assert x.heads(space) != y.heads(space)

    sx = SyncSession(x, local_id=x.identity.public_key, remote_id=y.identity.public_key,
                     initiator=True, now=0)
    sy = SyncSession(y, local_id=y.identity.public_key, remote_id=x.identity.public_key,
                     initiator=False, now=0)
    trace = pump(sx, sy)
    for events, session in ((trace.events_a, sx), (trace.events_b, sy)):
        forks = [e for e in events if isinstance(e, ForkDetected)]
        assert forks == [ForkDetected(space, mallory.public_key, 3)]
        assert session.stats.forks == 1
    # each keeps the chain it holds; nothing was merged
    assert x.get_doc(space, "products", "d0")["title"] == "to x"
    assert y.get_doc(space, "products", "d0")["title"] == "to y"
    x.record_fork(space, mallory.public_key, 3)
    assert x.metrics()["forks_detected"] == 1
    for s in (a, x, y):
        s.close()

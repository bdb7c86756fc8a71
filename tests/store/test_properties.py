"""Property tests: order/duplication independence and hostile input on real SQLite stores."""

from __future__ import annotations

import functools
import os
import random
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium.spaces import service
from mycelium.store.soil import Soil
from tests.budget import examples

from .conftest import A, B, C, Clock, D, did, open_soil, sync

#: Examples per property (tests/budget.py: more in CI); a long soak: SOIL_EXAMPLES=500.
EXAMPLES = int(os.environ.get("SOIL_EXAMPLES", examples(ci=50, local=12)))


@dataclass(frozen=True)
class World:
    genesis: bytes
    space: bytes
    envelopes: tuple[bytes, ...]
    docs: tuple[dict[str, object], ...]
    vv: tuple[tuple[bytes, int], ...]


@functools.cache
def world() -> World:
    """Three writers (A admin, B, C) editing overlapping products; D is a silent member."""
    tmp = Path(tempfile.mkdtemp(prefix="soil-world-"))
    rnd = random.Random(7)
    soils = {w: open_soil(tmp / f"{i}.db", w, Clock(1_000_000 + i * 3))
             for i, w in enumerate((A, B, C))}
    a = soils[A]
    space = service.create_space(a, "market")
    for who in (B, C, D):
        code = service.invite(a, space, did(who))
        if who in soils:
            service.join(soils[who], code)
    for step in range(30):
        who = rnd.choice([A, B, C])
        soil, doc = soils[who], f"p{rnd.randrange(5)}"
        roll = rnd.random()
        if roll < 0.15:
            soil.delete_doc(space, "products", doc)
        elif roll < 0.3:
            soil.put_doc(space, "products", doc, {"status": None})
        else:
            soil.put_doc(space, "products", doc, {"title": f"{who.did[-4:]}-{step}",
                                                  "status": rnd.choice(["available", "sold"])})
        if rnd.random() < 0.3:  # some causality between writers
            other = soils[rnd.choice([A, B, C])]
            sync(soil, other, space)
    for x in soils.values():
        for y in soils.values():
            sync(x, y, space)
    envelopes = tuple(a.envelopes_since(space, {}, limit=10_000, max_bytes=1 << 30))
    result = World(a.genesis(space), space, envelopes, tuple(a.list_docs(space, "products")),
                   tuple(sorted(a.version_vector(space).items())))
    for s in soils.values():
        s.close()
    return result


def fresh(path: Path) -> Soil:
    w = world()
    soil = open_soil(path, D)
    soil.add_space(w.genesis)
    return soil


def feed(soil: Soil, envelopes: list[bytes], rnd: random.Random) -> None:
    i = 0
    while i < len(envelopes):
        n = rnd.randint(1, 12)
        soil.ingest(world().space, envelopes[i:i + n])
        i += n


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.randoms(use_true_random=False), st.randoms(use_true_random=False))
def test_any_order_and_duplication_gives_the_same_documents(r1: random.Random,
                                                             r2: random.Random) -> None:
    w = world()
    with tempfile.TemporaryDirectory() as tmp:
        one, two = fresh(Path(tmp) / "1.db"), fresh(Path(tmp) / "2.db")
        for soil, rnd in ((one, r1), (two, r2)):
            envs = list(w.envelopes) + rnd.sample(w.envelopes, k=len(w.envelopes) // 3)
            rnd.shuffle(envs)
            feed(soil, envs, rnd)
        for soil in (one, two):
            assert tuple(sorted(soil.version_vector(w.space).items())) == w.vv
            assert tuple(soil.list_docs(w.space, "products")) == w.docs
            assert soil.pending_count(w.space) == 0
            for status in ("available", "sold"):  # the SQL index agrees with the documents
                assert soil.list_docs(w.space, "products", status=status) == [
                    d for d in w.docs if d.get("status") == status]
            soil.close()


mutation = st.one_of(
    st.binary(max_size=300),
    st.tuples(st.integers(0, 10_000), st.integers(0, 7)).map(lambda t: ("flip", *t)),
    st.tuples(st.integers(0, 10_000), st.integers(1, 50)).map(lambda t: ("cut", *t)),
)


def mutate(raw: bytes, how: object) -> bytes:
    if isinstance(how, bytes):
        return how
    assert isinstance(how, tuple)
    kind, pos, arg = how
    pos %= len(raw)
    if kind == "flip":
        b = bytearray(raw)
        b[pos] ^= 1 << arg
        return bytes(b)
    return raw[:pos] + raw[pos + arg:]


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 1000), mutation), min_size=1, max_size=30),
       st.randoms(use_true_random=False))
def test_hostile_input_never_raises_never_corrupts(
    junk: list[tuple[int, object]], rnd: random.Random
) -> None:
    w = world()
    with tempfile.TemporaryDirectory() as tmp:
        soil = fresh(Path(tmp) / "x.db")
        bad = [mutate(w.envelopes[i % len(w.envelopes)], how) for i, how in junk]
        bad = [b for b in bad if b not in set(w.envelopes)]
        mixed = list(w.envelopes) + bad
        rnd.shuffle(mixed)
        feed(soil, mixed, rnd)
        assert tuple(soil.list_docs(w.space, "products")) == w.docs
        assert tuple(sorted(soil.version_vector(w.space).items())) == w.vv
        m = soil.metrics()
        refused = sum(v for k, v in m.items() if k.startswith(("rejected.", "unapplied.")))
        assert refused + m.get("duplicates", 0) + m.get("pending_now", 0) >= 1 or not bad
        assert m.get("internal_error", 0) == 0
        soil.close()
        conn = sqlite3.connect(Path(tmp) / "x.db")
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        conn.close()

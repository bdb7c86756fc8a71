"""Stores with and without the compiled hot path (docs/accel.md) end up byte-identical.

Same random writes (several authors, overlapping documents, indexed values that change,
field and document deletes, concurrent writes) ingested in random batches by a store on
the compiled path and one with every compiled function switched off: every table row,
the change notifications and the metrics must be the same."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium import accel
from mycelium.spaces import service
from mycelium.store.soil import Soil

from .conftest import A, B, C, Clock, D, did, open_soil, sync

pytestmark = pytest.mark.skipif(not accel.active(),
                                reason=f"compiled path off: {accel.disabled_reason}")

_COMPILED = accel._NAMES  # every compiled function, switched off for the Python store
_TABLES = ["envelopes", "vv", "docs", "doc_index", "pending", "deferred", "metrics", "meta"]


def _writes(tmp: Path, seed: int, steps: int) -> tuple[bytes, list[bytes]]:
    rnd = random.Random(seed)
    soils = {w: open_soil(tmp / f"w{i}.db", w, Clock(1_000_000)) for i, w in enumerate((A, B, C))}
    space = service.create_space(soils[A], "market")
    for who in (B, C, D):
        code = service.invite(soils[A], space, did(who))
        if who in soils:
            service.join(soils[who], code)
    for step in range(steps):
        who = rnd.choice([A, B, C])
        soil, doc = soils[who], f"p{rnd.randrange(4)}"
        roll = rnd.random()
        if roll < 0.1:
            soil.delete_doc(space, "products", doc)
        elif roll < 0.25:
            soil.put_doc(space, "products", doc, {rnd.choice(["status", "location"]): None})
        else:
            soil.put_doc(space, "products", doc, {
                "title": f"t{step}", "quantity": rnd.choice([0, 1.5, 2, 10**9, -0.0 + 0]),
                "status": rnd.choice(["available", "sold", "reserved"]),
                "location": rnd.choice(["north", "south"])})
        if rnd.random() < 0.3:
            sync(soil, soils[rnd.choice([A, B, C])], space)
    for who in (B, C):
        sync(soils[who], soils[A], space)
    genesis = soils[A].genesis(space)
    everything = soils[A].envelopes_since(space, {}, limit=10_000, max_bytes=1 << 26)
    for soil in soils.values():
        soil.close()
    return genesis, everything


def _replay(path: Path, genesis: bytes, envelopes: list[bytes], cuts: list[int],
            now: int) -> tuple:
    soil = Soil.open(path, D, clock=Clock(now))
    space = soil.add_space(genesis)
    changes = soil.subscribe(10_000)
    start = 0
    for cut in [*cuts, len(envelopes)]:
        soil.ingest(space, envelopes[start:cut])
        start = cut
    seen = []
    while True:
        try:
            seen.append(changes.receive_nowait())
        except Exception:
            break
    tables = {t: soil.conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall()
              if t not in ("metrics", "meta") else
              soil.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in _TABLES}
    soil.close()
    return tables, [tuple(c) for c in seen]


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 10_000), steps=st.integers(5, 40), data=st.data())
def test_compiled_and_python_stores_are_identical(tmp_path_factory: pytest.TempPathFactory,
                                                  monkeypatch: pytest.MonkeyPatch, seed: int,
                                                  steps: int, data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("eq")
    genesis, envelopes = _writes(tmp, seed, steps)
    control, rest = envelopes[:4], envelopes[4:]
    rnd = random.Random(seed)
    rnd.shuffle(rest)  # out of order: pending, then drained
    ordered = [*control, *rest]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ordered)), max_size=4)))
    # behind the writers, so their clocks count; or so far behind that all is deferred
    now = data.draw(st.sampled_from([999_000, 100_000]))
    compiled = _replay(tmp / "compiled.db", genesis, ordered, cuts, now)
    with monkeypatch.context() as m:
        for name in _COMPILED:
            m.setattr(accel, name, None)
        python = _replay(tmp / "python.db", genesis, ordered, cuts, now)
    assert compiled[0] == python[0]
    assert compiled[1] == python[1]

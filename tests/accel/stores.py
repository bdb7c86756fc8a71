"""Whole stores with and without the compiled path, fed the same batches (docs/accel.md).

Shared by the equivalence test (tests/store/test_accel_equivalence.py), the differential
fuzzer (tests/accel/differential.py) and the inner-forgery test: write a history with
several real writers, replay it into a fresh store once on the compiled path and once
with every compiled function switched off, and compare every table row, the change
notifications and the ingest results."""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mycelium import accel
from mycelium.spaces import service
from mycelium.store.soil import Soil
from tests.store.conftest import A, B, C, Clock, D, did, open_soil, sync

TABLES = ["envelopes", "vv", "docs", "doc_index", "pending", "deferred", "metrics", "meta"]


@contextmanager
def python_path() -> Iterator[None]:
    """Every compiled function switched off (as with MYCELIUM_NO_ACCEL=1), then back."""
    accel.active()  # loaded first, so the originals are the compiled functions
    saved = {name: getattr(accel, name) for name in accel._NAMES}
    try:
        for name in accel._NAMES:
            setattr(accel, name, None)
        yield
    finally:
        for name, value in saved.items():
            setattr(accel, name, value)


def write_history(tmp: Path, seed: int, steps: int) -> tuple[bytes, list[bytes]]:
    """Genesis and every envelope of a market space written by three members."""
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


#: Between batches: (batch index, doc row number, new body) to write into both stores.
Tamper = tuple[int, int, bytes]


def replay(path: Path, genesis: bytes, batches: list[list[bytes]], now: int,
           tampers: list[Tamper] = ()) -> tuple[Any, ...]:  # type: ignore[assignment]
    """Ingest ``batches`` into a fresh store as member D: ``(tables, changes, results)``."""
    soil = Soil.open(path, D, clock=Clock(now))
    space = soil.add_space(genesis)
    changes = soil.subscribe(10_000)
    results: list[Any] = []
    for i, batch in enumerate(batches):
        for _, row, body in (t for t in tampers if t[0] == i):
            keys = soil.conn.execute(
                "SELECT space, coll, doc FROM docs ORDER BY 1, 2, 3").fetchall()
            if keys:
                soil.conn.execute("UPDATE docs SET body=? WHERE space=? AND coll=? AND doc=?",
                                  (body, *keys[row % len(keys)]))
                soil.conn.commit()
        try:
            r = soil.ingest(space, batch)
            results.append((r.accepted, r.duplicates, r.pending, r.rejected))
        except Exception as exc:  # the same failure on both paths is equivalence too
            results.append(("raised", type(exc).__name__, str(exc)))
    seen = []
    while True:
        try:
            seen.append(tuple(changes.receive_nowait()))
        except Exception:
            break
    tables = {t: soil.conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall()
              if t not in ("metrics", "meta") else
              soil.conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in TABLES}
    soil.close()
    return tables, seen, results


def both_paths(tmp: Path, genesis: bytes, batches: list[list[bytes]], now: int,
               tampers: list[Tamper] = ()  # type: ignore[assignment]
               ) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """:func:`replay` on the compiled path and on the Python path."""
    compiled = replay(tmp / "compiled.db", genesis, batches, now, tampers)
    with python_path():
        python = replay(tmp / "python.db", genesis, batches, now, tampers)
    return compiled, python


_HISTORIES: dict[int, tuple[bytes, list[bytes]]] = {}


def ingest_both(rnd: random.Random, mutate: Callable[[random.Random, bytes], bytes]) -> None:
    """One fuzz case: a (cached) history, shuffled, cut into batches, some envelopes
    mutated, duplicated or dropped, some document rows tampered with between batches;
    both stores must end identical."""
    key = rnd.randrange(3)
    if key not in _HISTORIES:
        with tempfile.TemporaryDirectory() as d:
            _HISTORIES[key] = write_history(Path(d), 1000 + key, 25)
    genesis, envelopes = _HISTORIES[key]
    control, rest = envelopes[:4], list(envelopes[4:])
    rnd.shuffle(rest)
    for _ in range(rnd.randint(0, 3)):
        roll, i = rnd.random(), rnd.randrange(len(rest))
        if roll < 0.5:
            rest[i] = mutate(rnd, rest[i])
        elif roll < 0.8:
            rest.insert(rnd.randrange(len(rest)), rest[i])
        else:
            del rest[i]
    ordered = [*control, *rest]
    cuts = sorted(rnd.randrange(len(ordered) + 1) for _ in range(rnd.randint(0, 4)))
    batches, start = [], 0
    for cut in [*cuts, len(ordered)]:
        batches.append(ordered[start:cut])
        start = cut
    tampers: list[Tamper] = []
    if rnd.random() < 0.3:
        from mycelium.crdt.doc import DocState

        body = DocState({"title": [1, 0, "6e", "01" * 32, False, "x"]}, None).encode()
        tampers.append((rnd.randrange(len(batches)), rnd.randrange(8),
                        mutate(rnd, body) if rnd.random() < 0.7 else body))
    now = rnd.choice([999_000, 100_000])
    with tempfile.TemporaryDirectory() as d:
        compiled, python = both_paths(Path(d), genesis, batches, now, tampers)
    from tests.accel.differential import check

    check(compiled[2] == python[2], "ingest results")
    check(compiled[1] == python[1], "change notifications")
    check(compiled[0] == python[0], "table rows")

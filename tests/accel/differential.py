"""A seeded, time-bounded differential fuzzer: every compiled function against its Python
twin, and ``Soil.ingest`` with and without the compiled path (docs/accel.md).

Each iteration ``i`` draws everything from ``random.Random(seed + i)``, so a failure is
replayed exactly with ``--seed S --iterations 1`` where S is the printed case seed.
Compared: decode_envelope with the precise decoder and ``_decode_fast``; open_payload and
open_all with decrypt + decode + schema + drift rule; chain_runs with ``_validate_batch``;
lww_apply and merge_all with ``DocState._apply``; load_state, load_rows and fill_empty
with ``DocState.decode`` + ``values_of``; state_row and doc_rows with ``encode`` +
``live`` + ``values_of``; and whole stores (every table row, the change notifications,
the ingest results) after the same mutated batches and tampered document rows.
A compiled answer of None is always allowed (the Python path then decides); any other
answer must equal Python's, with the same types. Run as a script::

    python tests/accel/differential.py --seconds 30 [--seed N]

(prints one JSON object; exit status 1 and the case seed on the first divergence).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import cbor2

from mycelium import accel
from mycelium.crdt import payload as payloads
from mycelium.crdt.doc import DocState
from mycelium.crdt.hlc import Timestamp
from mycelium.errors import MyceliumError
from mycelium.log import envelope as envelope_mod
from mycelium.log import validate
from mycelium.log.envelope import Envelope, Kind, seal
from tests.accel import (
    preload,  # noqa: F401  (MYCELIUM_ACCEL_SO: another build of _accel)
    samples,
)


class Divergence(AssertionError):
    """The compiled path answered differently from its Python twin."""


def check(ok: bool, what: str) -> None:
    if not ok:
        raise Divergence(what)


def typed(x: Any) -> Any:
    """x with the exact type of every part (1 == 1.0 == True; NaN != NaN; -0.0 == 0.0)."""
    if isinstance(x, list | tuple):
        return (type(x), tuple(typed(v) for v in x))
    if isinstance(x, dict):
        return (type(x), tuple((typed(k), typed(v)) for k, v in x.items()))
    if isinstance(x, float):
        return (float, "nan" if math.isnan(x) else x, math.copysign(1, x))
    if isinstance(x, DocState):
        return (DocState, typed(x.fields), typed(x.tomb))
    if isinstance(x, Envelope):
        return (Envelope, tuple(typed(getattr(x, f)) for f in (
            "kind", "space", "author", "seq", "prev", "epoch", "nonce", "ct", "sig", "v",
            "raw")), x.delta_id)
    return (type(x), x)


# -- mutations ---------------------------------------------------------------------------
def mutate(rnd: random.Random, blob: bytes) -> bytes:
    """Flip bits, set bytes, cut, extend, duplicate a slice, or widen a CBOR head."""
    raw = bytearray(blob)
    for _ in range(rnd.randint(1, 3)):
        roll = rnd.random()
        if not raw:
            raw += bytes([rnd.randrange(256)])
        elif roll < 0.35:
            raw[rnd.randrange(len(raw))] ^= 1 << rnd.randrange(8)
        elif roll < 0.6:
            raw[rnd.randrange(len(raw))] = rnd.choice([0, 0x18, 0x1f, 0x40, 0x58, 0x60, 0x7f,
                                                       0x80, 0x9f, 0xa0, 0xbf, 0xf6, 0xf9,
                                                       0xfb, 0xff, rnd.randrange(256)])
        elif roll < 0.75:
            del raw[rnd.randrange(len(raw)):]
        elif roll < 0.85:
            raw += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 4)))
        else:
            i = rnd.randrange(len(raw))
            raw[i:i] = raw[i:i + rnd.randint(1, 8)]
    return bytes(raw)


def scalar(rnd: random.Random) -> Any:
    return rnd.choice([
        lambda: rnd.randint(-(2**64), 2**64), lambda: rnd.randint(-5, 300), lambda: None,
        lambda: rnd.random() < 0.5, lambda: rnd.choice([0.0, -0.0, 1.5, math.inf, math.nan,
                                                        65504.0, 1e300, 5.96e-08]),
        lambda: rnd.uniform(-1e6, 1e6), lambda: "".join(rnd.choice("ab\u00e9\u4e2d\n ")
                                                         for _ in range(rnd.randint(0, 12))),
        lambda: rnd.choice(["open", "done", "north", "x" * rnd.randint(0, 30)]),
        lambda: bytes(rnd.randrange(256) for _ in range(rnd.randint(0, 5))),
        lambda: [1, "a"], lambda: {"k": 1},
    ])()


NAMES = ["title", "quantity", "status", "location", "price", "unit", "text", "x", "",
         "\u00e9", "a" * 65]
#: The fuzzer's wall clock; payload clocks are drawn on both sides of NOW + the drift bound.
NOW = 10**12
MAX_WALL = NOW + 5 * 60 * 1000


def product(rnd: random.Random) -> payloads.Payload:
    """A products write of the kind real writers make (mostly schema-valid)."""
    fields = {"title": rnd.choice(["tomatoes", "t" * 300, ""]),
              "quantity": rnd.choice([0, 1.5, 2, 10**9, -1, math.nan]),
              "status": rnd.choice(["available", "sold", "reserved", "lost"]),
              "location": rnd.choice(["north", "south"])}
    chosen = dict(rnd.sample(sorted(fields.items()), rnd.randint(1, 4)))
    wall = rnd.choice([1000, NOW, MAX_WALL, MAX_WALL + 1])
    return payloads.set_fields("products", f"p{rnd.randrange(3)}", chosen,
                               Timestamp(wall, rnd.randint(0, 3), b"node"))


def payload_map(rnd: random.Random) -> dict[str, Any]:
    ops: list[dict[str, Any]]
    if rnd.random() < 0.1:
        ops = [{"del": True}]
    else:
        ops = [{"field": rnd.choice(NAMES), "del": True} if rnd.random() < 0.2 else
               {"field": rnd.choice(NAMES), "value": scalar(rnd)}
               for _ in range(rnd.randint(0, 5))]
    return {"coll": rnd.choice(["products", "products", "diary", "other", "", "bad\nname"]),
            "doc": rnd.choice(["d0", "d1", "", "x" * 129]),
            "ops": ops,
            "hlc": [rnd.choice([rnd.randint(0, 2**40), 2**63, 2**64 - 1, MAX_WALL,
                                MAX_WALL + 1]),
                    rnd.choice([0, 1, 2**32 - 1, 2**32]),
                    bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 4, 32, 33])))]}


def plaintext(rnd: random.Random) -> bytes:
    body = cbor2.dumps(payload_map(rnd), canonical=rnd.random() < 0.8)
    return mutate(rnd, body) if rnd.random() < 0.3 else body


# -- one target per compiled function (and one for the whole store) --------------------
def t_decode_envelope(rnd: random.Random) -> None:
    env = rnd.choice(_pool())
    raw = mutate(rnd, env.raw) if rnd.random() < 0.9 else env.raw
    got = accel.decode_envelope(raw)  # type: ignore[misc]
    fast = envelope_mod._decode_fast(raw)
    check((got is None) == (fast is None), "decode_envelope takes what _decode_fast takes")
    if got is not None:
        check(typed(got) == typed(envelope_mod._decode_precise(raw)), "decode_envelope")


def _python_open(raw: bytes, key: bytes, kind: str | None) -> Any:
    """What Soil._open_data does: decrypt, decode, and (given a space kind) the schema
    check and the drift rule; the payload, or None where Python refuses."""
    from mycelium.crdt.hlc import HLC
    from mycelium.market.collections import REGISTRY

    try:
        p = payloads.decode_payload(envelope_mod.decode(raw).open(key))
        if kind is not None:
            REGISTRY.check(p, kind)  # type: ignore[arg-type]
            HLC(b"me").check(p.hlc, NOW)
        return p
    except MyceliumError:
        return None


def _schema(kind: str) -> Any:
    from mycelium.market.collections import REGISTRY

    return REGISTRY.compiled(kind)  # type: ignore[arg-type]


def _sealed(rnd: random.Random, body: bytes, seq: int = 2) -> Envelope:
    return seal(signer=samples.SIGNER, space=samples.SPACE, seq=seq,
                prev=None if seq == 1 else bytes(32), epoch=samples.EPOCH, payload=body,
                group_key=samples.KEY)


def t_open_payload(rnd: random.Random) -> None:
    env = _sealed(rnd, plaintext(rnd), seq=rnd.choice([1, 2, 300]))
    raw = mutate(rnd, env.raw) if rnd.random() < 0.2 else env.raw
    key = samples.KEY if rnd.random() < 0.9 else bytes(32)
    kind = rnd.choice([None, "community", "personal"])
    args = (raw, key) if kind is None else (raw, key, _schema(kind), MAX_WALL)
    got = accel.open_payload(*args)  # type: ignore[misc]
    if got is not None:
        python = _python_open(raw, key, kind)
        check(python is not None, "open_payload accepted what Python refuses")
        check(typed(got) == typed(python), "open_payload")


def t_open_all(rnd: random.Random) -> None:
    envs = [_sealed(rnd, plaintext(rnd) if rnd.random() < 0.3 else product(rnd).encode())
            for _ in range(rnd.randint(1, 5))]
    keys = {samples.EPOCH: samples.KEY} if rnd.random() < 0.95 else {}
    kind = rnd.choice(["community", "personal"])
    got = accel.open_all(envs, keys, _schema(kind), MAX_WALL)  # type: ignore[misc]
    if got is None:
        return
    opened = [_python_open(e.raw, samples.KEY, kind) for e in envs]
    check(all(p is not None for p in opened), "open_all accepted what Python refuses")
    pairs, newest, doc_keys = got
    check(typed([p for _, p, _ in pairs]) == typed(opened), "open_all payloads")
    check([e for e, _, _ in pairs] == envs, "open_all envelopes")
    check(newest == max(p.hlc for p in opened if p is not None), "open_all newest")
    check(doc_keys == {(p.coll, p.doc) for p in opened if p is not None}, "open_all keys")


def _history(rnd: random.Random) -> tuple[DocState, payloads.Payload, bytes]:
    authors = [b"\x01" * 32, b"\x02" * 32, b"\xfe" * 32]

    def one() -> payloads.Payload:
        hlc = Timestamp(rnd.randint(0, 6), rnd.randint(0, 2), rnd.choice([b"n", b"m", b""]))
        if rnd.random() < 0.1:
            return payloads.delete_doc("c", "d", hlc)
        names = rnd.sample(["a", "b", "c", "title"], rnd.randint(1, 4))
        return payloads.Payload("c", "d", tuple(
            payloads.Op(n, None, True) if rnd.random() < 0.25 else payloads.Op(n, scalar(rnd))
            for n in names), hlc)

    state = DocState()
    for _ in range(rnd.randint(0, 8)):
        state._apply(one(), rnd.choice(authors))
    return state, one(), rnd.choice(authors)


def t_lww_apply(rnd: random.Random) -> None:
    state, p, author = _history(rnd)
    if state.tomb is not None:  # DocState.apply never asks then
        return
    reference = copy.deepcopy(state)
    before = typed(state.fields)
    got = accel.lww_apply(state.fields, p, author)  # type: ignore[misc]
    if got is None:
        check(typed(state.fields) == before, "lww_apply deferred but touched the fields")
        return
    check(got is reference._apply(p, author), "lww_apply result")
    check(typed(state.fields) == typed(reference.fields), "lww_apply fields")


def t_merge_all(rnd: random.Random) -> None:
    fast_docs: dict[Any, DocState] = {}
    slow_docs: dict[Any, DocState] = {}
    opened = []
    for i in range(rnd.randint(1, 5)):
        state, p, author = _history(rnd)
        key = (p.coll, f"d{i % 3}")
        if key not in fast_docs:
            fast_docs[key], slow_docs[key] = copy.deepcopy(state), copy.deepcopy(state)
        env = _sealed(rnd, b"x", seq=i + 2)
        env = Envelope(env.kind, env.space, author, env.seq, env.prev, env.epoch, env.nonce,
                       env.ct, env.sig, env.v, env.raw)
        opened.append((env, p, key))
    fast_dirty: dict[Any, bytes] = {}
    slow_dirty: dict[Any, bytes] = {}

    def fallback(env: Envelope, p: payloads.Payload, docs: dict[Any, DocState] = fast_docs,
                 dirty: dict[Any, bytes] = fast_dirty) -> None:
        key = next(k for e, q, k in opened if e is env and q is p)
        if docs[key]._apply(p, env.author):
            dirty[key] = env.delta_id

    accel.merge_all(opened, fast_docs, fast_dirty, fallback)  # type: ignore[misc]
    for env, p, _ in opened:
        fallback(env, p, slow_docs, slow_dirty)
    check(typed(fast_docs) == typed(slow_docs), "merge_all states")
    check(fast_dirty == slow_dirty, "merge_all dirty")


def _state(rnd: random.Random) -> DocState:
    hexes = ["", "6e", "01" * 32, "ff" * 8]
    fields = {}
    for name in rnd.sample(["status", "location", "title", "count", "\u00e9", "bb"],
                           rnd.randint(0, 6)):
        deleted = rnd.random() < 0.3
        value = scalar(rnd)
        if rnd.random() < 0.1:
            value = [scalar(rnd), {"k": scalar(rnd)}]
        fields[name] = [rnd.randint(0, 2**63), rnd.randint(0, 2**32), rnd.choice(hexes),
                        rnd.choice(hexes), deleted, None if deleted else value]
    tomb = None if rnd.random() < 0.8 else [rnd.randint(0, 2**40), rnd.randint(0, 9),
                                            rnd.choice(hexes), rnd.choice(hexes)]
    return DocState(fields, tomb)


def _python_load(body: bytes) -> tuple[DocState, dict[str, Any]] | None:
    try:
        state = DocState.decode(body)
    except MyceliumError:
        return None
    return state, state.values_of(samples.INDEXED)


def t_state_codec(rnd: random.Random) -> None:
    state = _state(rnd)
    got = accel.state_row(state.fields, state.tomb, samples.INDEXED)  # type: ignore[misc]
    if got is not None:
        live, body, values = got
        check(live is state.live and body == state.encode(), "state_row body")
        expected = state.values_of(samples.INDEXED)
        check(typed(values) == typed(expected), "state_row values")
        check(list(values) == list(expected), "state_row value order")
    body = state.encode()
    if rnd.random() < 0.6:
        body = mutate(rnd, body)
    loaded = accel.load_state(body, samples.INDEXED)  # type: ignore[misc]
    if loaded is not None:
        python = _python_load(body)
        check(python is not None, "load_state accepted a row Python refuses")
        check(typed(loaded) == typed(python), "load_state")


def t_rows(rnd: random.Random) -> None:
    """load_rows + fill_empty (Soil._prefetch's loops) and doc_rows (Soil._doc_rows)."""
    bodies = {f"d{i}": _state(rnd).encode() for i in range(rnd.randint(0, 4))}
    rows = [(d, mutate(rnd, b) if rnd.random() < 0.3 else b) for d, b in bodies.items()]
    if rnd.random() < 0.2:
        rows.append(("zz", b"\xa0"))  # a row nobody asked for
    wanted = {f"d{i}": ("notes", f"d{i}") for i in range(5)}
    docs: dict[Any, DocState] = {}
    before: dict[Any, Any] = {}
    left = accel.load_rows(list(rows), wanted, samples.INDEXED, docs, before)  # type: ignore[misc]
    taken = [r for r in rows if r not in left]
    check([r for r in rows if r in left] == left, "load_rows leftovers keep their order")
    for doc, body in taken:
        python = _python_load(body)
        check(python is not None, "load_rows accepted a row Python refuses")
        key = wanted[doc]
        check(typed((docs[key], before[key])) == typed(python), "load_rows")
    accel.fill_empty(wanted, docs, before, {})  # type: ignore[misc]
    loaded = {doc for doc, _ in taken}
    for doc, key in wanted.items():
        if doc not in loaded:  # as Soil._prefetch: DocState() and no indexed values
            check(typed(docs[key]) == typed(DocState()) and before[key] == {}, "fill_empty")
    _doc_rows(rnd)


def _doc_rows(rnd: random.Random) -> None:
    from mycelium.store.subscriptions import Change

    docs = {("notes", f"d{i}"): _state(rnd) for i in range(rnd.randint(1, 4))}
    before = {k: _state(rnd).values_of(samples.INDEXED) for k in docs if rnd.random() < 0.7}
    dirty = {k: bytes([i]) * 32 for i, k in enumerate(docs)}
    fast_before = copy.deepcopy(before)
    got = accel.doc_rows(samples.SPACE, dirty, docs, fast_before,  # type: ignore[misc]
                         {"notes": samples.INDEXED}, Change)
    if got is None:
        check(typed(fast_before) == typed(before), "doc_rows deferred but touched before")
        return
    rows, changes, stale, fresh = got
    want_rows, want_changes, want_stale, want_fresh = [], [], [], []
    for key, delta_id in dirty.items():
        state = docs[key]
        new = state.values_of(samples.INDEXED)
        want_rows.append((samples.SPACE, *key, int(state.live), state.encode()))
        want_changes.append(Change(samples.SPACE, *key, delta_id, not state.live))
        old = before.get(key, {})
        if new != old:
            want_stale += [(samples.SPACE, key[0], k, v, key[1]) for k, v in old.items()
                           if new.get(k, _ABSENT) != v]
            want_fresh += [(samples.SPACE, key[0], k, v, key[1]) for k, v in new.items()
                           if old.get(k, _ABSENT) != v]
            before[key] = new
    check(typed(rows) == typed(want_rows), "doc_rows rows")
    check(typed(changes) == typed(want_changes), "doc_rows changes")
    check(typed(stale) == typed(want_stale) and typed(fresh) == typed(want_fresh),
          "doc_rows index rows")
    check(typed(fast_before) == typed(before), "doc_rows before")


_ABSENT = object()


def t_chain_runs(rnd: random.Random) -> None:
    pool = _pool()
    raws = [rnd.choice(pool).raw for _ in range(rnd.randint(0, 8))]
    if rnd.random() < 0.5:  # a clean run, maybe spoiled
        raws = [e.raw for e in samples.chain(rnd.randint(1, 4))] if rnd.random() < 0.2 \
            else [e.raw for e in _run()[:rnd.randint(1, 5)]]
        if raws and rnd.random() < 0.5:
            i = rnd.randrange(len(raws))
            raws[i] = mutate(rnd, raws[i])
    run = _run()
    heads = rnd.choice([{}, {run[0].author: (1, run[0].delta_id)},
                        {run[0].author: (1, b"\x00" * 32)}, {run[0].author: (2**70, bytes(32))}])
    got = accel.chain_runs(raws, samples.SPACE, heads)  # type: ignore[misc]
    if got is None:
        return
    stored = {(e.author, e.seq): e.delta_id for e in run}
    verdict = validate._validate_batch(samples.SPACE, raws, heads,
                                       lambda a, s: stored.get((a, s)))
    flat = [e for r in got for e in r]
    if not verdict.rejected:  # every signature verifies: runs are exactly the ready list
        check(not verdict.pending and not verdict.duplicates, "chain_runs took a non-ready batch")
        by_author = sorted(flat, key=lambda e: (e.author, e.seq))
        want = sorted(verdict.ready, key=lambda e: (e.author, e.seq))
        check(typed(by_author) == typed(want), "chain_runs runs")
    for r in got:
        for a, b in itertools.pairwise(r):
            check(b.seq == a.seq + 1 and b.prev == a.delta_id, "chain_runs linked")


_POOL: list[Envelope] = []
_RUN: list[Envelope] = []


def _run() -> list[Envelope]:
    if not _RUN:
        _RUN.extend(samples.chain(5))
    return _RUN


def _pool() -> list[Envelope]:
    if not _POOL:
        run = _run()
        control = seal(signer=samples.SIGNER, space=samples.SPACE, seq=1, prev=None, epoch=0,
                       payload=b"op", group_key=None, kind=Kind.CONTROL)
        big = seal(signer=samples.SIGNER, space=samples.SPACE, seq=2**40, prev=bytes(32),
                   epoch=2**33, payload=b"p" * 300, group_key=samples.KEY)
        other = seal(signer=samples.SIGNER, space=bytes(32), seq=1, prev=None, epoch=1,
                     payload=b"x", group_key=samples.KEY)
        _POOL.extend([*run, control, big, other])
    return _POOL


def t_ingest(rnd: random.Random) -> None:
    """Whole stores: same mutated batches and tampered rows, compiled vs Python."""
    from tests.accel.stores import ingest_both

    ingest_both(rnd, mutate)


TARGETS: dict[str, Callable[[random.Random], None]] = {
    "decode_envelope": t_decode_envelope, "open_payload": t_open_payload,
    "open_all": t_open_all, "lww_apply": t_lww_apply, "merge_all": t_merge_all,
    "state_codec": t_state_codec, "rows": t_rows, "chain_runs": t_chain_runs,
    "ingest": t_ingest,
}
#: How often each target is drawn (a store round costs ~100 direct calls).
WEIGHTS = {"ingest": 1, "merge_all": 4, "open_all": 4, "rows": 6}


def run(seconds: float, seed: int, iterations: int | None = None) -> dict[str, Any]:
    """Fuzz for ``seconds`` (or exactly ``iterations`` cases); raise Divergence with the
    case seed on the first difference."""
    if not accel.active():
        raise RuntimeError(f"compiled path off: {accel.disabled_reason}")
    names = list(TARGETS)
    weights = [WEIGHTS.get(n, 10) for n in names]
    counts = dict.fromkeys(names, 0)
    deadline = time.monotonic() + seconds
    i = 0
    while (i < iterations) if iterations is not None else time.monotonic() < deadline:
        case = seed + i
        rnd = random.Random(case)
        name = rnd.choices(names, weights)[0]
        try:
            TARGETS[name](rnd)
        except Exception as exc:
            raise Divergence(f"{name}: {exc!r} (replay: --seed {case} --iterations 1)") from exc
        counts[name] += 1
        i += 1
    return {"seed": seed, "cases": i, "by_target": counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--iterations", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"differential fuzzer: seed {seed}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory():
        try:
            result = run(args.seconds, seed, args.iterations)
        except Divergence as exc:
            print(f"DIVERGENCE (seed {seed}): {exc}", file=sys.stderr)
            sys.exit(1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()

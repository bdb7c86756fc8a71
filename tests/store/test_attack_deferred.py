"""Issue 15 §5: deferred rows are not rescanned on every ingest.

A member writing thousands of envelopes dated far in the future (deferred by the drift
rule) used to make every later ingest re-read and re-open all of them. Now deferred rows
are found by what can change (a due time behind an index, the epoch whose key arrives),
an author's clock_drift rows are capped, and the work of one honest ingest does not grow
with the rows that wait. Work is counted in SQLite VM steps, not timed.
"""

from __future__ import annotations

from pathlib import Path

from mycelium.log.limits import MAX_DEFERRED_PER_AUTHOR
from mycelium.spaces import service
from mycelium.store.soil import Soil

from .conftest import A, Clock, did, ident, open_soil
from .hostile import Forger, group_key

HOUR = 3_600_000


def _space(path: Path, clock: Clock) -> tuple[Soil, bytes]:
    a = open_soil(path, A, clock)
    space = service.create_space(a, "market")
    for i in (6, 7):
        service.invite(a, space, did(ident(i)))
    return a, space


def _vm_steps(soil: Soil, call: object) -> int:
    steps = [0]

    def tick() -> int:
        steps[0] += 1
        return 0

    soil.conn.set_progress_handler(tick, 10)
    try:
        call()  # type: ignore[operator]
    finally:
        soil.conn.set_progress_handler(None, 0)
    return steps[0]


def test_waiting_rows_do_not_slow_down_an_honest_ingest(tmp_path: Path) -> None:
    clock = Clock()
    flooded, space = _space(tmp_path / "a.db", clock)
    empty, space2 = _space(tmp_path / "b.db", Clock())
    flooder = Forger(ident(6), space)
    epoch, key = group_key(flooded, space)
    future = [flooder.listing(f"f{i}", {"title": "from the future"}, epoch, key,
                              wall_ms=clock.now + 24 * HOUR + i)
              for i in range(MAX_DEFERRED_PER_AUTHOR + 200)]
    flooded.ingest(space, [e.raw for e in future])
    metrics = flooded.metrics()
    assert metrics["deferred_now"] == MAX_DEFERRED_PER_AUTHOR
    assert metrics["unapplied.too_many_deferred"] == 200

    honest = {}
    for soil, sp in ((flooded, space), (empty, space2)):
        ep, k = group_key(soil, sp)
        writer = Forger(ident(7), sp)
        honest[sp] = [writer.listing(f"h{i}", {"title": "pear"}, ep, k, wall_ms=clock.now)
                      for i in range(3)]
    costs = []
    for soil, sp in ((flooded, space), (empty, space2)):
        for env in honest[sp][:2]:  # warm up: first-time statements and pages
            soil.ingest(sp, [env.raw])
        costs.append(_vm_steps(soil, lambda s=soil, sp=sp: s.ingest(sp, [honest[sp][2].raw])))
        assert soil.get_doc(sp, "products", "h2") is not None
    assert costs[0] <= 2 * costs[1], costs

    # and when their time comes, the deferred rows apply (in bounded batches)
    clock.now += 25 * HOUR
    flooded.retry_deferred(space)
    assert flooded.metrics()["deferred_now"] == 0
    assert flooded.get_doc(space, "products", "f5")["title"] == "from the future"
    flooded.close()
    empty.close()

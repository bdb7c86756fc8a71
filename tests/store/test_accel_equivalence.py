"""Stores with and without the compiled hot path (docs/accel.md) end up byte-identical.

Same random writes (several authors, overlapping documents, indexed values that change,
field and document deletes, concurrent writes) ingested in random batches by a store on
the compiled path and one with every compiled function switched off: every table row,
the change notifications and the ingest results must be the same. (The differential
fuzzer, tests/accel/differential.py, adds mutated envelopes and tampered rows.)"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mycelium import accel
from tests.accel.stores import both_paths, write_history
from tests.budget import examples

pytestmark = pytest.mark.skipif(not accel.active(),
                                reason=f"compiled path off: {accel.disabled_reason}")


# each example writes a history with three stores and replays it twice (~0.5 s)
@settings(max_examples=examples(ci=40, local=12), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), steps=st.integers(5, 40), data=st.data())
def test_compiled_and_python_stores_are_identical(tmp_path_factory: pytest.TempPathFactory,
                                                  seed: int, steps: int,
                                                  data: st.DataObject) -> None:
    tmp = tmp_path_factory.mktemp("eq")
    genesis, envelopes = write_history(tmp, seed, steps)
    control, rest = envelopes[:4], envelopes[4:]
    rnd = random.Random(seed)
    rnd.shuffle(rest)  # out of order: pending, then drained
    ordered = [*control, *rest]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(ordered)), max_size=4)))
    batches, start = [], 0
    for cut in [*cuts, len(ordered)]:
        batches.append(ordered[start:cut])
        start = cut
    # behind the writers, so their clocks count; or so far behind that all is deferred
    now = data.draw(st.sampled_from([999_000, 100_000]))
    compiled, python = both_paths(Path(tmp), genesis, batches, now)
    assert compiled[0] == python[0]  # every table row
    assert compiled[1] == python[1]  # change notifications
    assert compiled[2] == python[2]  # ingest results

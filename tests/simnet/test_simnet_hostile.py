"""Issue 15, "Also": the hostile-member scenario on real Soil nodes converges.

A member floods junk control ops of throwaway keys, a control op it may not write,
future-dated writes and impossible sequence numbers, is removed, then pushes a second
chain for its kept seqs; the honest nodes end with one membership, the same vectors and
heads, and their writes after the removal reach everyone (simnet/virtual/hostile.py).
"""

from __future__ import annotations

import pytest

from simnet.errors import BackendUnavailable
from simnet.scenario import resolve
from simnet.virtual import hostile
from simnet.virtual.sim import Simulation


def test_hostile_member_scenario_converges() -> None:
    sc = resolve("hostile-member")
    assert sc.hostile is not None and sc.hostile.node == 5
    res = hostile.run(sc)
    assert res.converged, res
    assert res.members_agree and res.vectors_agree and res.heads_agree
    assert res.hostile_removed_everywhere
    assert res.honest_writes == sc.writes.total and res.writes_missing == 0
    assert res.honest_writes_after_removal > 0
    # the defences were exercised, by name
    assert res.rejected.get("seq_too_large", 0) > 0
    assert res.sessions_refused > 0  # the removed member syncs nothing any more
    per_node_deferred = res.metrics["deferred_now"] / (sc.nodes - 1)
    assert per_node_deferred <= 1000  # MAX_DEFERRED_PER_AUTHOR
    assert res.metrics["pending_now"] / (sc.nodes - 1) <= 1000  # the strangers' pool


def test_the_in_memory_backend_refuses_it() -> None:
    with pytest.raises(BackendUnavailable):
        Simulation(resolve("hostile-member"))

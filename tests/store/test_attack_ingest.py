"""Issue 15 §4: one envelope cannot make a whole batch fail.

An envelope with ``seq >= 2^63`` (a valid uint64 that SQLite's INTEGER cannot hold) used
to be parked, overflow, and roll back its whole chunk: 200 honest envelopes + 1 hostile
gave 0 accepted and 201 ``internal_error``, and the failure counter was lost with the
rollback. Now such a seq is refused by name, any envelope that makes a transaction fail
costs only itself, and the failure count is committed on its own.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mycelium.log import envelope as envelope_mod
from mycelium.store.soil import Soil

from .conftest import B, D, Market, did, open_soil
from .hostile import Forger, group_key


def _honest(market: Market, n: int) -> list[bytes]:
    for i in range(n):
        market.b.put_doc(market.space, "products", f"b{i}", {"title": f"tomato {i}"})
    return [r for r in market.b.envelopes_since(market.space, market.a.version_vector(
        market.space), limit=1000, max_bytes=1 << 24)]


def test_huge_seq_is_refused_by_name_and_costs_nothing_else(market: Market) -> None:
    honest = _honest(market, 200)
    epoch, key = group_key(market.b, market.space)
    hostile = Forger(B, market.space, seq=2**63 - 1, prev=os.urandom(32)).listing(
        "evil", {"title": "x"}, epoch, key)
    assert hostile.seq == 2**63
    result = market.a.ingest(market.space, [*honest[:100], hostile.raw, *honest[100:]])
    assert len(result.accepted) == 200
    assert result.rejected == [(hostile.delta_id, "seq_too_large")]
    metrics = market.a.metrics()
    assert metrics["rejected.seq_too_large"] == 1 and "internal_error" not in metrics
    assert market.a.get_doc(market.space, "products", "b150")["title"] == "tomato 150"


def test_a_failing_envelope_costs_only_itself(market: Market, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever makes a transaction fail (here: a fault injected for one envelope), the
    other envelopes of its chunk are stored, and the count survives a restart."""
    from mycelium.spaces import service

    honest = _honest(market, 120)
    d = open_soil(tmp_path / "d.db", D)
    service.join(d, service.invite(market.a, market.space, did(D)))
    market.a.put_doc(market.space, "products", "a1", {"title": "from a"})
    poison = market.a.envelopes_since(market.space, d.version_vector(market.space),
                                      limit=1000, max_bytes=1 << 24)[-1]
    poison_id = envelope_mod.decode(poison).delta_id
    real_admit = Soil._admit

    def faulty(self: Soil, work, mem, env, result, pinned=None):  # type: ignore[no-untyped-def]
        if env.delta_id == poison_id:
            raise RuntimeError("injected fault")
        return real_admit(self, work, mem, env, result, pinned)

    monkeypatch.setattr(Soil, "_admit", faulty)
    result = d.ingest(market.space, [*honest[:60], poison, *honest[60:]])
    assert len(result.accepted) == 120
    assert result.rejected == [(None, "internal_error")]
    failures = d.metrics()["internal_error"]
    assert failures >= 1
    d.close()
    monkeypatch.setattr(Soil, "_admit", real_admit)
    d = open_soil(tmp_path / "d.db", D)
    assert d.metrics()["internal_error"] == failures  # committed, not lost in the rollback
    assert d.get_doc(market.space, "products", "b119")["title"] == "tomato 119"
    d.close()

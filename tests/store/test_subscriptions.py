"""Subscriptions: changes arrive after commit; a slow subscriber never blocks writes."""

from __future__ import annotations

import trio

from .conftest import Market


async def test_changes_are_delivered(market: Market) -> None:
    changes = market.b.subscribe(buffer=100)
    market.a.put_doc(market.space, "products", "p1", {"title": "x"})
    market.b.ingest(market.space, market.a.envelopes_since(
        market.space, market.b.version_vector(market.space), limit=100, max_bytes=1 << 20))
    with trio.fail_after(2):
        got = [await changes.receive()]
        while True:
            try:
                got.append(changes.receive_nowait())
            except trio.WouldBlock:
                break
    docs = [(c.coll, c.doc, c.deleted) for c in got if c.doc is not None]
    assert docs == [("products", "p1", False)]


async def test_slow_subscriber_is_lagged_not_blocking(market: Market) -> None:
    slow = market.a.subscribe(buffer=2)
    closed = market.a.subscribe(buffer=2)
    await closed.aclose()
    with trio.fail_after(5):
        for i in range(10):
            market.a.put_doc(market.space, "products", f"p{i}", {"title": "x"})
    assert market.a.metrics()["subscriber_lagged"] == 8
    assert (await slow.receive()).doc == "p0"
    market.a.delete_doc(market.space, "products", "p0")
    assert market.a.metrics()["subscriber_lagged"] == 8
    drained = [slow.receive_nowait() for _ in range(2)]
    assert drained[-1].deleted and drained[-1].doc == "p0"

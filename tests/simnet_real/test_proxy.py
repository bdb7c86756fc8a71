"""The userspace fault proxy against a trio echo server on loopback."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
import trio

from simnet.faults import LinkParams, SimnetError, TokenBucket, cuts_for_partition
from simnet.proxy import FaultProxy

pytestmark = pytest.mark.timeout(30)


async def _echo(stream: trio.SocketStream) -> None:
    try:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


@pytest.fixture
async def echo_port(nursery: trio.Nursery) -> int:
    listeners = await nursery.start(trio.serve_tcp, _echo, 0)
    return int(listeners[0].socket.getsockname()[1])


@pytest.fixture
async def proxy(echo_port: int) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(seed=1) as p:
        p.set_target("b", "127.0.0.1", echo_port)
        yield p


async def _roundtrip(stream: trio.SocketStream, payload: bytes) -> float:
    start = trio.current_time()
    await stream.send_all(payload)
    got = b""
    while len(got) < len(payload):
        chunk = await stream.receive_some(65536)
        assert chunk, "connection closed mid-echo"
        got += chunk
    assert got == payload
    return trio.current_time() - start


async def test_forwards_and_counts_bytes(proxy: FaultProxy) -> None:
    port = await proxy.open_route("a", "b")
    assert await proxy.open_route("a", "b") == port
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await _roundtrip(stream, b"x" * 1000)
            await _roundtrip(stream, b"hello")
    await trio.sleep(0.05)
    counts = proxy.bytes_per_link()
    assert counts[("a", "b")] == 1005
    assert counts[("b", "a")] == 1005
    assert proxy.stats("a", "b").connections == 1


async def test_latency_is_at_least_configured(proxy: FaultProxy) -> None:
    port = await proxy.open_route("a", "b")
    proxy.set_link("a", "b", LinkParams(latency_s=0.08, jitter_s=0.02))
    proxy.set_link("b", "a", LinkParams(latency_s=0.05))
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            rtts = [await _roundtrip(stream, b"ping %d" % i) for i in range(5)]
    assert min(rtts) >= 0.13
    assert max(rtts) < 1.0


async def test_order_preserved_under_jitter(proxy: FaultProxy) -> None:
    port = await proxy.open_route("a", "b")
    proxy.set_link("a", "b", LinkParams(latency_s=0.001, jitter_s=0.02, jitter_dist="exponential"))
    payload = bytes(random.Random(3).randrange(256) for _ in range(300_000))
    with trio.fail_after(15):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream, trio.open_nursery() as nursery:
            nursery.start_soon(stream.send_all, payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await stream.receive_some(65536)
    assert bytes(got) == payload


async def test_loss_stalls_by_rto(proxy: FaultProxy) -> None:
    port = await proxy.open_route("a", "b")
    proxy.set_link("a", "b", LinkParams(loss=0.3, rto_s=0.02))
    with trio.fail_after(20):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            rtts = [await _roundtrip(stream, b"m%d" % i) for i in range(30)]
    stalls = proxy.stats("a", "b").stalls
    assert stalls > 0
    assert sum(r >= 0.02 for r in rtts) >= stalls


async def test_partition_resets_and_refuses_then_heal_restores(proxy: FaultProxy) -> None:
    port = await proxy.open_route("a", "b")
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        await _roundtrip(stream, b"before")
        proxy.partition([{"a"}, {"b"}])
        with pytest.raises((trio.BrokenResourceError, AssertionError)):
            # The live connection is reset: reading sees RST (or EOF) at once.
            await _roundtrip(stream, b"during")
        await stream.aclose()
        assert proxy.live_connections == 0

        fresh = await trio.open_tcp_stream("127.0.0.1", port)
        with pytest.raises((trio.BrokenResourceError, AssertionError)):
            await _roundtrip(fresh, b"refused")
        await fresh.aclose()
        assert proxy.stats("a", "b").refused >= 1

        proxy.heal()
        again = await trio.open_tcp_stream("127.0.0.1", port)
        async with again:
            await _roundtrip(again, b"after")


async def test_cut_only_affects_named_pairs(proxy: FaultProxy, echo_port: int) -> None:
    proxy.set_target("c", "127.0.0.1", echo_port)
    to_b = await proxy.open_route("a", "b")
    to_c = await proxy.open_route("a", "c")
    proxy.cut({"a"}, {"c"})
    with trio.fail_after(10):
        ok = await trio.open_tcp_stream("127.0.0.1", to_b)
        async with ok:
            await _roundtrip(ok, b"fine")
        bad = await trio.open_tcp_stream("127.0.0.1", to_c)
        with pytest.raises((trio.BrokenResourceError, AssertionError)):
            await _roundtrip(bad, b"cut")
        await bad.aclose()


async def test_reset_probability_one_resets(proxy: FaultProxy) -> None:
    port = await proxy.open_route("a", "b")
    proxy.set_link("a", "b", LinkParams(reset=1.0))
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with pytest.raises((trio.BrokenResourceError, AssertionError)):
            await _roundtrip(stream, b"boom")
        await stream.aclose()
    await trio.sleep(0.05)
    assert proxy.stats("a", "b").resets == 1


async def test_bandwidth_limit(proxy: FaultProxy) -> None:
    port = await proxy.open_route("a", "b")
    proxy.set_link("a", "b", LinkParams(bandwidth_bps=200_000, burst_bytes=20_000))
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            elapsed = await _roundtrip(stream, b"z" * 100_000)
    # 100 kB at 200 kB/s with a 20 kB burst: at least 0.4 s.
    assert elapsed >= 0.35


async def test_down_target_is_refused(proxy: FaultProxy) -> None:
    port = await proxy.open_route("a", "b")
    proxy.set_target("b", None)
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        with pytest.raises((trio.BrokenResourceError, AssertionError)):
            await _roundtrip(stream, b"anyone?")
        await stream.aclose()


def test_params_are_validated() -> None:
    with pytest.raises(SimnetError):
        LinkParams(loss=1.0)
    with pytest.raises(SimnetError):
        LinkParams(latency_s=-1)
    with pytest.raises(SimnetError):
        cuts_for_partition([{"a", "b"}, {"b"}])
    assert cuts_for_partition([{"a", "b"}, {"c"}]) == {frozenset("ac"), frozenset("bc")}


async def test_token_bucket_rate() -> None:
    bucket = TokenBucket(10_000, 1_000)
    start = trio.current_time()
    for _ in range(6):
        await bucket.take(1_000)
    assert trio.current_time() - start >= 0.45


async def test_proxy_must_be_entered() -> None:
    with pytest.raises(SimnetError, match="async with"):
        await FaultProxy().open_route("a", "b")

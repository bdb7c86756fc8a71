"""FramedStream and TokenBucket against a scripted fake stream (no sockets)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from mycelium.codec.frames import encode_frame, encode_uvarint
from mycelium.errors import LimitExceeded
from mycelium.identity.identity import Identity
from mycelium.net.errors import RateLimited, StreamClosedError
from mycelium.net.framing import FramedStream, TokenBucket
from mycelium.net.host import open_host

from .util import FakeStream

pytestmark = pytest.mark.timeout(30)


def test_token_bucket_refills_at_rate_up_to_burst() -> None:
    now = [0.0]
    bucket = TokenBucket(100, 300, clock=lambda: now[0])
    assert bucket.charge(300)
    assert not bucket.charge(1)
    now[0] = 2.0  # +200, from -1
    assert bucket.tokens == pytest.approx(199)
    now[0] = 100.0
    assert bucket.tokens == 300
    with pytest.raises(ValueError):
        TokenBucket(0, 1)


async def test_frames_split_across_reads_and_clean_eof() -> None:
    fake = FakeStream()
    framed = FramedStream(fake, remote_peer_id="peer")
    data = encode_frame(b"hello") + encode_frame(b"") + encode_frame(b"x" * 300)
    for i in range(0, len(data), 7):
        fake.send.send_nowait(data[i : i + 7])
    fake.send.send_nowait(None)
    assert [await framed.receive_frame() for _ in range(3)] == [b"hello", b"", b"x" * 300]
    assert await framed.receive_frame() is None
    assert framed.bytes_in == len(data)


async def test_eof_inside_a_frame_is_an_error() -> None:
    fake = FakeStream()
    framed = FramedStream(fake, remote_peer_id="peer")
    fake.send.send_nowait(encode_frame(b"hello")[:3])
    fake.send.send_nowait(None)
    with pytest.raises(StreamClosedError) as info:
        await framed.receive_frame()
    assert info.value.reason == "truncated_frame"


async def test_oversized_frame_resets_before_the_payload() -> None:
    fake = FakeStream()
    framed = FramedStream(fake, max_frame=1000, remote_peer_id="peer")
    fake.send.send_nowait(encode_uvarint(1001))
    with pytest.raises(LimitExceeded) as info:
        await framed.receive_frame()
    assert info.value.reason == "oversized_frame"
    assert fake.resets == 1 and framed.closed
    with pytest.raises(LimitExceeded):
        await framed.send_frame(b"y" * 1001)


async def test_read_timeout(autojump_clock: trio.testing.MockClock) -> None:
    framed = FramedStream(FakeStream(), read_timeout=5.0, remote_peer_id="peer")
    with pytest.raises(StreamClosedError) as info:
        await framed.receive_some()
    assert info.value.reason == "read_timeout"


async def test_rate_limit_cuts_off_and_reports() -> None:
    fake = FakeStream()
    cut: list[str] = []
    now = [0.0]
    framed = FramedStream(fake, bucket=TokenBucket(10, 100, clock=lambda: now[0]),
                          remote_peer_id="peer", on_rate_limited=cut.append)
    fake.send.send_nowait(b"a" * 60)
    fake.send.send_nowait(b"a" * 60)
    assert await framed.receive_some() == b"a" * 60
    with pytest.raises(RateLimited):
        await framed.receive_some()
    assert cut == ["peer"] and fake.resets == 1


async def test_close_is_idempotent_and_works_when_cancelled() -> None:
    fake = FakeStream()
    framed = FramedStream(fake, remote_peer_id="peer")
    with trio.CancelScope() as scope:
        scope.cancel()
        await framed.close()  # shielded: still reaches the stream
    await framed.close()
    assert fake.closes == 1
    with pytest.raises(StreamClosedError):
        await framed.send(b"late")


async def test_errors_inside_open_host_are_not_wrapped_pitfall_11() -> None:
    """Pitfall 11: host.run() nests the body in three nurseries; open_host unwraps."""
    with pytest.raises(ValueError, match="boom"), trio.fail_after(20):
        async with open_host(Identity.generate(), ["/ip4/127.0.0.1/tcp/0"]):
            raise ValueError("boom")

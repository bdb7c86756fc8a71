"""Bounded byte/frame I/O over one py-libp2p stream.

:class:`FramedStream` is the only place that touches a libp2p stream's ``read``/``write``.
It turns py-libp2p's quirks into our contract (``docs/py-libp2p-notes.md``):

- end of stream is ``None``, not ``StreamEOF`` (pitfall 4); a reset is
  :class:`~mycelium.net.errors.StreamClosedError` with reason ``reset``;
- every read and write has a timeout, so a silent peer cannot pin a task forever;
- frames are at most ``max_frame`` bytes, checked from the length prefix before the
  payload is buffered (:class:`~mycelium.codec.frames.FrameDecoder`);
- what a peer sends is charged to per-peer :class:`TokenBucket` s (bytes, frames:
  :meth:`FramedStream.charge_frames`, CPU: :meth:`FramedStream.charge_cpu`); a peer
  that exceeds one gets :class:`~mycelium.net.errors.RateLimited` and its stream is
  reset. We cut off
  rather than throttle because throttling only delays reading: py-libp2p's muxers keep
  buffering what the peer sends meanwhile, so slowing down the reader does not bound
  memory, and an honest sync session never needs more than its granted credit in flight;
- what we send to a peer is paced by its outbound bucket (we wait, as it is our own output).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import trio

from mycelium.codec.frames import MAX_FRAME_BYTES, FrameDecoder, encode_frame
from mycelium.errors import MyceliumError
from mycelium.net.errors import RateLimited, StreamClosedError

log = logging.getLogger("mycelium.net")

#: Largest single read from the stream.
READ_CHUNK = 64 * 1024
#: Default per-read timeout: longer than the sync keepalive (30 s) so an idle but live
#: session never trips it, short enough that a vanished peer is noticed.
DEFAULT_READ_TIMEOUT = 150.0
DEFAULT_WRITE_TIMEOUT = 30.0
#: Default per-peer budget. Generous: a full sync catch-up is credit-limited (1 MiB in
#: flight per session), so it stays far below this unless the peer misbehaves.
DEFAULT_RATE_BYTES_S = 16 * 1024 * 1024
DEFAULT_BURST_BYTES = 64 * 1024 * 1024
#: Default per-peer frame budget. Bytes alone do not bound CPU: within 16 MiB/s a peer
#: could send millions of one-byte frames, each a CBOR decode. Sync batches envelopes
#: into few large frames, so honest peers stay far below this.
DEFAULT_RATE_FRAMES_S = 2000.0
DEFAULT_BURST_FRAMES = 10000.0
#: Default per-peer CPU budget (seconds of CPU per second, and burst): decoding and
#: ingesting what a peer sends is charged to it, so input that is cheap to send and
#: dear to refuse is cut off too. An honest catch-up of 100k deltas costs ~6 CPU-s.
DEFAULT_RATE_CPU_S = 0.5
DEFAULT_BURST_CPU = 30.0


class LibP2PStream(Protocol):
    """The part of py-libp2p's ``INetStream`` we use (typed here: the library's stubs are
    loose, and tests can substitute a fake)."""

    async def read(self, n: int | None = None) -> bytes: ...

    async def write(self, data: bytes) -> None: ...

    async def close(self) -> None: ...

    async def reset(self) -> None: ...


class TokenBucket:
    """Bytes-per-second budget with a burst allowance, shared by every stream of a peer.

    ``charge(n)`` returns False once the peer has used more than the bucket holds; the
    caller decides what to do (we cut the stream off). Time comes from ``clock`` so tests
    can drive it.
    """

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = trio.current_time
    ) -> None:
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate = float(rate)
        self.burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._stamp: float | None = None

    @property
    def tokens(self) -> float:
        """Bytes the peer may still send right now."""
        self._refill()
        return self._tokens

    def charge(self, n: float) -> bool:
        """Take ``n`` bytes from the bucket; False if that overdraws it."""
        self._refill()
        self._tokens -= n
        return self._tokens >= 0

    def _refill(self) -> None:
        now = self._clock()
        if self._stamp is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now


class FramedStream:
    """One libp2p stream with limits: see the module docstring.

    Use either the byte interface (:meth:`receive_some`, what :class:`SyncSession`
    consumes) or the frame interface (:meth:`receive_frame`) on one stream, not both.
    Not safe for two concurrent readers or two concurrent writers (one of each is fine).
    """

    def __init__(
        self,
        stream: LibP2PStream,
        *,
        max_frame: int = MAX_FRAME_BYTES,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        bucket: TokenBucket | None = None,
        frame_bucket: TokenBucket | None = None,
        remote_peer_id: str | None = None,
        on_rate_limited: Callable[[str], None] | None = None,
        cpu_bucket: TokenBucket | None = None,
        out_bucket: TokenBucket | None = None,
    ) -> None:
        self._stream = stream
        self.max_frame = max_frame
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.bucket = bucket
        self.frame_bucket = frame_bucket
        self.cpu_bucket = cpu_bucket
        self.out_bucket = out_bucket
        self.remote_peer_id = (
            remote_peer_id if remote_peer_id is not None else _peer_of(stream)
        )
        self._on_rate_limited = on_rate_limited
        self._decoder = FrameDecoder(max_frame=max_frame)
        self._frames: deque[bytes] = deque()
        self._closed = False
        self.bytes_in = 0
        self.bytes_out = 0
        #: Set by the stream's user once the stream does useful work (the sync driver:
        #: a session that shares a space) and whenever it makes progress (envelopes
        #: moved); the host evicts useless and idle inbound streams first when slots
        #: run short (``MyceliumHost``).
        self.useful = False
        self.last_progress = trio.current_time()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- reading --------------------------------------------------------------------
    async def receive_some(self) -> bytes | None:
        """Up to 64 KiB of whatever arrived; ``None`` at a clean end of stream.

        Raises :class:`StreamClosedError` (``reset``, ``read_timeout``) or
        :class:`RateLimited` (the stream has been reset by then).
        """
        from libp2p.network.stream.exceptions import StreamEOF

        if self._closed:
            raise StreamClosedError("stream already closed", reason="closed")
        try:
            with trio.fail_after(self.read_timeout):
                data = await self._stream.read(READ_CHUNK)
        except StreamEOF:
            return None
        except trio.TooSlowError as exc:
            raise StreamClosedError(
                f"nothing read from {_short(self.remote_peer_id)} for {self.read_timeout} s",
                reason="read_timeout",
            ) from exc
        except (trio.Cancelled, MyceliumError):
            raise
        except Exception as exc:  # py-libp2p: StreamReset, StreamError, muxer errors
            raise StreamClosedError(f"read failed: {exc!r}", reason="reset") from exc
        if not data:  # some muxers signal EOF with b"" rather than StreamEOF
            return None
        self.bytes_in += len(data)
        if self.bucket is not None and not self.bucket.charge(len(data)):
            await self._cut_off("bytes")
        return data

    async def receive_frame(self) -> bytes | None:
        """The next frame payload; ``None`` at a clean end of stream between frames.

        Raises :class:`~mycelium.errors.LimitExceeded` (``oversized_frame``) or
        :class:`~mycelium.codec.frames.FrameError` for a broken stream (the stream is
        reset first), and whatever :meth:`receive_some` raises.
        """
        while not self._frames:
            data = await self.receive_some()
            if data is None:
                if self._decoder.buffered:
                    raise StreamClosedError("stream ended inside a frame", reason="truncated_frame")
                return None
            try:
                frames = self._decoder.feed(data)
            except MyceliumError as exc:
                log.warning(
                    "peer %s sent a bad frame (%s): resetting stream",
                    _short(self.remote_peer_id), exc.reason,
                )
                await self.reset()
                raise
            await self.charge_frames(len(frames))
            self._frames.extend(frames)
        return self._frames.popleft()

    async def charge_frames(self, n: int) -> None:
        """Charge ``n`` received frames to the peer's frame bucket.

        :meth:`receive_frame` does this itself; a byte-interface user that decodes frames
        elsewhere (the sync driver) calls it with the count it decoded. Raises
        :class:`RateLimited` after resetting the stream when the peer overdraws.
        """
        if n and self.frame_bucket is not None and not self.frame_bucket.charge(n):
            await self._cut_off("frames")

    async def charge_cpu(self, seconds: float) -> None:
        """Charge CPU time spent on what the peer sent to its CPU bucket. Raises
        :class:`RateLimited` after resetting the stream when the peer overdraws."""
        if seconds > 0 and self.cpu_bucket is not None and not self.cpu_bucket.charge(seconds):
            await self._cut_off("cpu")

    async def _cut_off(self, what: str) -> None:
        bucket = {"bytes": self.bucket, "frames": self.frame_bucket,
                  "cpu": self.cpu_bucket}[what]
        log.warning(
            "peer %s exceeded its rate limit (%.0f %s/s, burst %.0f): resetting stream",
            _short(self.remote_peer_id),
            bucket.rate if bucket else 0,
            what,
            bucket.burst if bucket else 0,
        )
        if self._on_rate_limited is not None:
            self._on_rate_limited(self.remote_peer_id)
        await self.reset()
        raise RateLimited(f"peer {_short(self.remote_peer_id)} exceeded its rate limit")

    # -- writing --------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Write raw, already framed bytes (``SyncSession.data_to_send()``)."""
        if not data:
            return
        if self._closed:
            raise StreamClosedError("stream already closed", reason="closed")
        try:
            with trio.fail_after(self.write_timeout):
                await self._throttle(len(data))
                await self._stream.write(data)
        except trio.TooSlowError as exc:
            raise StreamClosedError(
                f"write to {_short(self.remote_peer_id)} stalled for {self.write_timeout} s",
                reason="write_timeout",
            ) from exc
        except (trio.Cancelled, MyceliumError):
            raise
        except Exception as exc:
            raise StreamClosedError(f"write failed: {exc!r}", reason="write_failed") from exc
        self.bytes_out += len(data)

    async def _throttle(self, n: int) -> None:
        """Outbound bytes per peer are rate-limited like inbound ones (sync.md §6.1),
        but by waiting: what we send is ours to pace. A peer that keeps us writing
        beyond the rate only slows its own stream down (and trips the write timeout)."""
        bucket = self.out_bucket
        if bucket is None:
            return
        short = n - bucket.tokens
        if short > 0:
            await trio.sleep(short / bucket.rate)
        bucket.charge(n)

    async def send_frame(self, payload: bytes) -> None:
        """Length-prefix ``payload`` and write it (``LimitExceeded`` above ``max_frame``)."""
        await self.send(encode_frame(payload, max_frame=self.max_frame))

    # -- ending ---------------------------------------------------------------------
    async def close(self) -> None:
        """Orderly close (our side sends EOF). Idempotent, bounded, never raises."""
        if self._closed:
            return
        self._closed = True
        # Shielded: close runs in ``finally`` blocks of cancelled tasks too; bounded.
        deadline = trio.current_time() + self.write_timeout
        with trio.CancelScope(shield=True, deadline=deadline) as scope:
            try:
                await self._stream.close()
            except Exception as exc:  # already reset by the peer, connection gone...
                log.debug("close of stream to %s failed: %r", _short(self.remote_peer_id), exc)
                await self._reset_quietly()
        if scope.cancelled_caught:
            await self._reset_quietly()

    async def reset(self) -> None:
        """Abort both directions at once. Idempotent, never raises."""
        self._closed = True
        await self._reset_quietly()

    async def _reset_quietly(self) -> None:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 5):
            try:
                await self._stream.reset()
            except Exception as exc:
                log.debug("reset of stream to %s failed: %r", _short(self.remote_peer_id), exc)


def _peer_of(stream: Any) -> str:
    """Base58 peer id of the stream's remote end (never multibase: pitfall 5)."""
    try:
        return str(stream.muxed_conn.peer_id.to_base58())
    except AttributeError:
        return "unknown"


def _short(peer_id: str) -> str:
    return peer_id[-8:]

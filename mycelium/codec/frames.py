"""Length-prefixed frames for byte streams (``protocols/sync.md`` §2).

A frame is ``uvarint(len(payload)) || payload``. The varint is unsigned LEB128 as in
multiformats (7 bits per byte, low group first, high bit = "more"), must be minimal (no
redundant ``0x80`` continuation groups, so one length has exactly one encoding) and may
use at most :data:`MAX_PREFIX_BYTES` bytes.

The decoder is incremental and never buffers more than one frame: an announced length
above the limit raises :class:`~mycelium.errors.LimitExceeded` (reason ``oversized_frame``)
as soon as the prefix has been read, before any of the payload is accepted, so a peer
cannot make us allocate memory by announcing a huge frame.
"""

from __future__ import annotations

from mycelium.errors import CodecError, LimitExceeded

#: Default largest payload accepted in one frame (1 MiB).
MAX_FRAME_BYTES = 1 << 20
#: A uvarint of up to 4 bytes encodes lengths below 2**28, far above any sane limit.
MAX_PREFIX_BYTES = 4


class FrameError(CodecError):
    """The byte stream is not a well-formed sequence of frames."""

    reason = "bad_frame"


def encode_uvarint(value: int) -> bytes:
    """Minimal unsigned LEB128 encoding of ``value`` (``value >= 0``)."""
    if value < 0:
        raise ValueError("uvarint must be >= 0")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_frame(payload: bytes, *, max_frame: int = MAX_FRAME_BYTES) -> bytes:
    """Prefix ``payload`` with its length. Raises ``LimitExceeded`` above ``max_frame``."""
    if len(payload) > max_frame:
        raise LimitExceeded(
            f"frame of {len(payload)} bytes exceeds {max_frame}", reason="oversized_frame"
        )
    return encode_uvarint(len(payload)) + payload


class FrameDecoder:
    """Incremental frame splitter: ``feed(bytes) -> [payload, ...]``.

    After an error the decoder is poisoned (every later ``feed`` raises again): a stream
    that broke framing once cannot be resynchronised safely.
    """

    __slots__ = ("_buf", "_error", "_need", "max_frame")

    def __init__(self, *, max_frame: int = MAX_FRAME_BYTES) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._need: int | None = None  # payload length of the frame being read, once known
        self._error: CodecError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        """Add ``data`` and return every payload completed by it (possibly none)."""
        if self._error is not None:
            raise self._error
        self._buf += data
        frames: list[bytes] = []
        try:
            while True:
                if self._need is None:
                    self._need = self._read_prefix()
                    if self._need is None:
                        break
                if len(self._buf) < self._need:
                    break
                frames.append(bytes(self._buf[: self._need]))
                del self._buf[: self._need]
                self._need = None
        except CodecError as exc:
            self._error = exc
            self._buf.clear()
            raise
        return frames

    def _read_prefix(self) -> int | None:
        """Consume a complete length prefix from the buffer, or return None if partial."""
        value = 0
        for i, byte in enumerate(self._buf):
            if i >= MAX_PREFIX_BYTES:
                break
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if byte == 0 and i > 0:
                    raise FrameError("non-minimal frame length prefix")
                if value > self.max_frame:
                    raise LimitExceeded(
                        f"frame of {value} bytes exceeds {self.max_frame}",
                        reason="oversized_frame",
                    )
                del self._buf[: i + 1]
                return value
            if 1 << (7 * (i + 1)) > self.max_frame:
                # More groups follow, so the length is at least 2**(7*(i+1)): too big.
                raise LimitExceeded(
                    f"frame length prefix announces more than {self.max_frame} bytes",
                    reason="oversized_frame",
                )
        if len(self._buf) >= MAX_PREFIX_BYTES:
            raise LimitExceeded("frame length prefix too long", reason="oversized_frame")
        return None

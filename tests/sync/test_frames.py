"""Length-prefixed frames: round trips, incremental feeding, limits before buffering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mycelium.codec.frames import FrameDecoder, FrameError, encode_frame, encode_uvarint
from mycelium.errors import LimitExceeded


@pytest.mark.parametrize(("value", "encoded"), [
    (0, b"\x00"), (1, b"\x01"), (127, b"\x7f"), (128, b"\x80\x01"), (300, b"\xac\x02"),
    (16384, b"\x80\x80\x01"), (1 << 20, b"\x80\x80\x40"),
])
def test_uvarint_known_values(value: int, encoded: bytes) -> None:
    assert encode_uvarint(value) == encoded


@given(st.lists(st.binary(max_size=300), max_size=20), st.data())
def test_any_split_yields_the_same_frames(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    dec = FrameDecoder()
    got: list[bytes] = []
    last = 0
    for cut in [*cuts, len(stream)]:
        got += dec.feed(stream[last:cut])
        last = cut
    assert got == payloads
    assert dec.buffered == 0


def test_oversized_frame_is_refused_on_the_prefix_alone() -> None:
    dec = FrameDecoder(max_frame=1000)
    with pytest.raises(LimitExceeded) as exc:
        dec.feed(encode_uvarint(1001))  # no payload byte sent yet
    assert exc.value.reason == "oversized_frame"
    assert dec.buffered == 0


def test_oversized_prefix_detected_before_it_completes() -> None:
    dec = FrameDecoder()  # 1 MiB: three continuation bytes already mean >= 2**21
    with pytest.raises(LimitExceeded):
        dec.feed(b"\xff\xff\xff")


def test_non_minimal_prefix_is_rejected() -> None:
    with pytest.raises(FrameError) as exc:
        FrameDecoder().feed(b"\x81\x00x")
    assert exc.value.reason == "bad_frame"


def test_decoder_stays_poisoned_after_an_error() -> None:
    dec = FrameDecoder(max_frame=10)
    with pytest.raises(LimitExceeded):
        dec.feed(b"\x20")
    with pytest.raises(LimitExceeded):
        dec.feed(encode_frame(b"ok"))


def test_encode_frame_refuses_oversized_payload() -> None:
    with pytest.raises(LimitExceeded):
        encode_frame(b"x" * 11, max_frame=10)
    assert encode_frame(b"") == b"\x00"

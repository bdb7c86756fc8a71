"""Hostile peers: arbitrary bytes or message sequences never raise out of a session."""

from __future__ import annotations

import contextlib

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.codec.frames import encode_frame
from mycelium.sync.gossip import decode_gossip
from mycelium.sync.memstore import MemoryStore
from mycelium.sync.messages import (
    Ack,
    Bye,
    Done,
    Envelopes,
    Error,
    Hello,
    Live,
    Message,
    ProtocolError,
    Vector,
    Want,
    decode_message,
    encode_message,
)
from mycelium.sync.session import Closed, SessionError, SessionState, SyncSession

from .pair import Node, make_nodes, open_pair, pump

S = b"\x0c" * 32
NODES = make_nodes(2)
for _n in NODES:
    _n.store.add_space(S)
ENVS = NODES[0].write(S, 3)

small = st.integers(0, 3)
vv = st.dictionaries(st.sampled_from([NODES[0].id, b"\x00" * 32]), st.integers(1, 5), max_size=2)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, salt=st.binary(min_size=16, max_size=16),
              offers=st.lists(st.binary(min_size=16, max_size=16), max_size=2).map(tuple),
              credit_envelopes=st.integers(0, 300), credit_bytes=st.integers(0, 1 << 21)),
    st.builds(Vector, small, vv), st.builds(Want, small, vv),
    st.builds(Envelopes, small, st.lists(st.sampled_from([*ENVS, b"junk"]), max_size=3)),
    st.builds(Live, small, st.lists(st.sampled_from([*ENVS, b"junk"]), max_size=3)),
    st.builds(Ack, small, st.integers(0, 10_000)), st.builds(Done, small),
    st.just(Bye()), st.builds(Error, st.text(max_size=10)),
)


def fresh_pair() -> tuple[SyncSession, SyncSession]:
    """Node 0 (holding ENVS) initiates towards a fresh, empty node 1."""
    b = Node("b", MemoryStore(cache=NODES[1].store.cache), NODES[1].key)
    b.store.add_space(S)
    return open_pair(NODES[0], b)


def check_outcome(s: SyncSession) -> None:
    events = s.events()
    if s.state is SessionState.CLOSED:
        assert any(isinstance(e, Closed) for e in events) or not events
    assert all(isinstance(e.reason, str) for e in events if isinstance(e, SessionError))


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=200), st.booleans())
def test_random_bytes_never_raise(data: bytes, after_handshake: bool) -> None:
    sa, sb = fresh_pair()
    if after_handshake:
        pump(sa, sb)
    sb.receive_data(data, 1.0)
    sb.frames_to_send()
    check_outcome(sb)


@settings(max_examples=150, deadline=None)
@given(st.lists(messages, max_size=8), st.booleans(), st.booleans())
def test_random_message_sequences_never_raise(msgs: list[Message], handshake: bool,
                                               framed: bool) -> None:
    sa, sb = fresh_pair()
    if handshake:
        pump(sa, sb)
    target = sb if handshake or framed else sa
    for msg in msgs:
        payload = encode_message(msg)
        if framed:
            target.receive_data(encode_frame(payload), 1.0)
        else:
            target.receive_frame(payload, 1.0)
        target.frames_to_send()
    check_outcome(target)


cbor_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=40)
    | st.text(max_size=10) | st.sampled_from(["hello", "vv", "env", "ack", "done", "gossip"]),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["t", "s", "e", "vv", "n", "b", "r"]) | st.binary(
        min_size=32, max_size=32), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=120), cbor_values.map(cbor2.dumps)))
def test_decoders_raise_only_protocol_errors(data: bytes) -> None:
    for decode in (decode_message, decode_gossip):
        with contextlib.suppress(ProtocolError):
            decode(data)

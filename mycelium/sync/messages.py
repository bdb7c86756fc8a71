"""Sync protocol messages: typed values <-> canonical CBOR maps (``protocols/sync.md`` §4).

Every message is one CBOR map with a text type tag ``t`` and a fixed set of short keys.
Decoding is strict: exact key set per type, exact value types, every count and size
bounded by :class:`MessageLimits`, and canonical encoding required (so a frame has one
byte representation, which keeps traces and test vectors exact). Any violation raises
:class:`ProtocolError` with a machine-readable ``reason``.

Spaces are never named on the wire after the handshake: a message refers to a space by
its index ``s`` in the initiator's HELLO offer list (see :mod:`mycelium.sync.offers`).
Envelopes travel as opaque byte strings exactly as signed; this module never decodes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from mycelium.codec.frames import MAX_FRAME_BYTES
from mycelium.errors import CodecError, MyceliumError
from mycelium.sync.ports import VersionVector
from mycelium.sync.wire import WireError, read_message_map

PROTOCOL_VERSION = 1
#: libp2p protocol id of a sync stream.
PROTOCOL_ID = "/mycelium/sync/1"
SALT_BYTES = 16
TOKEN_BYTES = 16
AUTHOR_BYTES = 32
MAX_REASON_CHARS = 64
MAX_CAPS = 16
MAX_CAP_CHARS = 32


class ProtocolError(MyceliumError):
    """The peer (or a local caller) broke the sync protocol; ``reason`` says how."""

    reason = "protocol_error"


@dataclass(frozen=True, slots=True)
class MessageLimits:
    """Upper bounds a receiver enforces on every decoded message.

    These are the protocol maxima of ``protocols/sync.md`` §5; a sender stays at or below
    them (its own batch limits are usually smaller).
    """

    max_frame: int = MAX_FRAME_BYTES
    max_spaces: int = 256
    max_vector_entries: int = 8192
    max_batch_envelopes: int = 256
    max_batch_bytes: int = 768 * 1024


DEFAULT_LIMITS = MessageLimits()


@dataclass(frozen=True, slots=True)
class Hello:
    """First message of each side: version, fresh salt, space offer tokens, initial credit.

    ``credit_envelopes``/``credit_bytes`` are what the sender of the HELLO lets its peer
    send before the first ACK. ``offers`` are the initiator's offer tokens, or for the
    responder its answer tokens for the offers it shares (``protocols/sync.md`` §3).
    """

    salt: bytes
    offers: tuple[bytes, ...]
    credit_envelopes: int
    credit_bytes: int
    caps: tuple[str, ...] = ()
    version: int = PROTOCOL_VERSION


@dataclass(frozen=True, slots=True)
class Vector:
    """The sender's version vector for shared space ``space`` (an offer index)."""

    space: int
    vv: VersionVector


@dataclass(frozen=True, slots=True)
class Want:
    """After DONE, the receiver still lacks envelopes: "resend from this vector"."""

    space: int
    vv: VersionVector


@dataclass(frozen=True, slots=True)
class Have:
    """Lazy push (cap ``lazy``): the sender holds ``vv`` (contiguous seqs, only the
    authors that advanced); the receiver raises its view and pulls with WANT if the
    envelopes do not reach it by another path soon."""

    space: int
    vv: VersionVector


@dataclass(frozen=True, slots=True)
class Heads:
    """Cap ``heads`` (sync.md §6a): the sender's vector for ``space`` and, for each of its
    authors in ascending key order, the first 8 bytes of the delta id at that seq. Two
    different chains behind equal counts show up as different heads (a fork)."""

    space: int
    vv: VersionVector
    heads: bytes  # 8 bytes per entry of ``vv``, authors ascending


@dataclass(frozen=True, slots=True)
class Prune:
    """Lazy push (cap ``lazy``): "your live pushes of ``space`` only bring me duplicates":
    from now on both sides announce new envelopes with HAVE instead of pushing them on
    this link (until the next WANT)."""

    space: int


@dataclass(frozen=True, slots=True)
class Envelopes:
    """A reconciliation batch of raw envelopes for ``space``; costs flow-control credit."""

    space: int
    envelopes: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class Live:
    """New envelopes pushed after (or during) reconciliation; costs credit like ENVELOPES."""

    space: int
    envelopes: Sequence[bytes]


@dataclass(frozen=True, slots=True)
class Ack:
    """Grants the peer more credit: ``envelopes`` more envelopes and ``nbytes`` more bytes.

    ``Ack(0, 0)`` is a keepalive.
    """

    envelopes: int
    nbytes: int


@dataclass(frozen=True, slots=True)
class Done:
    """The sender has sent everything the receiver lacked for ``space`` (by its view)."""

    space: int


@dataclass(frozen=True, slots=True)
class Bye:
    """Orderly close."""


@dataclass(frozen=True, slots=True)
class Error:
    """Close because of an error; ``reason`` is a short machine-readable string."""

    reason: str


Message = (Hello | Vector | Want | Envelopes | Live | Ack | Done | Bye | Error | Have | Prune
           | Heads)

#: Capability (HELLO ``caps``) for lazy push: HAVE and PRUNE (``protocols/sync.md`` §7.5).
CAP_LAZY = "lazy"
#: Capability for HEADS: fork detection behind equal vectors (``protocols/sync.md`` §6a).
CAP_HEADS = "heads"
#: Bytes of a delta id a HEADS message carries per author.
HEAD_PREFIX_BYTES = 8

#: Message tags, in the order of ``protocols/sync.md`` §4.
TAGS: dict[type, str] = {
    Hello: "hello", Vector: "vv", Envelopes: "env", Live: "live", Ack: "ack",
    Done: "done", Want: "want", Bye: "bye", Error: "err", Have: "have", Prune: "prune",
    Heads: "heads",
}


def encode_message(msg: Message) -> bytes:
    """Canonical CBOR of ``msg`` (no validation beyond what the types imply).

    Keys are inserted in canonical order (shorter first, then bytewise) and vectors are
    sorted, so cbor2's plain encoder produces the deterministic encoding at a third of
    the cost of its canonical mode; ``tests/sync/test_messages.py`` checks both agree.
    """
    m: dict[str, Any]
    match msg:
        case Hello():
            m = {"t": "hello", "v": msg.version, "caps": list(msg.caps), "salt": msg.salt,
                 "credit": [msg.credit_envelopes, msg.credit_bytes], "offers": list(msg.offers)}
        case Vector() | Want() | Have():
            m = {"s": msg.space, "t": TAGS[type(msg)], "vv": dict(sorted(msg.vv.items()))}
        case Heads():
            m = {"h": msg.heads, "s": msg.space, "t": "heads",
                 "vv": dict(sorted(msg.vv.items()))}
        case Envelopes() | Live():
            m = {"e": list(msg.envelopes), "s": msg.space, "t": TAGS[type(msg)]}
        case Ack():
            m = {"b": msg.nbytes, "n": msg.envelopes, "t": "ack"}
        case Done() | Prune():
            m = {"s": msg.space, "t": TAGS[type(msg)]}
        case Bye():
            m = {"t": "bye"}
        case Error():
            m = {"r": msg.reason[:MAX_REASON_CHARS], "t": "err"}
        case _:
            raise TypeError(f"not a sync message: {msg!r}")
    try:
        return cbor2.dumps(m)
    except (cbor2.CBOREncodeError, TypeError, ValueError) as exc:
        raise CodecError(f"cannot encode message: {exc}") from exc


def decode_message(payload: bytes, limits: MessageLimits = DEFAULT_LIMITS) -> Message:
    """Parse one frame payload. Raises :class:`ProtocolError` on anything unexpected.

    The frame is read by :func:`mycelium.sync.wire.read_message_map`, which bounds the
    work by the message's shape (counts checked before bodies are read) and accepts only
    the deterministic encoding, so a message has exactly one byte form (sync.md §4.1).
    Small messages are also compared with their re-encoding, as a second guard.
    """
    try:
        m = read_message_map(payload, limits)
    except WireError as exc:
        raise ProtocolError(str(exc), reason=exc.reason) from exc
    tag = m.get("t")
    decoder = _DECODERS.get(tag) if isinstance(tag, str) else None
    if decoder is None:
        raise ProtocolError(f"unknown message type {tag!r}", reason="unknown_message")
    keys, fn = decoder
    if m.keys() != keys:
        raise ProtocolError(f"{tag}: fields {sorted(map(str, m))} != {sorted(keys)}",
                            reason="bad_message")
    msg: Message = fn(m, limits)
    small = type(msg) is not Envelopes and type(msg) is not Live and len(payload) <= 4096
    if small and encode_message(msg) != payload:
        raise ProtocolError("message is not in deterministic CBOR encoding",
                                reason="bad_frame")
    return msg


# -- field checks -------------------------------------------------------------------

def _bad(what: str, reason: str = "bad_message") -> ProtocolError:
    return ProtocolError(what, reason=reason)


def _uint(value: object, what: str, *, bound: int = 2**64) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < bound:
        raise _bad(f"{what} must be an unsigned integer below {bound}")
    return value


def _space(value: object, limits: MessageLimits) -> int:
    return _uint(value, "space index", bound=limits.max_spaces)


def _vv(value: object, limits: MessageLimits) -> VersionVector:
    if not isinstance(value, dict):
        raise _bad("version vector must be a map")
    if len(value) > limits.max_vector_entries:
        raise _bad(f"version vector of {len(value)} entries exceeds {limits.max_vector_entries}",
                   "too_many_entries")
    for author, seq in value.items():
        if not isinstance(author, bytes) or len(author) != AUTHOR_BYTES:
            raise _bad("version vector key must be a 32-byte author key")
        if _uint(seq, "version vector seq") < 1:
            raise _bad("version vector seq must be >= 1 (omit authors with nothing)")
    return value


def _batch(value: object, limits: MessageLimits) -> list[bytes]:
    if not isinstance(value, list):
        raise _bad("envelope batch must be an array")
    if len(value) > limits.max_batch_envelopes:
        raise _bad(f"batch of {len(value)} envelopes exceeds {limits.max_batch_envelopes}",
                   "too_many_envelopes")
    if not value:
        return value
    # C-level loops: batches are the bulk of the traffic
    if not all(map(bytes.__instancecheck__, value)) or not all(map(len, value)):
        raise _bad("envelope must be a non-empty byte string")
    total = sum(map(len, value))
    if total > limits.max_batch_bytes:
        raise _bad(f"batch of {total} bytes exceeds {limits.max_batch_bytes}", "oversized_batch")
    return value


def _hello(m: dict[str, Any], limits: MessageLimits) -> Hello:
    version = _uint(m["v"], "version")
    if version != PROTOCOL_VERSION:
        raise _bad(f"unsupported protocol version {version}", "unsupported_version")
    caps = m["caps"]
    if (not isinstance(caps, list) or len(caps) > MAX_CAPS
            or not all(isinstance(c, str) and 0 < len(c) <= MAX_CAP_CHARS for c in caps)):
        raise _bad("caps must be a short array of short strings")
    salt = m["salt"]
    if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
        raise _bad(f"salt must be {SALT_BYTES} bytes")
    offers = m["offers"]
    if not isinstance(offers, list):
        raise _bad("offers must be an array")
    if len(offers) > limits.max_spaces:
        raise _bad(f"{len(offers)} offers exceed {limits.max_spaces}", "too_many_spaces")
    if not all(isinstance(o, bytes) and len(o) == TOKEN_BYTES for o in offers):
        raise _bad(f"offer tokens must be {TOKEN_BYTES} bytes")
    credit = m["credit"]
    if not isinstance(credit, list) or len(credit) != 2:
        raise _bad("credit must be [envelopes, bytes]")
    return Hello(salt=salt, offers=tuple(offers), credit_envelopes=_uint(credit[0], "credit"),
                 credit_bytes=_uint(credit[1], "credit"), caps=tuple(caps), version=version)


def _reason(m: dict[str, Any], _: MessageLimits) -> Error:
    r = m["r"]
    if not isinstance(r, str) or len(r) > MAX_REASON_CHARS:
        raise _bad("error reason must be a short string")
    return Error(r)


def _heads(m: dict[str, Any], limits: MessageLimits) -> Heads:
    vv, heads = _vv(m["vv"], limits), m["h"]
    if not isinstance(heads, bytes) or len(heads) != HEAD_PREFIX_BYTES * len(vv):
        raise _bad(f"heads must hold {HEAD_PREFIX_BYTES} bytes per vector entry")
    return Heads(_space(m["s"], limits), vv, heads)


_DECODERS: dict[str, tuple[frozenset[str], Any]] = {
    "hello": (frozenset({"t", "v", "caps", "salt", "offers", "credit"}), _hello),
    "vv": (frozenset({"t", "s", "vv"}),
           lambda m, lim: Vector(_space(m["s"], lim), _vv(m["vv"], lim))),
    "want": (frozenset({"t", "s", "vv"}),
             lambda m, lim: Want(_space(m["s"], lim), _vv(m["vv"], lim))),
    "env": (frozenset({"t", "s", "e"}),
            lambda m, lim: Envelopes(_space(m["s"], lim), _batch(m["e"], lim))),
    "live": (frozenset({"t", "s", "e"}),
             lambda m, lim: Live(_space(m["s"], lim), _batch(m["e"], lim))),
    "ack": (frozenset({"t", "n", "b"}),
            lambda m, _: Ack(_uint(m["n"], "ack envelopes"), _uint(m["b"], "ack bytes"))),
    "done": (frozenset({"t", "s"}), lambda m, lim: Done(_space(m["s"], lim))),
    "have": (frozenset({"t", "s", "vv"}),
             lambda m, lim: Have(_space(m["s"], lim), _vv(m["vv"], lim))),
    "prune": (frozenset({"t", "s"}), lambda m, lim: Prune(_space(m["s"], lim))),
    "heads": (frozenset({"t", "s", "vv", "h"}), _heads),
    "bye": (frozenset({"t"}), lambda m, _: Bye()),
    "err": (frozenset({"t", "r"}), _reason),
}

__all__ = [
    "CAP_HEADS",
    "CAP_LAZY",
    "DEFAULT_LIMITS",
    "PROTOCOL_ID",
    "PROTOCOL_VERSION",
    "Ack",
    "Bye",
    "Done",
    "Envelopes",
    "Error",
    "Have",
    "Heads",
    "Hello",
    "Live",
    "Message",
    "MessageLimits",
    "ProtocolError",
    "Prune",
    "Vector",
    "Want",
    "decode_message",
    "encode_message",
]

"""The delta envelope: the one signed unit that sync, relays and archives move around.

Normative description: ``protocols/delta.md``. An envelope is a deterministic CBOR map

    {"v": 1, "kind": 0|1, "space": bstr32, "author": bstr32, "seq": uint>=1,
     "prev": bstr32 / null, "epoch": uint, "nonce": bstr, "ct": bstr, "sig": bstr64}

* ``kind`` 0 (DATA): ``ct`` = XChaCha20-Poly1305(group key of ``epoch``, ``nonce``,
  payload, aad = canonical CBOR of the header ``{v, kind, space, author, seq, prev, epoch}``).
* ``kind`` 1 (CONTROL): membership/key-epoch operations of the space; ``ct`` is the
  plaintext canonical CBOR of the operation and ``nonce`` is empty, so relays can check
  who is a member without any key. (An addition to DESIGN.md §3: control ops share the
  author's hash chain, so one version vector covers data and membership.)
* ``sig`` = Ed25519(author, ``b"mycelium-delta-v1"`` || canonical CBOR of every field but sig).
* ``delta_id`` = SHA-256 of the canonical envelope bytes; ``prev`` is the delta_id of the
  author's previous envelope in the same space (null for seq 1).

This module only builds, encodes, decodes and checks *one* envelope in isolation; chain,
membership and epoch checks live in :mod:`mycelium.log.validate`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from enum import IntEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from mycelium import accel
from mycelium.codec import cbor
from mycelium.crypto import aead
from mycelium.errors import CodecError, LimitExceeded, MyceliumError

VERSION = 1
SIGN_DOMAIN = b"mycelium-delta-v1"
MAX_ENVELOPE_BYTES = 64 * 1024
FIELDS = frozenset({"v", "kind", "space", "author", "seq", "prev", "epoch", "nonce", "ct", "sig"})
#: The order deterministic CBOR puts the envelope's keys in (asked of the encoder itself).
_WIRE_ORDER = tuple(cbor.decode(cbor.encode(dict.fromkeys(FIELDS, 0))))


class Kind(IntEnum):
    DATA = 0
    CONTROL = 1


class EnvelopeError(MyceliumError):
    """An envelope is malformed in isolation (shape, types, sizes, version)."""

    reason = "bad_envelope"


class UnknownVersion(EnvelopeError):
    reason = "unknown_version"


class BadSignature(EnvelopeError):
    reason = "bad_signature"


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded envelope. ``raw`` is the exact canonical bytes it was decoded from/encoded to."""

    kind: Kind
    space: bytes
    author: bytes
    seq: int
    prev: bytes | None
    epoch: int
    nonce: bytes
    ct: bytes
    sig: bytes
    v: int = VERSION
    raw: bytes = b""
    #: Memo of :attr:`delta_id` (init=False, so ``dataclasses.replace`` never copies it).
    _id: bytes | None = field(default=None, init=False, repr=False, compare=False)

    # -- wire -----------------------------------------------------------------------
    def header(self) -> dict[str, Any]:
        """The associated data fields, in canonical key order (see ``encode_ordered``)."""
        return {"v": self.v, "seq": self.seq, "kind": int(self.kind), "prev": self.prev,
                "epoch": self.epoch, "space": self.space, "author": self.author}

    def unsigned_map(self) -> dict[str, Any]:
        """Every field but ``sig``, in canonical key order."""
        return {"v": self.v, "ct": self.ct, "seq": self.seq, "kind": int(self.kind),
                "prev": self.prev, "epoch": self.epoch, "nonce": self.nonce,
                "space": self.space, "author": self.author}

    def encode(self) -> bytes:
        return self.raw or cbor.encode({**self.unsigned_map(), "sig": self.sig})

    @property
    def delta_id(self) -> bytes:
        """SHA-256 of the canonical bytes; memoised, as ingest asks for it several times."""
        memo = self._id
        if memo is None:
            memo = hashlib.sha256(self.encode()).digest()
            object.__setattr__(self, "_id", memo)
        return memo

    def signing_input(self) -> bytes:
        return SIGN_DOMAIN + cbor.encode_ordered(self.unsigned_map())

    def aad(self) -> bytes:
        raw = self.raw
        if raw and self.kind is Kind.DATA:
            return _aad_from_raw(raw, len(self.ct), self.seq)
        return cbor.encode_ordered(self.header())

    # -- checks ---------------------------------------------------------------------
    def verify_signature(self) -> None:
        """Raise :class:`BadSignature` unless ``sig`` is the author's signature."""
        try:
            Ed25519PublicKey.from_public_bytes(self.author).verify(self.sig, self.signing_input())
        except (InvalidSignature, ValueError) as exc:
            raise BadSignature("envelope signature does not verify") from exc

    def open(self, group_key: bytes) -> bytes:
        """Decrypt a DATA envelope's payload (raises ``aead.DecryptError``)."""
        if self.kind is not Kind.DATA:
            return self.ct
        return aead.decrypt(group_key, self.nonce, self.ct, self.aad())


#: Bytes of every envelope part whose size never varies: map head, the ten keys, and the
#: values of ``v``, ``kind``, ``sig``, ``space`` and ``author`` with their heads.
_FIXED_SIZE = 1 + sum(1 + len(k) for k in FIELDS) + 1 + 1 + (2 + 64) + (2 + 32) + (2 + 32)


def _canonical_size(env: Envelope) -> int:
    """Length of the canonical encoding of a well-shaped envelope (see ``_decode_fast``)."""
    ct_len, nonce_len = len(env.ct), len(env.nonce)
    return (_FIXED_SIZE + _head_width(ct_len) + ct_len + _head_width(nonce_len) + nonce_len
            + _head_width(env.seq) + _head_width(env.epoch) + (1 if env.prev is None else 34))


def _aad_from_raw(raw: bytes, ct_len: int, seq: int) -> bytes:
    """The AAD of a DATA envelope cut out of its canonical bytes (twice as fast as
    encoding the header again; runs for every received delta).

    Canonical order puts the header fields in three runs between the others:
    ``v | ct | seq | sig | kind prev epoch | nonce | space author``. ``ct`` and ``seq``
    have variable widths, computed here; ``sig`` (70 bytes with its key), ``nonce``
    (32) and ``space author`` (81) are fixed for a well-formed DATA envelope.
    """
    ct_end = 7 + _head_width(ct_len) + ct_len  # 0xaa, "v": 1, "ct" key, ct
    seq_end = ct_end + 4 + _head_width(seq)
    end = len(raw)
    return b"\xa7" + raw[1:4] + raw[ct_end:seq_end] + raw[seq_end + 70:end - 113] + raw[end - 81:]


def _head_width(n: int) -> int:
    """Bytes of a CBOR head carrying argument ``n`` (shortest form)."""
    return 1 if n < 24 else 2 if n < 0x100 else 3 if n < 0x10000 else 5 if n < 2**32 else 9


def seal(
    *,
    signer: Ed25519PrivateKey,
    space: bytes,
    seq: int,
    prev: bytes | None,
    epoch: int,
    payload: bytes,
    group_key: bytes | None,
    kind: Kind = Kind.DATA,
    nonce: bytes | None = None,
) -> Envelope:
    """Build, encrypt (DATA) and sign a new envelope. ``nonce`` is only for test vectors."""
    author = signer.public_key().public_bytes_raw()
    draft = Envelope(kind=kind, space=space, author=author, seq=seq, prev=prev, epoch=epoch,
                     nonce=b"", ct=b"", sig=b"")
    if kind is Kind.DATA:
        if group_key is None:
            raise ValueError("a DATA envelope needs the epoch's group key")
        n = nonce if nonce is not None else aead.new_nonce()
        draft = replace(draft, nonce=n, ct=aead.encrypt(group_key, n, payload, draft.aad()))
    else:
        draft = replace(draft, ct=payload)
    signed = replace(draft, sig=signer.sign(draft.signing_input()))
    _check_shape(signed)
    return replace(signed, raw=signed.encode())


def decode(data: bytes) -> Envelope:
    """Parse canonical envelope bytes; checks shape and sizes, not the signature."""
    if len(data) > MAX_ENVELOPE_BYTES:
        raise LimitExceeded(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    compiled = accel.decode_envelope  # the same result as _decode_fast, only faster
    env = compiled(data) if compiled is not None else _decode_fast(data)
    return env if env is not None else _decode_precise(data)


def _decode_fast(data: bytes) -> Envelope | None:
    """The common case, several times faster than :func:`_decode_precise`.

    libipld parses one DAG-CBOR item (nothing trailing, no indefinite lengths, map keys
    sorted and unique) but accepts heads wider than needed. The keys must come in
    canonical order and every value pass :func:`_shape_problem` (flat bytes/int/null of
    the right types). Then the input is canonical exactly when its length is the
    canonical length of those values (:func:`_canonical_size`): every item's encoding is
    at least as long as its shortest form, and any wider head — or a tag, which libipld
    would hand back as bare bytes — makes it longer. Any doubt returns None and the precise
    path decides (and names the error)."""
    if type(data) is not bytes:
        return None
    m = cbor.loads_or_none(data)
    if type(m) is not dict or tuple(m) != _WIRE_ORDER or m["v"] != VERSION \
            or type(m["v"]) is not int or type(m["kind"]) is not int:
        return None
    kind = _KINDS.get(m["kind"])
    if kind is None:
        return None
    env = _new_envelope(kind, m["space"], m["author"], m["seq"], m["prev"], m["epoch"],
                        m["nonce"], m["ct"], m["sig"], data)
    if _shape_problem(env) is not None or len(data) != _canonical_size(env):
        return None
    _SET_ID(env, hashlib.sha256(data).digest())  # every received envelope needs its id
    return env


(_SET_KIND, _SET_SPACE, _SET_AUTHOR, _SET_SEQ, _SET_PREV, _SET_EPOCH, _SET_NONCE, _SET_CT,
 _SET_SIG, _SET_V, _SET_RAW, _SET_ID) = (getattr(Envelope, f.name).__set__
                                        for f in fields(Envelope))


def _new_envelope(kind: Kind, space: Any, author: Any, seq: Any, prev: Any, epoch: Any,
                  nonce: Any, ct: Any, sig: Any, raw: bytes) -> Envelope:
    """Build an Envelope without the dataclass ``__init__`` (keyword parsing and frozen-
    attribute guards cost a third of a fast decode); one slot setter call per field."""
    env = object.__new__(Envelope)
    _SET_KIND(env, kind)
    _SET_SPACE(env, space)
    _SET_AUTHOR(env, author)
    _SET_SEQ(env, seq)
    _SET_PREV(env, prev)
    _SET_EPOCH(env, epoch)
    _SET_NONCE(env, nonce)
    _SET_CT(env, ct)
    _SET_SIG(env, sig)
    _SET_V(env, VERSION)
    _SET_RAW(env, raw)
    _SET_ID(env, None)
    return env


def _decode_precise(data: bytes) -> Envelope:
    """Full decode that names exactly what is wrong with the input."""
    try:
        m = cbor.decode_canonical(data, max_bytes=MAX_ENVELOPE_BYTES)
    except LimitExceeded:
        raise
    except CodecError as exc:
        raise CodecError(f"envelope: {exc}", reason=exc.reason) from exc
    if type(m) is not dict:
        raise EnvelopeError("envelope is not a CBOR map")
    if m.get("v") != VERSION or type(m.get("v")) is not int:
        raise UnknownVersion(f"unknown envelope version {m.get('v')!r}")
    if m.keys() != FIELDS:
        missing, extra = FIELDS - set(m), set(m) - FIELDS
        raise EnvelopeError(f"envelope fields wrong: missing {sorted(missing)}, "
                            f"extra {sorted(map(str, extra))}")
    raw_kind = m["kind"]
    kind = _KINDS.get(raw_kind) if type(raw_kind) is int else None
    if kind is None:  # ``true`` would hash like 1 and let the envelope be re-encoded
        raise EnvelopeError(f"unknown envelope kind {raw_kind!r}")
    env = Envelope(kind=kind, space=m["space"], author=m["author"], seq=m["seq"], prev=m["prev"],
                   epoch=m["epoch"], nonce=m["nonce"], ct=m["ct"], sig=m["sig"],
                   raw=data if type(data) is bytes else bytes(data))
    _check_shape(env)
    return env


#: ``kind`` values by wire integer (only ever looked up with a real ``int``).
_KINDS = {0: Kind.DATA, 1: Kind.CONTROL}


def _shape_problem(env: Envelope) -> str | None:
    """The first broken field rule of ``env``, or None. Early returns keep the common,
    valid case as cheap as one boolean expression (this runs for every envelope)."""
    seq, prev, ct, nonce = env.seq, env.prev, env.ct, env.nonce
    if type(env.space) is not bytes or len(env.space) != 32:
        return "space must be 32 bytes"
    if type(env.author) is not bytes or len(env.author) != 32:
        return "author must be a 32-byte Ed25519 key"
    if type(seq) is not int or not 1 <= seq < 2**64:
        return "seq must be a uint64 >= 1"
    if type(env.epoch) is not int or not 0 <= env.epoch < 2**64:
        return "epoch must be a uint64"
    if type(env.sig) is not bytes or len(env.sig) != 64:
        return "sig must be 64 bytes"
    if type(ct) is not bytes:
        return "ct must be bytes"
    if seq == 1 and prev is not None:
        return "prev must be null when seq == 1"
    if seq != 1 and (type(prev) is not bytes or len(prev) != 32):
        return "prev must be 32 bytes when seq > 1"
    if env.kind is not Kind.DATA:
        return None if nonce == b"" else "nonce must be empty for CONTROL"
    if type(nonce) is not bytes or len(nonce) != aead.NONCE_BYTES:
        return "nonce must be 24 bytes for DATA"
    if len(ct) < aead.TAG_BYTES:
        return "ct shorter than the AEAD tag"
    return None


def _check_shape(env: Envelope) -> None:
    problem = _shape_problem(env)
    if problem is not None:
        raise EnvelopeError(f"envelope field {problem}")

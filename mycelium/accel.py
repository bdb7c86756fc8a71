"""Optional compiled twins of the ingest hot path (``mycelium/_accel.c``, docs/accel.md).

Each returns exactly what its Python reference returns, or None when unsure, and the
caller then runs the Python path, which decides and names any error:

* ``decode_envelope(raw)``: :func:`mycelium.log.envelope._decode_fast`;
* ``open_payload(raw, key[, schema, max_wall_ms])``: ``decode_payload(envelope.open(key))``
  and, given ``schema`` (:meth:`mycelium.crdt.schema.Registry.compiled`), the schema check
  and the clock-drift rule (``hlc.wall_ms <= max_wall_ms``);
* ``open_all(envelopes, keys, schema, max_wall_ms)``: ``Soil._open_each`` for a batch
  whose every envelope opens (``(envelope, payload, (coll, doc))`` each, the greatest
  clock, the documents written);
* ``merge_all(opened, docs, dirty, fallback)``: ``Soil._merge`` of each of those, calling
  ``fallback`` (that method) for the ones it leaves to Python;
* ``chain_runs(raws, space, heads)``: the authors' linked runs of a batch that
  :func:`mycelium.log.validate.validate_batch` would find entirely ready (before the
  signature check);
* ``lww_apply(fields, payload, author)``: :meth:`mycelium.crdt.doc.DocState.apply` on a
  document without a tombstone;
* ``doc_rows(space, dirty, docs, before, indexed, Change)``: the rows
  :meth:`mycelium.store.soil.Soil._doc_rows` builds for a space without encryption at
  rest;
* ``load_rows(rows, wanted, indexed, docs, before)`` and ``fill_empty(wanted, docs,
  before, empty)``: the loops of ``Soil._prefetch`` for a space without encryption at
  rest (rows it cannot read are handed back);
* ``load_state(body, indexed)``: ``(DocState.decode(body), state.values_of(indexed))``;
* ``state_row(fields, tomb, indexed)``: ``(state.live, state.encode(),
  state.values_of(indexed))`` of ``DocState(fields, tomb)``.

All are None here when the
extension is not built, is disabled with ``MYCELIUM_NO_ACCEL=1``, or fails its self-test
at import: Mycelium then runs on the pure-Python path, only slower.

The extension calls the SHA-256 of the OpenSSL that :mod:`hashlib` loaded and the
XChaCha20-Poly1305 of the libsodium that PyNaCl ships, through function pointers looked
up here, so building it needs no crypto headers and it uses the same crypto code as the
Python path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import fields
from typing import Any

log = logging.getLogger(__name__)

#: Why the compiled path is off (None when it is on, or not loaded yet).
disabled_reason: str | None = None


def _pointers() -> tuple[int, int, int, int]:
    import _hashlib

    from nacl._sodium import ffi, lib

    crypto = ctypes.CDLL(_hashlib.__file__)  # dlsym also searches the libcrypto it links
    sha = [ctypes.cast(getattr(crypto, name), ctypes.c_void_p).value
           for name in ("SHA256_Init", "SHA256_Update", "SHA256_Final")]
    aead = int(ffi.cast("uintptr_t", lib.crypto_aead_xchacha20poly1305_ietf_decrypt))
    if not all(sha) or not aead:
        raise OSError("crypto function pointers not found")
    return sha[0] or 0, sha[1] or 0, sha[2] or 0, aead


def _configure(ext: Any) -> None:
    from mycelium.crdt.doc import DocState
    from mycelium.crdt.hlc import Timestamp
    from mycelium.crdt.payload import Op, Payload
    from mycelium.crypto import aead  # noqa: F401  (PyNaCl's import runs sodium_init)
    from mycelium.log import limits
    from mycelium.log.envelope import VERSION, Envelope, Kind

    setters = tuple(getattr(Envelope, f.name) for f in fields(Envelope))
    ext.configure(
        _pointers(), (Envelope, Payload, Op, Timestamp), setters, (Kind.DATA, Kind.CONTROL),
        VERSION,
        (limits.MAX_ENVELOPE_BYTES, limits.MAX_PAYLOAD_BYTES, limits.MAX_OPS_PER_DELTA,
         limits.MAX_COLLECTION_CHARS, limits.MAX_DOC_ID_CHARS, limits.MAX_FIELD_NAME_CHARS,
         limits.MAX_HLC_NODE_BYTES, limits.MAX_HLC_COUNTER))
    slots = {f.name: getattr(DocState, f.name) for f in fields(DocState)}  # slot descriptors
    ext.configure_docs(DocState, slots["fields"], slots["tomb"])
    for sample in (b"", b"abc", bytes(range(256)) * 3):
        if ext.sha256_digest(sample) != hashlib.sha256(sample).digest():
            raise OSError("SHA-256 self-test failed")


#: The compiled functions this module hands out (each also a module attribute below).
_NAMES = ("decode_envelope", "open_payload", "lww_apply", "load_state", "state_row",
          "chain_runs", "doc_rows", "open_all", "merge_all", "load_rows", "fill_empty")


def _load() -> None:
    global disabled_reason
    if os.environ.get("MYCELIUM_NO_ACCEL"):
        disabled_reason = "disabled by MYCELIUM_NO_ACCEL"
        return
    try:
        from mycelium import _accel  # type: ignore[attr-defined]
    except ImportError:
        disabled_reason = "extension not built (pure-Python path)"
        return
    try:
        _configure(_accel)
    except (OSError, AttributeError, TypeError, ValueError) as exc:
        disabled_reason = f"self-test failed: {exc}"
        log.warning("compiled ingest path disabled: %s", exc)
        return
    globals().update({name: getattr(_accel, name) for name in _NAMES})


def _trampoline(name: str) -> Callable[..., Any]:
    """Stands in for compiled function ``name`` until the first call, which loads the
    extension (it needs modules that import this one, so not at import time)."""
    def first_call(*args: Any) -> Any:
        _load_once()
        compiled = globals()[name]
        return compiled(*args) if compiled is not None else None
    return first_call


def _load_once() -> None:
    globals().update(dict.fromkeys(_NAMES))  # None unless _load finds the extension
    _load()


#: Callers read these at call time: a trampoline until the first call, then the compiled
#: function, or None when there is none (see the module docstring).
decode_envelope: Callable[[bytes], Any] | None = _trampoline("decode_envelope")
open_payload: Callable[..., Any] | None = _trampoline("open_payload")
lww_apply: Callable[[dict[str, Any], Any, bytes], bool | None] | None = _trampoline("lww_apply")
load_state: Callable[[bytes, frozenset[str]], Any] | None = _trampoline("load_state")
state_row: Callable[[dict[str, Any], Any, frozenset[str]], Any] | None = _trampoline("state_row")
chain_runs: Callable[[Any, bytes, Any], Any] | None = _trampoline("chain_runs")
doc_rows: Callable[..., Any] | None = _trampoline("doc_rows")
open_all: Callable[..., Any] | None = _trampoline("open_all")
merge_all: Callable[..., Any] | None = _trampoline("merge_all")
load_rows: Callable[..., Any] | None = _trampoline("load_rows")
fill_empty: Callable[..., Any] | None = _trampoline("fill_empty")
_LOADER = decode_envelope


def active() -> bool:
    """Whether the compiled path is in use (loads it if that has not happened yet)."""
    if decode_envelope is _LOADER:
        _load_once()
    return decode_envelope is not None

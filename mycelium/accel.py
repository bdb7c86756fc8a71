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

All are None here when the extension is not built, is disabled with
``MYCELIUM_NO_ACCEL=1``, or cannot be configured (any exception while configuring, or a
failed known-answer test at load): Mycelium then runs on the pure-Python path, only
slower, and :data:`disabled_reason` says why (logged once).

No crypto is implemented in C, and the build needs no crypto headers: the extension
hashes with :func:`hashlib.sha256` (OpenSSL through its EVP API, called through the
constructor handed to it here: the code the Python path hashes with) and decrypts with
the XChaCha20-Poly1305 of the libsodium that PyNaCl ships (the library the Python path
decrypts with), through the function's address taken here with cffi's ``ffi.addressof``.
Batch authentication of every envelope but the newest of a run rests on that hash, so
both must pass known-answer tests through the extension before any compiled function is
handed out.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import Any

log = logging.getLogger(__name__)

#: Why the compiled path is off (None when it is on, or not loaded yet).
disabled_reason: str | None = None


class SelfTestFailed(Exception):
    """A known-answer test of the crypto the extension calls gave a wrong answer."""


# FIPS 180-2 appendix B, and 4 KiB (past the size at which hashlib releases the GIL; digest
# from libsodium, an independent implementation).
_SHA256_KATS = (
    (b"abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
    (b"", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
    (b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
     "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    (bytes(range(256)) * 16, "c8f5d0341d54d951a71b136e6e2afcb14d11ed8489a7ae126a8fee0df6ecf193"),
)

# draft-irtf-cfrg-xchacha-03, appendix A.3.1 (AEAD_XChaCha20_Poly1305).
_XCHACHA_KAT = {
    "key": bytes(range(0x80, 0xA0)),
    "nonce": bytes(range(0x40, 0x58)),
    "aad": bytes.fromhex("50515253c0c1c2c3c4c5c6c7"),
    "plaintext": b"Ladies and Gentlemen of the class of '99: If I could offer you only one "
                 b"tip for the future, sunscreen would be it.",
    "ciphertext": bytes.fromhex(
        "bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa644"
        "0bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e"
        "3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52e"
        "c0875924c1c7987947deafd8780acf49"),
}


def _crypto() -> tuple[Callable[[bytes], Any], int]:
    """``hashlib.sha256`` and the address of libsodium's
    ``crypto_aead_xchacha20poly1305_ietf_decrypt`` as PyNaCl's cffi module exports it
    (``ffi.addressof`` gives the C function itself, not a Python-callable wrapper)."""
    from nacl._sodium import ffi, lib

    aead = int(ffi.cast("uintptr_t",
                        ffi.addressof(lib, "crypto_aead_xchacha20poly1305_ietf_decrypt")))
    if not aead:
        raise OSError("libsodium's XChaCha20-Poly1305 decrypt not found")
    return hashlib.sha256, aead


def _known_answers(ext: Any) -> None:
    """Run the known-answer tests of both primitives through the extension."""
    for message, digest in _SHA256_KATS:
        if ext.sha256_digest(message) != bytes.fromhex(digest):
            raise SelfTestFailed(f"SHA-256 known-answer test failed ({len(message)} bytes)")
    kat = _XCHACHA_KAT
    ct, aad, nonce, key = kat["ciphertext"], kat["aad"], kat["nonce"], kat["key"]
    if ext.aead_open(ct, aad, nonce, key) != kat["plaintext"]:
        raise SelfTestFailed("XChaCha20-Poly1305 known-answer test failed")
    forged = ct[:-1] + bytes([ct[-1] ^ 1])
    if (ext.aead_open(forged, aad, nonce, key) is not None
            or ext.aead_open(ct, aad[:-1], nonce, key) is not None):
        raise SelfTestFailed("XChaCha20-Poly1305 accepted a forged tag")


def _configure(ext: Any) -> None:
    from mycelium.crdt.doc import DocState
    from mycelium.crdt.hlc import Timestamp
    from mycelium.crdt.payload import Op, Payload
    from mycelium.crypto import aead  # noqa: F401  (PyNaCl's import runs sodium_init)
    from mycelium.log import limits
    from mycelium.log.envelope import VERSION, Envelope, Kind

    setters = tuple(getattr(Envelope, f.name) for f in fields(Envelope))
    slots = {f.name: getattr(DocState, f.name) for f in fields(DocState)}  # slot descriptors
    ext.configure(
        _crypto(), (Envelope, Payload, Op, Timestamp), setters, (Kind.DATA, Kind.CONTROL),
        VERSION,
        (limits.MAX_ENVELOPE_BYTES, limits.MAX_PAYLOAD_BYTES, limits.MAX_OPS_PER_DELTA,
         limits.MAX_COLLECTION_CHARS, limits.MAX_DOC_ID_CHARS, limits.MAX_FIELD_NAME_CHARS,
         limits.MAX_HLC_NODE_BYTES, limits.MAX_HLC_COUNTER),
        (DocState, slots["fields"], slots["tomb"]))
    _known_answers(ext)


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
    except ModuleNotFoundError as exc:  # not built: a supported way to run, said quietly
        disabled_reason = f"extension not built (pure-Python path): {exc}"
        return
    except Exception as exc:  # built but unloadable (stale ABI, failed init): said, not raised
        disabled_reason = f"extension failed to load: {type(exc).__name__}: {exc}"
        log.warning("compiled ingest path disabled (pure-Python path): %s", disabled_reason)
        return
    try:
        _configure(_accel)
    except Exception as exc:  # any failure to configure means: Python path, said once
        disabled_reason = f"configure failed: {type(exc).__name__}: {exc}"
        log.warning("compiled ingest path disabled (pure-Python path): %s", disabled_reason)
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


_loaded = False
_loading = threading.RLock()


def _load_once() -> None:
    """Load at most once per process, whichever trampoline a caller held on to. Other
    threads wait until it is done; a call made while loading (same thread) gets the
    Python path."""
    global _loaded
    with _loading:
        if _loaded:
            return
        _loaded = True
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

"""The compiled path as security-critical code (issue 17 §1, docs/accel.md "Threat model").

Known-answer tests of the crypto it calls, a loader that turns any configure failure into
the Python path (said once), arguments from our own code checked before C trusts them,
configure all-or-nothing, and allocation failures that defer or raise MemoryError,
never crash."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mycelium import accel
from tests.accel import samples

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI") == "true"

pytestmark = pytest.mark.skipif(
    not accel.active() and not IN_CI,  # in CI a missing build fails test_compiled_path_is_built
    reason=f"compiled path off: {accel.disabled_reason}")


def _ext() -> Any:
    from mycelium import _accel  # type: ignore[attr-defined]

    return _accel


@pytest.fixture
def fresh_loader(monkeypatch: pytest.MonkeyPatch) -> Any:
    """accel as before its first call; everything it changes is put back afterwards."""
    accel.active()
    for name in accel._NAMES:
        monkeypatch.setattr(accel, name, accel._trampoline(name))
    monkeypatch.setattr(accel, "decode_envelope", accel._LOADER)  # what active() looks for
    monkeypatch.setattr(accel, "_loaded", False)
    monkeypatch.setattr(accel, "disabled_reason", None)
    monkeypatch.delenv("MYCELIUM_NO_ACCEL", raising=False)
    return accel  # the extension keeps its configuration: a failed configure changes nothing


# -- known answers ------------------------------------------------------------------------
def test_crypto_passes_its_known_answer_tests() -> None:
    ext = _ext()
    accel._known_answers(ext)  # raises SelfTestFailed otherwise
    assert ext.sha256_digest(b"abc").hex().startswith("ba7816bf")
    kat = accel._XCHACHA_KAT
    assert ext.aead_open(kat["ciphertext"], kat["aad"], kat["nonce"], kat["key"]) \
        == kat["plaintext"]
    assert ext.aead_open(kat["ciphertext"], kat["aad"], kat["nonce"], bytes(32)) is None


def test_the_aead_pointer_points_into_pynacls_libsodium() -> None:
    """ffi.addressof gives the C function itself, inside PyNaCl's module (its libsodium
    is linked in statically, so dladdr names the file, not the symbol)."""
    import ctypes

    import nacl._sodium

    class DlInfo(ctypes.Structure):
        _fields_ = [("dli_fname", ctypes.c_char_p), ("dli_fbase", ctypes.c_void_p),
                    ("dli_sname", ctypes.c_char_p), ("dli_saddr", ctypes.c_void_p)]

    sha, aead = accel._crypto()
    info = DlInfo()
    assert ctypes.CDLL(None).dladdr(ctypes.c_void_p(aead), ctypes.byref(info))
    assert os.path.samefile(info.dli_fname.decode(), nacl._sodium.__file__)
    assert sha is hashlib.sha256


def test_large_envelopes_hash_while_other_threads_run() -> None:
    """hashlib releases the GIL for inputs over 2 KiB: chain_runs works on a snapshot of
    the batch, so a list another thread empties meanwhile changes nothing."""
    import threading

    runs = samples.chain(3, big_at=2)
    raws = [e.raw for e in runs]
    assert len(raws[1]) > 4096
    stop = threading.Event()
    shared = list(raws)

    def churn() -> None:
        while not stop.is_set():
            shared.clear()
            shared.extend(raws)

    t = threading.Thread(target=churn)
    t.start()
    try:
        for _ in range(200):
            got = accel.chain_runs(shared, samples.SPACE, {})  # type: ignore[misc]
            if got:  # [] when the snapshot caught the list empty
                assert [e.raw for e in got[0]] == raws[:len(got[0])]
    finally:
        stop.set()
        t.join(10)


# -- the loader ---------------------------------------------------------------------------
@pytest.mark.parametrize("failure", [
    ImportError("No module named 'nacl._sodium'"),
    ImportError("cannot import name 'lib'"),
    OSError("libsodium's XChaCha20-Poly1305 decrypt not found"),
    RuntimeError("anything else"),
])
def test_any_configure_failure_means_the_python_path_said_once(
        fresh_loader: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        failure: Exception) -> None:
    def broken() -> tuple[Any, int]:
        raise failure

    monkeypatch.setattr(accel, "_crypto", broken)
    caplog.set_level(logging.WARNING, logger="mycelium.accel")
    assert accel.decode_envelope(samples.chain(1)[0].raw) is None  # type: ignore[misc]
    assert accel.open_payload is None and not accel.active()
    assert type(failure).__name__ in (accel.disabled_reason or "")
    for _ in range(3):  # later calls and checks neither retry nor log again
        accel._load_once()
        assert not accel.active()
    warnings = [r for r in caplog.records if r.name == "mycelium.accel"]
    assert len(warnings) == 1 and "pure-Python" in warnings[0].getMessage()


def test_a_wrong_known_answer_disables_the_compiled_path(
        fresh_loader: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "_SHA256_KATS", ((b"abc", "00" * 32),))
    assert not accel.active()
    assert "SelfTestFailed" in (accel.disabled_reason or "")


def test_a_forged_tag_accepting_aead_disables_the_compiled_path(
        fresh_loader: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    real = accel._known_answers

    class Accepting:  # an AEAD that "decrypts" anything: the negative answers catch it
        def __getattr__(self, name: str) -> Any:
            return getattr(_ext(), name)

        def aead_open(self, ct: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
            return accel._XCHACHA_KAT["plaintext"]

    monkeypatch.setattr(accel, "_known_answers", lambda ext: real(Accepting()))
    assert not accel.active()
    assert "forged tag" in (accel.disabled_reason or "")


def test_the_trampolines_load_only_once(fresh_loader: Any, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    calls = []
    real = accel._load
    def counted() -> None:
        calls.append(1)
        real()

    monkeypatch.setattr(accel, "_load", counted)
    held = [accel._trampoline(name) for name in ("decode_envelope", "chain_runs")]
    raw = samples.chain(1)[0].raw
    assert held[0](raw) is not None  # a caller that kept the trampoline still works
    held[1]([raw], samples.SPACE, {})
    assert calls == [1]


# -- arguments from our own code ----------------------------------------------------------
def _configure_args(**change: Any) -> list[Any]:
    """configure()'s arguments as accel._configure builds them, with some replaced."""
    from dataclasses import fields

    from mycelium.crdt.doc import DocState
    from mycelium.crdt.hlc import Timestamp
    from mycelium.crdt.payload import Op, Payload
    from mycelium.log import limits
    from mycelium.log.envelope import VERSION, Envelope, Kind

    slots = {f.name: getattr(DocState, f.name) for f in fields(DocState)}
    args = {
        "pointers": accel._crypto(), "types": (Envelope, Payload, Op, Timestamp),
        "setters": tuple(getattr(Envelope, f.name) for f in fields(Envelope)),
        "kinds": (Kind.DATA, Kind.CONTROL), "version": VERSION,
        "limits": (limits.MAX_ENVELOPE_BYTES, limits.MAX_PAYLOAD_BYTES,
                   limits.MAX_OPS_PER_DELTA, limits.MAX_COLLECTION_CHARS,
                   limits.MAX_DOC_ID_CHARS, limits.MAX_FIELD_NAME_CHARS,
                   limits.MAX_HLC_NODE_BYTES, limits.MAX_HLC_COUNTER),
        "docs": (DocState, slots["fields"], slots["tomb"])}
    args.update(change)
    return list(args.values())


class _Slotted:
    __slots__ = ("a", "b")


def _slot(cls: type, name: str) -> Any:
    return getattr(cls, name)  # the member descriptor


def _bad_configurations() -> list[dict[str, Any]]:
    from dataclasses import fields

    from mycelium.crdt.doc import DocState
    from mycelium.crdt.hlc import Timestamp
    from mycelium.crdt.payload import Op, Payload
    from mycelium.log.envelope import Envelope

    setters = [getattr(Envelope, f.name) for f in fields(Envelope)]
    return [
        {"types": (Envelope, float, Op, Timestamp)},        # items written into a float
        {"types": (Envelope, Payload, Op, 3)},
        {"setters": tuple(setters[:-1])},
        {"setters": (*setters[:-1], _slot(DocState, "fields"))},  # another class's slot
        {"setters": (*setters[:-1], property(lambda s: 1))},  # not a slot at all
        {"docs": (DocState, _slot(_Slotted, "a"), _slot(_Slotted, "b"))},
        {"docs": (float, _slot(DocState, "fields"), _slot(DocState, "tomb"))},
        {"docs": (DocState,)},
        {"pointers": (hashlib.sha256, 0)}, {"pointers": ("x", 1)}, {"pointers": (1,)},
        {"pointers": (0, accel._crypto()[1])},              # no hash constructor
        {"limits": (10, 10, 10**6, 1, 1, 1, 1, 1)},         # more ops than read_ops holds
        {"limits": (-1, 10, 10, 1, 1, 1, 1, 1)},
        {"types": [Envelope, Payload, Op, Timestamp]},       # not a tuple
    ]


@pytest.mark.parametrize("change", _bad_configurations(), ids=lambda c: next(iter(c)))
def test_configure_checks_its_arguments_and_is_all_or_nothing(change: dict[str, Any]) -> None:
    ext = _ext()
    env = samples.chain(2)[1]
    assert ext.decode_envelope(env.raw) == env
    # tiny limits that WOULD make every envelope defer if they were applied half-way
    change = {"limits": (10, 10, 1, 1, 1, 1, 1, 1), **change}
    with pytest.raises((TypeError, ValueError, OverflowError)):
        ext.configure(*_configure_args(**change))
    assert ext.decode_envelope(env.raw) == env  # the configuration before is intact
    assert ext.open_payload(env.raw, samples.KEY) is not None
    assert ext.load_state(*samples.ARGS["load_state"][0]()) is not None


@pytest.mark.parametrize("change", [float, int, type, tuple, dict, "Change"])
def test_doc_rows_defers_unless_its_change_class_is_a_tuple(change: Any) -> None:
    args = list(samples.ARGS["doc_rows"][0]())
    assert accel.doc_rows(*args) is not None  # type: ignore[misc]
    args[5] = change
    if change is tuple:  # a tuple subclass (tuple itself) is memory-safe: rows are tuples
        assert accel.doc_rows(*args) is not None  # type: ignore[misc]
        return
    assert accel.doc_rows(*args) is None  # type: ignore[misc]


def test_doc_rows_defers_on_foreign_index_values() -> None:
    space, dirty, docs, _, indexed, change = samples.ARGS["doc_rows"][0]()
    key = next(iter(dirty))
    before = {key: ["not", "a", "dict"]}
    assert accel.doc_rows(space, dirty, docs, before, indexed, change) is None  # type: ignore[misc]
    assert before == {key: ["not", "a", "dict"]}  # untouched


# -- allocation failures ------------------------------------------------------------------
def test_every_allocation_failure_defers_or_raises_memory_error() -> None:
    """Allocation k of each compiled function fails, for every k (tests/accel/oom_sweep.py),
    in a child process: a crash there fails here. The plaintext of the sample envelopes
    outgrows open_one's stack buffer, so its PyMem_Malloc is among them."""
    done = subprocess.run([sys.executable, "tests/accel/oom_sweep.py"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONFAULTHANDLER": "1"})
    assert done.returncode == 0, done.stdout + done.stderr
    counts = json.loads(done.stdout)
    assert set(counts) == set(accel._NAMES)
    for name, c in counts.items():  # failures were injected and seen, and calls still answer
        assert c["deferred"] + c["memory_error"] > 0 and c["answered"] > 0, (name, c)
    assert counts["open_all"]["deferred"] > 0


def test_threads_racing_the_first_call_all_get_the_compiled_answer(
        fresh_loader: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """While one thread loads, the others wait for it (they used to get None, or could
    recurse through the trampoline): every thread gets the compiled answer."""
    import threading

    started, release = threading.Event(), threading.Event()
    real = accel._load
    calls = []

    def slow_load() -> None:
        calls.append(1)
        started.set()
        assert release.wait(10)
        real()

    monkeypatch.setattr(accel, "_load", slow_load)
    raw = samples.chain(1)[0].raw
    trampoline = accel.decode_envelope
    results: list[Any] = []
    ready = [threading.Event() for _ in range(3)]

    def call(i: int | None) -> None:
        if i is not None:
            ready[i].set()
        results.append(trampoline(raw))  # type: ignore[misc]

    loader = threading.Thread(target=call, args=(None,))
    loader.start()
    assert started.wait(10)
    others = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for t in others:
        t.start()
    assert all(e.wait(10) for e in ready)
    release.set()
    for t in [loader, *others]:
        t.join(10)
    assert calls == [1]
    assert len(results) == 4 and all(r is not None and r.raw == raw for r in results)


def test_a_build_that_fails_to_import_is_said_not_raised(
        fresh_loader: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A stale or broken .so (here: not a shared object at all) is the Python path with
    a warning; a missing one (not built) is the Python path quietly."""
    import importlib.machinery

    import mycelium

    broken = tmp_path / f"_accel{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    broken.write_bytes(b"not an ELF file")
    monkeypatch.delitem(sys.modules, "mycelium._accel")
    monkeypatch.delattr(mycelium, "_accel")
    monkeypatch.setattr(mycelium, "__path__", [str(tmp_path)])
    caplog.set_level(logging.WARNING, logger="mycelium.accel")
    assert not accel.active()
    assert "failed to load" in (accel.disabled_reason or "")
    assert len([r for r in caplog.records if r.name == "mycelium.accel"]) == 1

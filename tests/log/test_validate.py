"""Chain validation: every bucket of validate_batch, batch verification, bit flips."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.codec import cbor
from mycelium.log.envelope import Envelope, Kind, seal
from mycelium.log.validate import (
    BadSignature,
    Head,
    StoredId,
    Verdict,
    WrongSpace,
    decode_for_space,
    link_pending,
    validate_batch,
    verify_run,
)

SPACE = bytes(range(32))
KEY = bytes(32)
SIGNER = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
OTHER = Ed25519PrivateKey.from_private_bytes(b"\x08" * 32)


def chain(n: int, signer: Ed25519PrivateKey = SIGNER, start: int = 1,
          prev: bytes | None = None) -> list[Envelope]:
    out = []
    for seq in range(start, start + n):
        env = seal(signer=signer, space=SPACE, seq=seq, prev=prev, epoch=1,
                   payload=b"p%d" % seq, group_key=KEY, nonce=bytes(24))
        out.append(env)
        prev = env.delta_id
    return out


def nothing_stored(author: bytes, seq: int) -> bytes | None:
    return None


def run_batch(envs: list[Envelope] | list[bytes], heads: dict[bytes, Head] | None = None,
              stored: StoredId = nothing_stored) -> Verdict:
    raws = [e.raw if isinstance(e, Envelope) else e for e in envs]
    return validate_batch(SPACE, raws, heads or {}, stored)


def test_contiguous_chain_is_ready_in_order() -> None:
    envs = chain(5)
    v = run_batch(list(reversed(envs)))
    assert [e.seq for e in v.ready] == [1, 2, 3, 4, 5]
    assert not v.pending and not v.rejected and not v.duplicates


def test_run_is_authenticated_by_its_newest_signature_only() -> None:
    """An inner envelope with a garbage signature is still accepted when the newest
    envelope's signed prev chain commits to its exact bytes: proof that the run cost one
    signature check, not N."""
    first = chain(1)[0]
    garbage = replace(first, sig=b"\x00" * 64, raw=b"")
    garbage = replace(garbage, raw=garbage.encode())
    second = seal(signer=SIGNER, space=SPACE, seq=2, prev=garbage.delta_id, epoch=1,
                  payload=b"x", group_key=KEY)
    v = run_batch([garbage, second])
    assert [e.seq for e in v.ready] == [1, 2]
    alone = run_batch([garbage])
    assert alone.rejected == [(garbage.delta_id, "bad_signature")]


def test_forged_newest_falls_back_to_individual_checks() -> None:
    envs = chain(3)
    forged = replace(envs[2], sig=bytes(64), raw=b"")
    forged = replace(forged, raw=forged.encode())
    v = run_batch([envs[0], envs[1], forged])
    assert [e.seq for e in v.ready] == [1, 2]
    assert v.rejected == [(forged.delta_id, "bad_signature")]


def test_gap_is_pending_not_rejected() -> None:
    envs = chain(5)
    v = run_batch([envs[0], envs[3], envs[4]])
    assert [e.seq for e in v.ready] == [1]
    assert [e.seq for e in v.pending] == [4, 5]
    assert not v.rejected


def test_extends_known_head_and_detects_duplicates_and_forks() -> None:
    envs = chain(4)
    held = {e.seq: e.delta_id for e in envs[:2]}
    heads = {envs[0].author: (2, envs[1].delta_id)}
    fork = seal(signer=SIGNER, space=SPACE, seq=2, prev=envs[0].delta_id, epoch=1,
                payload=b"other", group_key=KEY)
    v = run_batch([envs[1], fork, envs[2], envs[3]], heads, lambda a, s: held.get(s))
    assert [e.seq for e in v.ready] == [3, 4]
    assert len(v.duplicates) == 1
    assert v.rejected == [(fork.delta_id, "fork")]


def test_broken_chain_rejected() -> None:
    envs = chain(2)
    wrong = seal(signer=SIGNER, space=SPACE, seq=3, prev=b"\x01" * 32, epoch=1, payload=b"x",
                 group_key=KEY)
    heads = {envs[0].author: (2, envs[1].delta_id)}
    v = run_batch([wrong], heads)
    assert v.rejected == [(wrong.delta_id, "broken_chain")]


def test_duplicate_within_batch_counted_once() -> None:
    envs = chain(2)
    v = run_batch([envs[0], envs[0], envs[1]])
    assert [e.seq for e in v.ready] == [1, 2] and len(v.duplicates) == 1


def test_same_seq_collision_in_batch_keeps_the_linked_one() -> None:
    envs = chain(2)
    other = seal(signer=SIGNER, space=SPACE, seq=2, prev=b"\x02" * 32, epoch=1, payload=b"y",
                 group_key=KEY)
    v = run_batch([other, envs[0], envs[1]])
    assert [e.delta_id for e in v.ready] == [envs[0].delta_id, envs[1].delta_id]
    assert v.rejected == [(other.delta_id, "fork")]


def test_several_authors_interleaved() -> None:
    a, b = chain(3), chain(3, OTHER)
    v = run_batch([b[2], a[1], b[0], a[0], b[1], a[2]])
    assert {(e.author, e.seq) for e in v.ready} == {(e.author, e.seq) for e in a + b}


@pytest.mark.parametrize(("raw", "reason"), [
    (b"\xff\x00", "bad_cbor"),
    (cbor.encode([1, 2]), "bad_envelope"),
    (b"\x00" * 70_000, "oversized"),
])
def test_undecodable_inputs(raw: bytes, reason: str) -> None:
    v = run_batch([raw])
    assert [r for _, r in v.rejected] == [reason]


def test_unknown_version_and_wrong_space() -> None:
    env = chain(1)[0]
    m = cbor.decode(env.raw)
    m["v"] = 2
    v = run_batch([cbor.encode(m)])
    assert v.rejected[0][1] == "unknown_version"
    with pytest.raises(WrongSpace):
        decode_for_space(env.raw, os.urandom(32))
    v = validate_batch(os.urandom(32), [env.raw], {}, nothing_stored)
    assert v.rejected == [(env.delta_id, "wrong_space")]


def test_non_canonical_encoding_rejected() -> None:
    env = chain(1)[0]
    raw = bytearray(env.raw)
    # re-encode the map header length (0xaa = map of 10) in a longer, non-canonical form
    assert raw[0] == 0xAA
    v = run_batch([bytes([0xB8, 10]) + bytes(raw[1:])])
    assert v.rejected == [(None, "non_canonical")]


def test_verify_run_and_link_pending() -> None:
    envs = chain(4)
    good, bad = verify_run(envs)
    assert good == envs and bad == []
    assert verify_run([]) == ([], [])
    ready, broken = link_pending((1, envs[0].delta_id), {e.seq: e for e in envs[1:]})
    assert ready == envs[1:] and broken == []
    ready, broken = link_pending((0, None), {1: envs[0], 3: envs[2]})
    assert ready == [envs[0]] and broken == []
    ready, broken = link_pending((1, b"\x00" * 32), {2: envs[1]})
    assert ready == [] and broken == [envs[1]]


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_any_bit_flip_is_rejected_with_a_precise_reason(data: st.DataObject) -> None:
    env = chain(1)[0]
    bit = data.draw(st.integers(0, len(env.raw) * 8 - 1))
    raw = bytearray(env.raw)
    raw[bit // 8] ^= 1 << (bit % 8)
    v = run_batch([bytes(raw)])
    assert not v.ready and not v.pending
    assert len(v.rejected) == 1
    assert v.rejected[0][1] in {"bad_cbor", "non_canonical", "bad_envelope", "bad_signature",
                                "unknown_version", "wrong_space", "oversized"}


def test_bad_signature_error_reason() -> None:
    assert BadSignature.reason == "bad_signature"
    env = chain(1)[0]
    control = seal(signer=SIGNER, space=SPACE, seq=1, prev=None, epoch=0, payload=b"op",
                   group_key=None, kind=Kind.CONTROL)
    assert run_batch([control]).ready == [control]
    assert env.kind is Kind.DATA


def test_kind_true_is_not_kind_one() -> None:
    """CBOR ``true`` equals 1 in Python; accepting it would let anyone re-encode a CONTROL
    envelope into different bytes (another delta_id) that still verifies."""
    import cbor2

    from mycelium.log import envelope as envelope_mod

    env = seal(signer=SIGNER, space=SPACE, seq=1, prev=None, epoch=0, payload=b"op",
               group_key=None, kind=Kind.CONTROL)
    m = cbor.decode(env.raw)
    assert envelope_mod.decode(cbor2.dumps(m, canonical=True)).kind is Kind.CONTROL
    m["kind"] = True
    with pytest.raises(envelope_mod.EnvelopeError, match="unknown envelope kind"):
        envelope_mod.decode(cbor2.dumps(m, canonical=True))
    assert run_batch([cbor2.dumps(m, canonical=True)]).rejected[0][1] == "bad_envelope"


# -- the compiled sorting of common batches (accel.chain_runs) equals the Python one ----
_A = chain(6)
_B = chain(4, signer=OTHER)
_FORGED = replace(_A[3], sig=bytes(64), raw=b"")
_FORGED = replace(_FORGED, raw=_FORGED.encode())
_ELSEWHERE = seal(signer=SIGNER, space=bytes(32), seq=1, prev=None, epoch=1, payload=b"x",
                  group_key=KEY, nonce=bytes(24))
#: authentic, linked to seq 3 but numbered 5: a gap the prev link alone does not show
_SKIP = seal(signer=SIGNER, space=SPACE, seq=5, prev=_A[2].delta_id, epoch=1, payload=b"s",
             group_key=KEY, nonce=bytes(24))
_POOL = [e.raw for e in [*_A, *_B]] + [_FORGED.raw, _ELSEWHERE.raw, b"\xa0", _A[2].raw[:-1],
                                       _SKIP.raw]


def _summary(v: Verdict) -> tuple[list[bytes], ...]:
    return ([e.delta_id for e in v.ready], [e.delta_id for e in v.pending],
            [e.delta_id for e in v.duplicates], v.rejected)  # type: ignore[return-value]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_POOL), max_size=14),
       st.sampled_from([{}, {_A[0].author: (1, _A[0].delta_id)},
                        {_A[0].author: (2, _A[1].delta_id), _B[0].author: (1, _B[0].delta_id)},
                        {_A[0].author: (2, _A[0].delta_id)}]))
def test_compiled_batch_sorting_equals_python(raws: list[bytes], heads: dict[bytes, Head]
                                              ) -> None:
    from mycelium.log import validate

    stored = {(e.author, e.seq): e.delta_id for e in [*_A, *_B]}
    lookup = lambda a, s: stored.get((a, s)) if s <= heads.get(a, (0, b""))[0] else None  # noqa: E731
    fast = validate.validate_batch(SPACE, raws, heads, lookup)
    slow = validate._validate_batch(SPACE, raws, heads, lookup)
    assert _summary(fast) == _summary(slow)


def test_compiled_batch_sorting_takes_clean_batches() -> None:
    from mycelium import accel

    if not accel.active():
        pytest.skip(f"compiled path off: {accel.disabled_reason}")
    raws = [e.raw for e in [_A[0], _B[0], _A[1], _B[1], _A[2]]]
    runs = accel.chain_runs(raws, SPACE, {})  # type: ignore[misc]
    assert [[e.seq for e in run] for run in runs] == [[1, 2, 3], [1, 2]]
    assert accel.chain_runs(raws[::-1], SPACE, {}) is None  # type: ignore[misc]  # not ascending
    assert accel.chain_runs(raws, bytes(32), {}) is None  # type: ignore[misc]  # other space
    assert accel.chain_runs(raws, SPACE, {_A[0].author: (1, _A[0].delta_id)}) is None  # type: ignore[misc]
    assert accel.chain_runs([_A[1].raw], SPACE, {_A[0].author: (1, _A[0].delta_id)}) is not None  # type: ignore[misc]


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), st.integers(0, 4), st.randoms(use_true_random=False),
       st.sampled_from(["none", "forge", "drop", "dup", "swap", "skip"]))
def test_compiled_sorting_of_interleaved_chains_equals_python(na: int, nb: int, rnd, spoil: str
                                                              ) -> None:
    from mycelium.log import validate

    a, b = [e.raw for e in _A[:na]], [e.raw for e in _B[:nb]]
    raws = []
    while a or b:  # a random interleaving keeping each author's order
        raws.append((a if a and (not b or rnd.random() < 0.5) else b).pop(0))
    if raws and spoil == "forge" and na >= 4:
        raws[raws.index(_A[3].raw)] = _FORGED.raw
    elif raws and spoil == "drop":
        raws.pop(rnd.randrange(len(raws)))
    elif raws and spoil == "dup":
        raws.insert(rnd.randrange(len(raws) + 1), rnd.choice(raws))
    elif spoil == "skip" and na == 3:
        raws.append(_SKIP.raw)
    elif len(raws) > 1 and spoil == "swap":
        i = rnd.randrange(len(raws) - 1)
        raws[i], raws[i + 1] = raws[i + 1], raws[i]
    fast = validate.validate_batch(SPACE, raws, {}, nothing_stored)
    assert _summary(fast) == _summary(validate._validate_batch(SPACE, raws, {}, nothing_stored))

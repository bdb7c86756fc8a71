"""Challenge auth: vectors, every rejection reason, bounded memory, wire round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.codec import cbor
from mycelium.identity.auth import (
    AuthError,
    BadAuthSignature,
    Challenge,
    ChallengeExpired,
    ChallengeIssuer,
    ChallengeResponse,
    ChallengeReused,
    MalformedAuth,
    UnknownChallenge,
    WrongAudience,
    answer,
)
from mycelium.identity.identity import Identity

from .conftest import load_vectors

VEC = load_vectors("identity-auth.json")
ALICE = Identity.from_seed(b"\x0a" * 32)
T0 = 1_000_000.0


def _issuer(**kw: object) -> ChallengeIssuer:
    return ChallengeIssuer("relay.test", 30, **kw)  # type: ignore[arg-type]


def test_vector_bytes_and_signature() -> None:
    nonce = bytes.fromhex(VEC["nonce_hex"])
    issuer = ChallengeIssuer(VEC["audience"], VEC["ttl_s"], rng=lambda _n: nonce)
    challenge = issuer.issue(VEC["now_s"])
    assert (challenge.issued_ms, challenge.expires_ms) == (VEC["issued_ms"], VEC["expires_ms"])
    assert challenge.to_cbor().hex() == VEC["challenge_cbor_hex"]
    assert challenge.signing_bytes().hex() == VEC["signed_hex"]
    response = answer(Identity.from_seed(bytes.fromhex(VEC["seed_hex"])), challenge)
    assert response.signature.hex() == VEC["signature_hex"]
    assert response.to_cbor().hex() == VEC["response_cbor_hex"]
    assert ChallengeResponse.from_cbor(bytes.fromhex(VEC["response_cbor_hex"])) == response


@pytest.mark.parametrize("check", VEC["checks"], ids=lambda c: str(c["at_s"]))
def test_vector_checks(check: dict[str, object]) -> None:
    nonce = bytes.fromhex(VEC["nonce_hex"])
    issuer = ChallengeIssuer(VEC["audience"], VEC["ttl_s"], rng=lambda _n: nonce)
    issuer.issue(VEC["now_s"])
    wire = bytes.fromhex(VEC["response_cbor_hex"])
    if str(check["result"]).startswith("did:"):
        assert issuer.verify(wire, float(str(check["at_s"]))) == check["result"]
    else:
        with pytest.raises(AuthError) as info:
            issuer.verify(wire, float(str(check["at_s"])))
        assert info.value.reason == check["result"]


def test_happy_path_over_the_wire() -> None:
    issuer = _issuer()
    wire = issuer.issue(T0).to_cbor()
    response = answer(ALICE, Challenge.from_cbor(wire)).to_cbor()
    assert issuer.verify(response, T0 + 1) == ALICE.did
    assert issuer.outstanding == 0


def test_reuse_is_rejected_until_and_after_expiry() -> None:
    issuer = _issuer()
    response = answer(ALICE, issuer.issue(T0))
    issuer.verify(response, T0 + 1)
    with pytest.raises(ChallengeReused):
        issuer.verify(response, T0 + 2)
    issuer.issue(T0 + 100)  # purges
    with pytest.raises(ChallengeExpired):
        issuer.verify(response, T0 + 100)


def test_expired() -> None:
    issuer = _issuer()
    response = answer(ALICE, issuer.issue(T0))
    with pytest.raises(ChallengeExpired) as info:
        issuer.verify(response, T0 + 30)
    assert info.value.reason == "challenge_expired"
    assert issuer.outstanding == 0


def test_wrong_audience() -> None:
    ours, theirs = _issuer(), ChallengeIssuer("evil.test", 30)
    response = answer(ALICE, theirs.issue(T0))
    with pytest.raises(WrongAudience):
        ours.verify(response, T0)


def test_bad_signature_wrong_signer_and_nonce_survives() -> None:
    issuer = _issuer()
    challenge = issuer.issue(T0)
    mallory = Identity.generate()
    forged = ChallengeResponse(challenge, ALICE.did, mallory.sign(challenge.signing_bytes()))
    with pytest.raises(BadAuthSignature):
        issuer.verify(forged, T0)
    assert issuer.verify(answer(ALICE, challenge), T0) == ALICE.did  # not burnt by the forgery


def test_unknown_and_altered_challenges() -> None:
    issuer = _issuer()
    stranger = Challenge(b"\x01" * 32, "relay.test", 1_000_000_000, 1_000_030_000)
    with pytest.raises(UnknownChallenge) as info:
        issuer.verify(answer(ALICE, stranger), T0)
    assert info.value.reason == "unknown_challenge"
    real = issuer.issue(T0)
    stretched = Challenge(real.nonce, real.audience, real.issued_ms, real.expires_ms + 10**9)
    with pytest.raises(UnknownChallenge) as info:
        issuer.verify(answer(ALICE, stretched), T0)
    assert info.value.reason == "challenge_mismatch"


def test_memory_is_bounded_oldest_evicted() -> None:
    counter = iter(range(10**6))
    issuer = _issuer(max_outstanding=3, rng=lambda n: next(counter).to_bytes(n, "big"))
    first = issuer.issue(T0)
    for _ in range(5):
        issuer.issue(T0)
    assert issuer.outstanding == 3
    with pytest.raises(UnknownChallenge):
        issuer.verify(answer(ALICE, first), T0)


def test_bad_did_in_response() -> None:
    issuer = _issuer()
    challenge = issuer.issue(T0)
    response = ChallengeResponse(challenge, "did:web:x", ALICE.sign(challenge.signing_bytes()))
    with pytest.raises(MalformedAuth):
        issuer.verify(response, T0)


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xff",
        cbor.encode([1, 2]),
        cbor.encode({"v": 1}),
        cbor.encode({"v": 2, "challenge": {}, "did": "x", "sig": b"\x00" * 64}),
        cbor.encode({"v": 1, "challenge": {"v": 1, "nonce": b"", "aud": "a", "iat": 1, "exp": 2},
                     "did": ALICE.did, "sig": b"\x00" * 64}),
        cbor.encode({"v": 1, "challenge": {"v": 1, "nonce": b"\x00" * 32, "aud": "a", "iat": 2,
                                           "exp": 1}, "did": ALICE.did, "sig": b"\x00" * 64}),
        cbor.encode({"v": 1, "challenge": {"v": 1, "nonce": b"\x00" * 32, "aud": "a", "iat": 1.5,
                                           "exp": 2}, "did": ALICE.did, "sig": b"\x00" * 64}),
        b"\xa1\x61v\x18\x01",  # non-canonical integer encoding
        b"\x00" * 2000,
    ],
)
def test_malformed_wire(value: bytes) -> None:
    with pytest.raises(MalformedAuth):
        _issuer().verify(value, T0)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=300))
def test_random_bytes_never_authenticate(data: bytes) -> None:
    with pytest.raises(AuthError):
        _issuer().verify(data, T0)


@settings(max_examples=100, deadline=None)
@given(pos=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_flipped_response_byte_is_rejected(pos: int, flip: int) -> None:
    issuer = _issuer(rng=lambda n: b"\x07" * n)
    wire = bytearray(answer(ALICE, issuer.issue(T0)).to_cbor())
    wire[pos % len(wire)] ^= flip
    with pytest.raises(AuthError):
        issuer.verify(bytes(wire), T0)


@settings(max_examples=50, deadline=None)
@given(nonce=st.binary(min_size=32, max_size=32), aud=st.text(min_size=1, max_size=50),
       iat=st.integers(0, 2**40), ttl=st.integers(1, 10**6))
def test_challenge_cbor_round_trip(nonce: bytes, aud: str, iat: int, ttl: int) -> None:
    challenge = Challenge(nonce, aud, iat, iat + ttl)
    assert Challenge.from_cbor(challenge.to_cbor()) == challenge


def test_issuer_argument_checks() -> None:
    with pytest.raises(ValueError):
        ChallengeIssuer("", 10)
    with pytest.raises(ValueError):
        ChallengeIssuer("a", 0)
    with pytest.raises(ValueError):
        _issuer().issue(float("nan"))

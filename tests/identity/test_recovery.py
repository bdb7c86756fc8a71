"""Guardian recovery: K-of-N round trips, wrong guardians, forged and mixed messages."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.codec import cbor
from mycelium.crypto.sealed import SealedBoxError, open_sealed, seal_to
from mycelium.identity import recovery
from mycelium.identity.identity import Identity
from mycelium.identity.recovery import (
    BadGuardianSetup,
    BadRecoveryMessage,
    NotAGuardian,
    NotEnoughShares,
    OwnerMismatch,
    RecoveryError,
    WrongOwner,
    approve,
    finish,
    guardian_open_share,
    read_approval,
    read_package,
    read_request,
    request_code,
    setup_guardians,
    start_recovery,
)
from tests.budget import examples

OWNER = Identity.from_seed(b"\x11" * 32)
GUARDIANS = [Identity.from_seed(bytes([0x20 + i]) * 32) for i in range(5)]
DIDS = [g.did for g in GUARDIANS]
SECP256K1_DID = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"


def test_two_of_three_any_pair_recovers_identical_did() -> None:
    package = setup_guardians(OWNER, 2, DIDS[:3])
    for pair in itertools.combinations(GUARDIANS[:3], 2):
        request, secret = start_recovery(OWNER.did)
        approvals = [approve(g, package, request) for g in pair]
        recovered = finish(secret, approvals)
        assert recovered.did == OWNER.did and recovered.seed == OWNER.seed


def test_k_minus_one_is_not_enough_with_clear_message() -> None:
    package = setup_guardians(OWNER, 2, DIDS[:3])
    request, secret = start_recovery(OWNER.did)
    one = approve(GUARDIANS[0], package, request)
    with pytest.raises(NotEnoughShares, match=r"^2 of 3 guardian approvals needed, got 1$"):
        finish(secret, [one])
    with pytest.raises(NotEnoughShares, match="got 1"):
        finish(secret, [one, one])  # the same guardian twice counts once
    with pytest.raises(NotEnoughShares):
        finish(secret, [])


def test_share_sealed_to_a_cannot_be_opened_by_b() -> None:
    package = setup_guardians(OWNER, 2, DIDS[:3])
    box_a = read_package(package).boxes[DIDS[0]]
    with pytest.raises(SealedBoxError) as info:
        open_sealed(GUARDIANS[1], box_a)
    assert info.value.reason == "wrong_key"
    share = guardian_open_share(GUARDIANS[0], package)
    assert share.owner == OWNER.did and len(share.mnemonic.split()) >= 20
    with pytest.raises(NotAGuardian):
        guardian_open_share(GUARDIANS[4], package)


def test_package_contents_and_signature() -> None:
    package = setup_guardians(OWNER, 3, DIDS)
    pkg = read_package(package)
    assert (pkg.owner, pkg.threshold, pkg.guardians) == (OWNER.did, 3, DIDS)
    assert OWNER.seed not in package
    value = cbor.decode(package)
    value["threshold"] = 2
    with pytest.raises(BadRecoveryMessage) as info:
        read_package(cbor.encode(value))
    assert info.value.reason == "bad_signature"


def test_guardian_refuses_request_for_another_owner() -> None:
    package = setup_guardians(OWNER, 2, DIDS[:3])
    request, _ = start_recovery(Identity.generate().did)
    with pytest.raises(OwnerMismatch):
        approve(GUARDIANS[0], package, request)
    request, _ = start_recovery(OWNER.did)
    with pytest.raises(NotAGuardian):
        approve(GUARDIANS[4], package, request)


def test_approvals_for_another_request_are_rejected() -> None:
    package = setup_guardians(OWNER, 2, DIDS[:3])
    req1, secret1 = start_recovery(OWNER.did)
    req2, _ = start_recovery(OWNER.did)
    approvals = [approve(GUARDIANS[0], package, req1), approve(GUARDIANS[1], package, req2)]
    with pytest.raises(OwnerMismatch):
        finish(secret1, approvals)


def test_mixed_share_sets_are_rejected() -> None:
    old, new = setup_guardians(OWNER, 2, DIDS[:3]), setup_guardians(OWNER, 2, DIDS[:3])
    request, secret = start_recovery(OWNER.did)
    with pytest.raises(OwnerMismatch):
        finish(secret, [approve(GUARDIANS[0], old, request), approve(GUARDIANS[1], new, request)])


def test_forged_package_of_someone_else_does_not_yield_owner() -> None:
    """Mallory signs a package claiming to be the owner: signature check catches it."""
    mallory = Identity.generate()
    forged = cbor.decode(setup_guardians(mallory, 2, DIDS[:3]))
    forged["owner"] = OWNER.did
    with pytest.raises(BadRecoveryMessage):
        read_package(cbor.encode(forged))


def test_recovered_seed_must_match_owner_did() -> None:
    """Guardians colluding with shares of another seed cannot pass them off as the owner."""
    other = Identity.generate()
    package = setup_guardians(other, 2, DIDS[:3])
    request, secret = start_recovery(other.did)
    approvals = [approve(g, package, request) for g in GUARDIANS[:2]]
    # Re-sign approvals as if they were for OWNER (guardians are the signers, so they can).
    lying = []
    for raw, g in zip(approvals, GUARDIANS[:2], strict=True):
        body = {k: v for k, v in cbor.decode(raw).items() if k != "sig"}
        body["owner"] = OWNER.did
        box = approve_box_for(g, package, request, OWNER.did)
        body["box"] = box
        lying.append(recovery._signed(g, recovery.APPROVAL_DOMAIN, body))
    with pytest.raises(WrongOwner):
        finish(secret, lying)


def approve_box_for(guardian: Identity, package: bytes, request: bytes, claimed: str) -> bytes:
    share = guardian_open_share(guardian, package)
    req = read_request(request)
    return seal_to(req.temp, recovery._share_plaintext(claimed, share.set_id, share.mnemonic))


@pytest.mark.parametrize(
    ("threshold", "count"), [(0, 3), (4, 3), (1, 3), (2, 0), (2, 17)]
)
def test_bad_setups(threshold: int, count: int) -> None:
    dids = [Identity.from_seed(bytes([i % 256, 1]) * 16).did for i in range(count)]
    with pytest.raises(BadGuardianSetup):
        setup_guardians(OWNER, threshold, dids)


def test_bad_guardian_lists() -> None:
    with pytest.raises(BadGuardianSetup):
        setup_guardians(OWNER, 2, [DIDS[0], DIDS[0]])
    with pytest.raises(BadGuardianSetup):
        setup_guardians(OWNER, 2, [DIDS[0], OWNER.did])
    with pytest.raises(RecoveryError) as info:
        setup_guardians(OWNER, 2, [DIDS[0], SECP256K1_DID])
    assert info.value.reason == "unsupported_key_type"


def test_single_guardian_threshold_one() -> None:
    package = setup_guardians(OWNER, 1, DIDS[:1])
    request, secret = start_recovery(OWNER.did)
    assert finish(secret, [approve(GUARDIANS[0], package, request)]) == OWNER


def test_request_code_and_signature() -> None:
    request, _ = start_recovery(OWNER.did)
    parsed = read_request(request)
    assert parsed.owner == OWNER.did and parsed.code == request_code(request)
    assert len(parsed.code) == 9 and parsed.code[4] == "-"
    value = cbor.decode(request)
    value["temp"] = Identity.generate().public_key
    with pytest.raises(BadRecoveryMessage):
        read_request(cbor.encode(value))


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=200))
def test_garbage_is_a_recovery_error(data: bytes) -> None:
    for parse in (read_package, read_request, read_approval):
        with pytest.raises(RecoveryError):
            parse(data)


@settings(max_examples=40, deadline=None)
@given(pos=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_flipped_approval_byte_never_recovers_silently(pos: int, flip: int) -> None:
    package = _PACKAGE
    request, secret = _REQUEST
    approvals = [approve(g, package, request) for g in GUARDIANS[:2]]
    raw = bytearray(approvals[1])
    raw[pos % len(raw)] ^= flip
    try:
        recovered = finish(secret, [approvals[0], bytes(raw)])
    except (RecoveryError, SealedBoxError):
        return
    assert recovered == OWNER


@settings(max_examples=examples(ci=100, local=20), deadline=None)
@given(seed=st.binary(min_size=32, max_size=32), k=st.integers(2, 4))
def test_property_any_k_of_n_round_trip(seed: bytes, k: int) -> None:
    owner = Identity.from_seed(seed)
    package = setup_guardians(owner, k, DIDS)
    request, secret = start_recovery(owner.did)
    assert finish(secret, [approve(g, package, request) for g in GUARDIANS[-k:]]) == owner


_PACKAGE = setup_guardians(OWNER, 2, DIDS[:3])
_REQUEST = start_recovery(OWNER.did)

"""Every protocols/vectors/identity-*.json is valid, known and checked by some test."""

from __future__ import annotations

import pytest

from mycelium.identity import recovery
from mycelium.identity.identity import Identity

from .conftest import VECTORS, load_vectors

#: Vector file -> the test module that checks it (besides this one).
CHECKED_BY = {
    "identity-didkey.json": "test_didkey.py",
    "identity-kdf.json": "test_identity.py",
    "identity-keystore.json": "test_keystore.py",
    "identity-auth.json": "test_auth.py",
    "identity-recovery.json": "test_vectors.py",
}


def test_every_identity_vector_file_is_checked() -> None:
    files = {p.name for p in VECTORS.glob("identity-*.json")}
    assert files == set(CHECKED_BY)
    here = VECTORS.parents[1] / "tests" / "identity"
    for name, module in CHECKED_BY.items():
        assert load_vectors(name)["description"]
        assert name in (here / module).read_text()


def test_spec_mentions_every_vector_file() -> None:
    spec = (VECTORS.parent / "identity.md").read_text()
    for name in CHECKED_BY:
        assert f"vectors/{name}" in spec


REC = load_vectors("identity-recovery.json")


def test_recovery_vector_finishes_to_owner() -> None:
    approvals = [bytes.fromhex(a) for a in REC["approvals_hex"]]
    recovered = recovery.finish(bytes.fromhex(REC["temp_secret_hex"]), approvals)
    assert recovered.did == REC["owner_did"]
    assert recovered.seed.hex() == REC["owner_seed_hex"]
    with pytest.raises(recovery.NotEnoughShares, match="2 of 3"):
        recovery.finish(bytes.fromhex(REC["temp_secret_hex"]), approvals[:1])


def test_recovery_vector_messages_parse_and_reapprove() -> None:
    package, request = bytes.fromhex(REC["package_hex"]), bytes.fromhex(REC["request_hex"])
    pkg = recovery.read_package(package)
    assert (pkg.owner, pkg.threshold, pkg.guardians) == (
        REC["owner_did"], REC["threshold"], REC["guardian_dids"])
    req = recovery.read_request(request)
    assert (req.owner, req.code) == (REC["owner_did"], REC["request_code"])
    guardians = [Identity.from_seed(bytes.fromhex(s)) for s in REC["guardian_seeds_hex"]]
    assert [g.did for g in guardians] == REC["guardian_dids"]
    fresh = [recovery.approve(g, package, request) for g in guardians[1:]]
    recovered = recovery.finish(bytes.fromhex(REC["temp_secret_hex"]), fresh)
    assert recovered.did == REC["owner_did"]
    for raw in REC["approvals_hex"]:
        assert recovery.read_approval(bytes.fromhex(raw)).owner == REC["owner_did"]

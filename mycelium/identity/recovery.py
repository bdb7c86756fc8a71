"""Social recovery of the seed through guardians (DESIGN.md §2, protocols/identity.md §6).

Why this design:

* The seed is split with SLIP-39 (``shamir-mnemonic``, one group, K-of-N): fewer than K
  shares reveal nothing, and each share is a word list a guardian could also write down.
* Each share is sealed to one guardian's DID (``seal_to``), and the whole *guardian
  package* is signed by the owner, so guardians can check whose shares they hold and the
  package can travel through any untrusted channel (sync, relay, e-mail).
* A new device cannot prove it is the owner (the key is lost), so it makes a temporary
  key pair and a *recovery request* naming the owner's DID. Each guardian confirms out of
  band (a short code both screens show), then *approves*: it opens its share and re-seals
  it to the temporary key. K approvals rebuild the seed on the new device; the result is
  checked against the owner's DID, so a wrong or forged share set cannot silently yield
  a different identity. Guardians never see the seed.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from typing import Any

import shamir_mnemonic

from mycelium.codec import cbor
from mycelium.crypto.sealed import SealedBoxError, open_sealed, seal_to
from mycelium.errors import CodecError, MyceliumError
from mycelium.identity.didkey import DidError, public_key_from_did
from mycelium.identity.identity import Identity, verify_signature

VERSION = 1
PACKAGE_DOMAIN = b"mycelium-guardians-v1"
REQUEST_DOMAIN = b"mycelium-recovery-request-v1"
APPROVAL_DOMAIN = b"mycelium-recovery-approval-v1"
#: SLIP-39 allows at most 16 shares per group.
MAX_GUARDIANS = 16
SET_ID_BYTES = 16
MAX_MESSAGE_BYTES = 64 * 1024
MAX_SHARE_BOX_BYTES = 2048


class RecoveryError(MyceliumError):
    """Base class for guardian setup and recovery failures."""

    reason = "recovery"


class BadGuardianSetup(RecoveryError):
    """Threshold or guardian list that cannot make a share set."""

    reason = "bad_guardian_setup"


class BadRecoveryMessage(RecoveryError):
    """A package, request or approval that is malformed or not validly signed."""

    reason = "bad_recovery_message"


class NotAGuardian(RecoveryError):
    """The identity holds no share in this package."""

    reason = "not_guardian"


class OwnerMismatch(RecoveryError):
    """Request, package and approvals do not all name the same owner / share set / key."""

    reason = "owner_mismatch"


class NotEnoughShares(RecoveryError):
    """Fewer approvals than the threshold."""

    reason = "not_enough_shares"


class WrongOwner(RecoveryError):
    """The shares combine, but not into the owner's seed (forged or mixed share sets)."""

    reason = "wrong_owner"


@dataclass(frozen=True)
class GuardianShare:
    """One guardian's share, as opened from a package: a SLIP-39 mnemonic for ``owner``."""

    owner: str
    set_id: bytes
    mnemonic: str


@dataclass(frozen=True)
class GuardianPackage:
    """A verified guardian package (owner's signature checked)."""

    owner: str
    set_id: bytes
    threshold: int
    boxes: dict[str, bytes]  # guardian DID -> share sealed to that guardian

    @property
    def guardians(self) -> list[str]:
        return list(self.boxes)


@dataclass(frozen=True)
class RecoveryRequest:
    """A verified request from a new device: recover ``owner`` to temporary key ``temp``."""

    owner: str
    temp: bytes
    code: str


@dataclass(frozen=True)
class Approval:
    """A verified approval: ``guardian``'s share of ``owner`` re-sealed to ``temp``."""

    owner: str
    guardian: str
    set_id: bytes
    threshold: int
    guardians: int
    temp: bytes
    box: bytes


def setup_guardians(owner: Identity, threshold: int, guardian_dids: list[str]) -> bytes:
    """Split ``owner``'s seed K-of-N and seal one share to each guardian; signed CBOR."""
    _check_setup(owner, threshold, guardian_dids)
    set_id = os.urandom(SET_ID_BYTES)
    groups = shamir_mnemonic.generate_mnemonics(
        1, [(threshold, len(guardian_dids))], owner.seed, b"", iteration_exponent=0
    )
    shares = []
    for did, mnemonic in zip(guardian_dids, groups[0], strict=True):
        plain = _share_plaintext(owner.did, set_id, mnemonic)
        shares.append({"guardian": did, "box": seal_to(public_key_from_did(did), plain)})
    body = {"v": VERSION, "owner": owner.did, "set": set_id, "threshold": threshold,
            "shares": shares}
    return _signed(owner, PACKAGE_DOMAIN, body)


def read_package(package: bytes) -> GuardianPackage:
    """Parse a package and verify the owner's signature."""
    body = _verified(package, PACKAGE_DOMAIN, "owner", "guardian package")
    _expect(body, {"v", "owner", "set", "threshold", "shares", "sig"}, "guardian package")
    threshold, shares, set_id = body["threshold"], body["shares"], body["set"]
    if not isinstance(set_id, bytes) or len(set_id) != SET_ID_BYTES:
        raise BadRecoveryMessage("guardian package set id must be 16 bytes")
    if not isinstance(shares, list) or not 1 <= len(shares) <= MAX_GUARDIANS:
        raise BadRecoveryMessage(f"guardian package must hold 1..{MAX_GUARDIANS} shares")
    if not isinstance(threshold, int) or not 1 <= threshold <= len(shares):
        raise BadRecoveryMessage("guardian package threshold out of range")
    boxes: dict[str, bytes] = {}
    for entry in shares:
        _expect(entry, {"guardian", "box"}, "guardian share entry")
        did, box = entry["guardian"], entry["box"]
        if not isinstance(did, str) or not isinstance(box, bytes) or did in boxes:
            raise BadRecoveryMessage("guardian share entries must be distinct (did, box) pairs")
        if len(box) > MAX_SHARE_BOX_BYTES:
            raise BadRecoveryMessage("guardian share box too large")
        boxes[did] = box
    return GuardianPackage(body["owner"], set_id, threshold, boxes)


def guardian_open_share(guardian: Identity, package: bytes) -> GuardianShare:
    """Open the share sealed to ``guardian`` (raises NotAGuardian / SealedBoxError)."""
    pkg = read_package(package)
    box = pkg.boxes.get(guardian.did)
    if box is None:
        raise NotAGuardian(f"{guardian.did} is not a guardian of {pkg.owner}")
    return _open_share(guardian, box, pkg.owner, pkg.set_id)


def start_recovery(owner_did: str) -> tuple[bytes, bytes]:
    """On the new device: ``(request bytes, temporary secret)``; keep the secret private."""
    _did_key(owner_did, "owner")
    temp = Identity.generate()
    body = {"v": VERSION, "owner": owner_did, "temp": temp.public_key}
    return _signed(temp, REQUEST_DOMAIN, body), temp.seed


def read_request(request: bytes) -> RecoveryRequest:
    """Parse a request and verify it is signed by its temporary key."""
    value = _decode(request, "recovery request")
    _expect(value, {"v", "owner", "temp", "sig"}, "recovery request")
    temp = value["temp"]
    if not isinstance(temp, bytes) or len(temp) != 32:
        raise BadRecoveryMessage("recovery request temp key must be 32 bytes")
    _check_sig(value, REQUEST_DOMAIN, temp, "recovery request")
    _did_key(value["owner"], "owner")
    return RecoveryRequest(value["owner"], temp, request_code(request))


def request_code(request: bytes) -> str:
    """Short code both the new device and the guardian display for out-of-band comparison."""
    digest = hashlib.sha256(REQUEST_DOMAIN + request).digest()
    text = base64.b32encode(digest[:5]).decode()
    return f"{text[:4]}-{text[4:]}"


def approve(guardian: Identity, package: bytes, request: bytes) -> bytes:
    """As a guardian: re-seal my share of the package's owner to the request's temp key."""
    pkg = read_package(package)
    req = read_request(request)
    if req.owner != pkg.owner:
        raise OwnerMismatch(f"request is for {req.owner}, but the package belongs to {pkg.owner}")
    box = pkg.boxes.get(guardian.did)
    if box is None:
        raise NotAGuardian(f"{guardian.did} is not a guardian of {pkg.owner}")
    share = _open_share(guardian, box, pkg.owner, pkg.set_id)
    resealed = seal_to(req.temp, _share_plaintext(share.owner, share.set_id, share.mnemonic))
    body = {"v": VERSION, "owner": pkg.owner, "guardian": guardian.did, "set": pkg.set_id,
            "threshold": pkg.threshold, "guardians": len(pkg.boxes), "temp": req.temp,
            "box": resealed}
    return _signed(guardian, APPROVAL_DOMAIN, body)


def read_approval(approval: bytes) -> Approval:
    """Parse an approval and verify the guardian's signature."""
    body = _verified(approval, APPROVAL_DOMAIN, "guardian", "approval")
    keys = {"v", "owner", "guardian", "set", "threshold", "guardians", "temp", "box", "sig"}
    _expect(body, keys, "approval")
    ints_ok = all(isinstance(body[k], int) and 1 <= body[k] <= MAX_GUARDIANS
                  for k in ("threshold", "guardians"))
    bytes_ok = all(isinstance(body[k], bytes) for k in ("set", "temp", "box"))
    if not (ints_ok and bytes_ok):
        raise BadRecoveryMessage("approval fields have the wrong types")
    _did_key(body["owner"], "owner")
    return Approval(body["owner"], body["guardian"], body["set"], body["threshold"],
                    body["guardians"], body["temp"], body["box"])


def finish(temp_secret: bytes, approvals: list[bytes]) -> Identity:
    """On the new device: rebuild the owner's identity from at least K approvals."""
    temp = Identity.from_seed(temp_secret)
    parsed = _consistent(temp, [read_approval(a) for a in approvals])
    first = parsed[0]
    if len(parsed) < first.threshold:
        raise NotEnoughShares(
            f"{first.threshold} of {first.guardians} guardian approvals needed, got {len(parsed)}"
        )
    mnemonics = [_open_share(temp, a.box, a.owner, a.set_id).mnemonic for a in parsed]
    try:
        seed = shamir_mnemonic.combine_mnemonics(mnemonics)
    except (shamir_mnemonic.MnemonicError, ValueError) as exc:
        raise WrongOwner(f"guardian shares do not combine: {exc}") from exc
    identity = Identity.from_seed(seed)
    if identity.did != first.owner:
        raise WrongOwner(f"shares rebuild {identity.did}, not {first.owner}")
    return identity


def _consistent(temp: Identity, parsed: list[Approval]) -> list[Approval]:
    """Drop duplicate guardians; insist on one owner, one share set, our temp key."""
    if not parsed:
        raise NotEnoughShares("no guardian approvals given")
    unique: dict[str, Approval] = {}
    for a in parsed:
        if a.temp != temp.public_key:
            raise OwnerMismatch(f"approval from {a.guardian} is for another recovery request")
        same = (a.owner, a.set_id, a.threshold) == (parsed[0].owner, parsed[0].set_id,
                                                    parsed[0].threshold)
        if not same:
            raise OwnerMismatch("approvals come from different owners or share sets")
        unique.setdefault(a.guardian, a)
    return list(unique.values())


def _check_setup(owner: Identity, threshold: int, guardian_dids: list[str]) -> None:
    n = len(guardian_dids)
    if not 1 <= n <= MAX_GUARDIANS:
        raise BadGuardianSetup(f"need 1..{MAX_GUARDIANS} guardians, got {n}")
    if not isinstance(threshold, int) or not 1 <= threshold <= n:
        raise BadGuardianSetup(f"threshold must be between 1 and {n}, got {threshold}")
    if threshold == 1 and n > 1:
        raise BadGuardianSetup("SLIP-39 does not allow threshold 1 with several guardians")
    if len(set(guardian_dids)) != n:
        raise BadGuardianSetup("guardian DIDs must be distinct")
    if owner.did in guardian_dids:
        raise BadGuardianSetup("the owner cannot be their own guardian")
    for did in guardian_dids:
        _did_key(did, "guardian")


def _did_key(did: Any, role: str) -> bytes:
    if not isinstance(did, str):
        raise BadRecoveryMessage(f"{role} DID must be a string")
    try:
        return public_key_from_did(did)
    except DidError as exc:
        message = f"{role} DID {did!r} is not usable: {exc}"
        raise BadRecoveryMessage(message, reason=exc.reason) from exc


def _share_plaintext(owner: str, set_id: bytes, mnemonic: str) -> bytes:
    return cbor.encode({"owner": owner, "set": set_id, "share": mnemonic})


def _open_share(holder: Identity, box: bytes, owner: str, set_id: bytes) -> GuardianShare:
    plain = open_sealed(holder, box)
    value = _decode(plain, "share")
    _expect(value, {"owner", "set", "share"}, "share")
    if value["owner"] != owner or value["set"] != set_id or not isinstance(value["share"], str):
        raise OwnerMismatch("sealed share belongs to another owner or share set")
    return GuardianShare(owner, set_id, value["share"])


def _signed(signer: Identity, domain: bytes, body: dict[str, Any]) -> bytes:
    sig = signer.sign(domain + cbor.encode(body))
    return cbor.encode({**body, "sig": sig})


def _verified(data: bytes, domain: bytes, signer_field: str, what: str) -> dict[str, Any]:
    value = _decode(data, what)
    if not isinstance(value, dict) or "sig" not in value or value.get("v") != VERSION:
        raise BadRecoveryMessage(f"{what} is not a signed version-{VERSION} map")
    key = _did_key(value.get(signer_field), signer_field)
    _check_sig(value, domain, key, what)
    return value


def _check_sig(value: dict[str, Any], domain: bytes, key: bytes, what: str) -> None:
    body = {k: v for k, v in value.items() if k != "sig"}
    sig = value["sig"]
    if not isinstance(sig, bytes) or not verify_signature(key, domain + cbor.encode(body), sig):
        raise BadRecoveryMessage(f"{what} signature is invalid", reason="bad_signature")


def _decode(data: bytes, what: str) -> Any:
    try:
        return cbor.decode_canonical(data, max_bytes=MAX_MESSAGE_BYTES)
    except CodecError as exc:
        raise BadRecoveryMessage(f"{what} is not canonical CBOR: {exc}") from exc


def _expect(value: Any, keys: set[str], what: str) -> None:
    if not isinstance(value, dict) or set(value) != keys:
        raise BadRecoveryMessage(f"{what} must be a map with exactly the keys {sorted(keys)}")


__all__ = [
    "Approval",
    "BadGuardianSetup",
    "BadRecoveryMessage",
    "GuardianPackage",
    "GuardianShare",
    "NotAGuardian",
    "NotEnoughShares",
    "OwnerMismatch",
    "RecoveryError",
    "RecoveryRequest",
    "SealedBoxError",
    "WrongOwner",
    "approve",
    "finish",
    "guardian_open_share",
    "read_approval",
    "read_package",
    "read_request",
    "request_code",
    "setup_guardians",
    "start_recovery",
]

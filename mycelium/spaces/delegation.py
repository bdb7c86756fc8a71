"""Delegated writers: keys certified by a member instead of added by a control op
(protocols/delegation.md).

A member (the *issuer*) signs a certificate saying "this other key (the *subject*) may
write DATA envelopes in this space on my authority". The subject carries the certificate
as the first envelope of its own chain in the space: a CONTROL envelope (seq 1, signed by
the subject) whose payload is ``{"op": "delegate", "cert": {...}, "sig": issuer-sig}``.
Anyone — members, relays without keys — checks two signatures and one membership lookup.

Why not a membership op per key: a gateway serving 10 000 phone users would spend the
whole control-log budget (10 000 ops) and make every node replay them all; certificates
live in their subjects' chains, are never replayed, and cost one dict lookup per check.

Kinds:

* ``custodial``: a key the issuer generated and holds for someone else (the gateway's
  WhatsApp/Instagram senders). Valid while the issuer is an **admin**.
* ``device``: another device of the issuer's own identity. Valid while the issuer is a
  **member** (any role).

Delegates write data only: they hold no key box (the issuer encrypts with the group key
it holds), cannot change membership, and cannot delegate further. This module is pure:
:class:`Delegations` is a registry fed by :class:`~mycelium.spaces.state.SpaceState`.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.codec import cbor
from mycelium.errors import CodecError
from mycelium.identity.identity import verify_signature
from mycelium.log.envelope import Envelope, Kind
from mycelium.spaces.errors import BadControlOp, WrongSpace

DelegationKind = Literal["custodial", "device"]
KINDS: tuple[DelegationKind, ...] = ("custodial", "device")
SIGN_DOMAIN = b"mycelium-delegation-v1"
VERSION = 1
#: Most delegated writers one space tracks (they do not count against MAX_CONTROL_OPS).
#: Only admins' custodial certificates can get near it: see MAX_DEVICES_PER_ISSUER.
MAX_DELEGATIONS = 100_000
#: ``device`` certificates counted per issuer: its first ones by subject key, whatever the
#: arrival order (protocols/delegation.md §4b). Any member may issue device certificates,
#: so this bounds what 4096 members can hold (65 536) below MAX_DELEGATIONS: a hostile
#: member cannot use up the room other issuers need.
MAX_DEVICES_PER_ISSUER = 16
MAX_PAYLOAD_BYTES = 512
_CERT_FIELDS = frozenset({"v", "kind", "space", "issuer", "subject", "issued_ms"})
_PAYLOAD_FIELDS = frozenset({"op", "cert", "sig"})
#: Every delegation payload starts with these bytes: a 3-entry map whose first key in
#: canonical order (shortest first) is "op", with the value "delegate". Other control ops
#: have an "lc" key, which sorts before "op", so they never start this way.
_PREFIX = b"\xa3bophdelegate"


class BadDelegation(BadControlOp):
    """A delegation payload that can never be valid (bad shape, signature, subject)."""

    reason = "bad_delegation"


class TooManyDelegations(BadDelegation):
    """A device certificate beyond its issuer's first MAX_DEVICES_PER_ISSUER by subject
    key: it can never count (the first ones only get smaller), so it is refused."""

    reason = "too_many_delegations"


@dataclass(frozen=True, slots=True)
class Certificate:
    """``issuer`` lets ``subject`` write in ``space`` (see module docstring)."""

    kind: DelegationKind
    space: bytes
    issuer: bytes
    subject: bytes
    issued_ms: int
    sig: bytes = b""

    def body(self) -> dict[str, Any]:
        return {"v": VERSION, "kind": self.kind, "space": self.space, "issuer": self.issuer,
                "subject": self.subject, "issued_ms": self.issued_ms}

    def signing_input(self) -> bytes:
        """``"mycelium-delegation-v1" || canonical CBOR(cert)``."""
        return SIGN_DOMAIN + cbor.encode(self.body())

    def payload(self) -> bytes:
        """The CONTROL payload that carries this certificate in the subject's chain."""
        return cbor.encode({"op": "delegate", "cert": self.body(), "sig": self.sig})


def issue(issuer: Ed25519PrivateKey, *, kind: DelegationKind, space: bytes, subject: bytes,
          issued_ms: int) -> Certificate:
    """A certificate signed by ``issuer`` (checked by :func:`decode` before it is returned)."""
    pub = issuer.public_key().public_bytes_raw()
    draft = Certificate(kind=kind, space=space, issuer=pub, subject=subject, issued_ms=issued_ms)
    signed = Certificate(kind, space, pub, subject, issued_ms, issuer.sign(draft.signing_input()))
    decode(signed.payload())
    return signed


def is_delegation(payload: bytes) -> bool:
    """Cheap test used to route a CONTROL payload (the full check is :func:`decode`)."""
    return payload.startswith(_PREFIX)


def decode(payload: bytes, *, verify: bool = True) -> Certificate:
    """Parse and verify a delegation payload; raises :class:`BadDelegation`.

    ``verify=False`` skips only the issuer's signature: for certificates read back from
    this node's own store, which checked them when they arrived (one Ed25519 verification
    per delegate would otherwise dominate loading a space with thousands of them).
    """
    try:
        m = cbor.decode_canonical(payload, max_bytes=MAX_PAYLOAD_BYTES)
    except CodecError as exc:
        raise BadDelegation(f"delegation is not canonical CBOR: {exc}") from exc
    _need(isinstance(m, dict) and set(m) == _PAYLOAD_FIELDS and m["op"] == "delegate",
          "payload must be {op: 'delegate', cert, sig}")
    body, sig = m["cert"], m["sig"]
    _need(isinstance(body, dict) and set(body) == _CERT_FIELDS, "cert has the wrong fields")
    _need(body["v"] == VERSION, "unsupported certificate version")
    _need(body["kind"] in KINDS, f"kind must be one of {KINDS}")
    for name in ("space", "issuer", "subject"):
        _need(isinstance(body[name], bytes) and len(body[name]) == 32, f"{name}: 32 bytes")
    issued = body["issued_ms"]
    _need(isinstance(issued, int) and not isinstance(issued, bool) and 0 <= issued < 2**63,
          "issued_ms must be a uint < 2^63")
    _need(body["issuer"] != body["subject"], "a key cannot delegate to itself")
    _need(isinstance(sig, bytes) and len(sig) == 64, "sig must be 64 bytes")
    cert = Certificate(body["kind"], body["space"], body["issuer"], body["subject"], issued, sig)
    _need(not verify or verify_signature(cert.issuer, cert.signing_input(), sig),
          "issuer signature is invalid")
    return cert


#: Every revoke op starts with a 3-entry map whose keys in canonical order are "lc", "op"
#: and "pins": the bytes after the lc value are checked by :func:`may_be_revocation`.
_REVOKE_TAIL = b"bopfrevokedpins"


def may_be_revocation(payload: bytes) -> bool:
    """Cheap filter before decoding a non-admin's control op (the full check decodes)."""
    return payload.startswith(b"\xa3blc") and _REVOKE_TAIL in payload[:32]


def issuer_of(payload: bytes) -> bytes | None:
    """The issuer a delegation payload names, without checking its signature (None if the
    payload is malformed: the full check then refuses it for good)."""
    try:
        return decode(payload, verify=False).issuer
    except BadDelegation:
        return None


def certificate_of(env: Envelope, space_id: bytes, *, verify: bool = True) -> Certificate:
    """The verified certificate an envelope carries, bound to its author and place.

    The envelope's own signature is the caller's to check (as for every envelope); here:
    the issuer's signature, ``subject == author``, ``space`` matches, and ``seq == 1`` (the
    certificate opens the subject's chain, so it always arrives before the subject's data).
    """
    if env.space != space_id:
        raise WrongSpace("delegation envelope belongs to another space")
    if env.kind is not Kind.CONTROL:
        raise BadDelegation("a delegation travels in a CONTROL envelope")
    cert = decode(env.ct, verify=verify)
    _need(cert.space == space_id, "certificate names another space")
    _need(cert.subject == env.author, "certificate subject is not the envelope's author")
    _need(env.seq == 1, "a delegation must be the first envelope of its subject's chain")
    return cert


class Delegations:
    """Certificates held for one space, by subject. Pure; idempotent adds."""

    def __init__(self) -> None:
        self._by_subject: dict[bytes, Certificate] = {}
        self._devices: dict[bytes, list[bytes]] = {}  # issuer -> counted subjects, sorted
        #: Subjects whose (stored) device certificate a smaller one pushed out of its
        #: issuer's count: stores cut their chains (SpaceState.chains_to_cut).
        self.displaced: set[bytes] = set()

    def __len__(self) -> int:
        return len(self._by_subject)

    def add_many(self, certs: list[Certificate], *, stored: bool = False) -> None:
        """Record certificates (all or nothing on the size bounds).

        A device certificate beyond its issuer's first :data:`MAX_DEVICES_PER_ISSUER` by
        subject raises :class:`TooManyDelegations` (``stored``: it was kept before the
        smaller ones came, and is now displaced instead); a smaller one displaces the
        largest counted one, so every node counts the same ones in any order."""
        fresh = {c.subject: c for c in certs if c.subject not in self._by_subject}
        if len(self._by_subject) + len(fresh) > MAX_DELEGATIONS:
            raise BadDelegation(f"a space holds at most {MAX_DELEGATIONS} delegations")
        devices: dict[bytes, list[bytes]] = {}  # copies of the touched issuers' counts
        out: set[bytes] = set()
        for cert in sorted(fresh.values(), key=lambda c: c.subject):
            if cert.kind != "device":
                continue
            counted = devices.get(cert.issuer)
            if counted is None:
                counted = devices[cert.issuer] = list(self._devices.get(cert.issuer, ()))
            bisect.insort(counted, cert.subject)
            if len(counted) > MAX_DEVICES_PER_ISSUER:
                dropped = counted.pop()
                if dropped == cert.subject and not stored:
                    raise TooManyDelegations(
                        f"an issuer counts at most {MAX_DEVICES_PER_ISSUER} devices")
                out.add(dropped)
        for subject in out:
            fresh.pop(subject, None)
            self._by_subject.pop(subject, None)
        self._devices.update(devices)
        self.displaced |= out
        self._by_subject.update(fresh)

    def subjects(self) -> list[bytes]:
        return list(self._by_subject)

    def get(self, subject: bytes) -> Certificate | None:
        return self._by_subject.get(subject)

    def subjects_of(self, issuer: bytes) -> list[bytes]:
        return [s for s, c in self._by_subject.items() if c.issuer == issuer]

    def may_write(self, author: bytes, members: Mapping[bytes, str]) -> bool:
        """True if ``author`` holds a certificate whose issuer has the role its kind needs
        in ``members`` (the current membership: ``pub -> "admin" | "member"``)."""
        cert = self._by_subject.get(author)
        if cert is None:
            return False
        role = members.get(cert.issuer)
        return role == "admin" if cert.kind == "custodial" else role is not None


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise BadDelegation(f"delegation: {what}")

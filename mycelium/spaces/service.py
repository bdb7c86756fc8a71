"""Space operations over a Soil: create, invite, join, remove, rotate (spaces.md §5–§7).

The only module of :mod:`mycelium.spaces` that touches a store. Every change is a CONTROL
envelope appended through ``soil.append`` (which signs, chains and applies it to the
space's :class:`~mycelium.spaces.state.SpaceState`), so local changes and changes received
from peers take exactly the same path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from mycelium.crypto import aead
from mycelium.errors import MyceliumError
from mycelium.log.envelope import Envelope, Kind
from mycelium.log.envelope import decode as decode_envelope
from mycelium.log.validate import authentic_ids
from mycelium.spaces import control, delegation
from mycelium.spaces.errors import (
    BadInvite,
    InviteTooLarge,
    MembershipError,
    NoEpochKey,
    NotAdmin,
    SpaceError,
)
from mycelium.spaces.genesis import SpaceKind, make_genesis, parse_genesis
from mycelium.spaces.invite import MAX_INVITE_BYTES, decode_invite, encode_invite
from mycelium.spaces.state import SpaceState, epoch_id_for

PERSONAL_NAME = "personal"
#: Most envelopes fetched when building an invite with chain prefixes.
MAX_INVITE_ENVELOPES = 4096

#: The Soil surface used here (docs/dev/store-spaces-contract.md); typed loosely so this
#: module does not import the store (dependencies point downwards).
Soil = Any


def create_space(soil: Soil, name: str, kind: SpaceKind = "community",
                 *, now_ms: int | None = None) -> bytes:
    """Create a space with the caller as sole admin and a first epoch sealed to it."""
    genesis = make_genesis(soil.identity, name, kind, _now_ms() if now_ms is None else now_ms)
    space_id: bytes = soil.add_space(genesis)
    rotate(soil, space_id)
    return space_id


def ensure_personal_space(soil: Soil) -> bytes:
    """The caller's personal space, created if missing.

    Its genesis is deterministic (fixed salt and time), so every device holding the same
    identity derives the same space id.
    """
    genesis = make_genesis(soil.identity, PERSONAL_NAME, "personal", 0, salt=b"")
    space_id = parse_genesis(genesis).space_id
    if space_id not in set(soil.space_ids()):
        soil.add_space(genesis)
    maintain(soil, space_id)
    return space_id


def invite(soil: Soil, space_id: bytes, did: str, role: control.Role = "member") -> str:
    """Add ``did`` as a member, give it the current epoch key, return an invite code."""
    from mycelium.identity.didkey import public_key_from_did

    member = public_key_from_did(did)
    state = _admin_state(soil, space_id)
    if state.kind == "personal":
        raise SpaceError("a personal space has no other members", reason="personal_space")
    if not state.is_member(member):
        op = control.op_add_member(lc=_lc(soil, space_id), member=member, role=role)
        _append(soil, space_id, op)
    maintain(soil, space_id)
    grant_history(soil, space_id, member)
    return _invite_code(soil, space_id)


def grant_history(soil: Soil, space_id: bytes, member: bytes) -> int:
    """Seal every older epoch key we hold to ``member``, so a newcomer can read what was
    written before it joined (a market's existing listings). Returns the epochs granted.

    Only admins grant, and only keys they hold; removed members gain nothing from this,
    since a grant goes to the one current member named here.
    """
    state: SpaceState = soil.space_state(space_id)
    granted = 0
    for epoch_id, epoch in sorted(state.epochs.items()):
        if member in epoch.boxes or epoch_id == state.current_epoch:
            continue
        key = state.epoch_key(epoch_id, soil.identity)
        if key is None:
            continue
        boxes = control.seal_keys(space_id, key, [member])
        _append(soil, space_id, control.op_grant(lc=_lc(soil, space_id), epoch=epoch_id,
                                                 keys=boxes))
        granted += 1
    return granted


def join(soil: Soil, code: str) -> bytes:
    """Add the space described by an invite code and ingest its control log.

    The log is resolved in memory first, so a code that does not make this identity a
    member is refused before anything is stored.
    """
    inv = decode_invite(code)
    genesis = parse_genesis(inv.genesis)
    envelopes = [_decoded(raw, genesis.space_id) for raw in inv.envelopes]
    if len(authentic_ids(envelopes)) != len({e.delta_id for e in envelopes}):
        # judged per chain, as the store will judge them (protocols/delta.md §6)
        raise BadInvite("invite carries an envelope whose signature is invalid")
    preview = SpaceState(genesis)
    try:
        preview.apply_many([e for e in envelopes if e.kind is Kind.CONTROL])
    except SpaceError as exc:
        raise BadInvite(f"invite carries an invalid control op: {exc}") from exc
    if not preview.is_member(soil.identity.public_key):
        raise BadInvite("this invite does not make you a member of the space", reason="not_invited")
    space_id: bytes = soil.add_space(inv.genesis)
    soil.ingest(space_id, list(inv.envelopes))
    return space_id


def remove(soil: Soil, space_id: bytes, did: str) -> int:
    """Remove ``did`` and start a new epoch sealed only to the remaining members."""
    from mycelium.identity.didkey import public_key_from_did

    member = public_key_from_did(did)
    state = _admin_state(soil, space_id)
    if not state.is_member(member):
        raise MembershipError(f"{did} is not a member of this space", reason="not_member")
    if state.is_admin(member) and len(state.admins) == 1:
        raise MembershipError("cannot remove the last admin", reason="last_admin")
    # Its devices' chains are pinned first, while it still qualifies as their issuer
    # (protocols/delta.md §10.3); after the removal they would be cut to nothing.
    devices = [s for s in state.delegations.subjects_of(member)
               if (c := state.delegations.get(s)) is not None and c.kind == "device"]
    if devices:
        revoke(soil, space_id, devices)
    _revoke_custodial(soil, space_id, state, member)  # its gateway senders' too
    keep, head = soil.heads(space_id).get(member, (0, None))  # pins the chain (§4.3)
    op = control.op_remove_member(lc=_lc(soil, space_id), member=member, keep=keep, head=head)
    _append(soil, space_id, op)
    return rotate(soil, space_id)


def set_role(soil: Soil, space_id: bytes, did: str, role: control.Role) -> None:
    """Make a member an admin or a plain member."""
    from mycelium.identity.didkey import public_key_from_did

    member = public_key_from_did(did)
    state = _admin_state(soil, space_id)
    if not state.is_member(member):
        raise MembershipError(f"{did} is not a member of this space", reason="not_member")
    if role != "admin":  # its custodial keys stop: pin what they wrote (delegation.md §4c)
        _revoke_custodial(soil, space_id, state, member)
    _append(soil, space_id, control.op_set_role(lc=_lc(soil, space_id), member=member, role=role))


def revoke(soil: Soil, space_id: bytes, subjects: Sequence[bytes]) -> int:
    """Revoke delegated keys (protocols/delegation.md §4a), each pinned at the newest
    envelope this node holds of it: what it wrote up to there stays valid on every node,
    nothing after. An admin may revoke any delegate; a member only keys it certified
    (its own devices). Returns how many keys the ops name."""
    state: SpaceState = soil.space_state(space_id)
    me = soil.identity.public_key
    if any(state.is_member(s) for s in subjects):
        raise MembershipError("a member is removed, not revoked", reason="is_member")
    fresh = sorted(s for s in set(subjects)
                   if not state.is_member(s) and s not in state.former_members)
    if not state.is_admin(me):
        certs = [state.delegations.get(s) for s in fresh]
        if not state.is_member(me) or any(c is None or c.issuer != me for c in certs):
            raise NotAdmin("only an admin, or the key's issuer, can revoke it")
    heads = soil.heads(space_id)
    for chunk in _chunks(fresh, control.MAX_KEYS_PER_OP) if fresh else []:
        pins = {s: heads.get(s, (0, None)) for s in chunk}
        _append(soil, space_id, control.op_revoke(lc=_lc(soil, space_id), pins=pins))
    return len(fresh)


def _revoke_custodial(soil: Soil, space_id: bytes, state: SpaceState, issuer: bytes) -> None:
    """Before an issuer stops qualifying (removed or no longer admin), revoke its custodial
    keys pinned at what this node holds, so their listings stay the same everywhere."""
    keys = [s for s in state.delegations.subjects_of(issuer)
            if (c := state.delegations.get(s)) is not None and c.kind == "custodial"]
    if keys:
        revoke(soil, space_id, keys)


def rotate(soil: Soil, space_id: bytes) -> int:
    """Start a new epoch: a fresh key sealed to every current member. Returns its id."""
    state = _admin_state(soil, space_id)
    key = os.urandom(aead.KEY_BYTES)
    boxes = control.seal_keys(space_id, key, state.members)
    chunks = _chunks(sorted(boxes), control.MAX_KEYS_PER_OP)
    first = {pub: boxes[pub] for pub in chunks[0]}
    env = _append(soil, space_id, control.op_epoch(lc=_lc(soil, space_id), keys=first))
    epoch = epoch_id_for(env.delta_id)
    for chunk in chunks[1:]:
        keys = {pub: boxes[pub] for pub in chunk}
        _append(soil, space_id, control.op_grant(lc=_lc(soil, space_id), epoch=epoch, keys=keys))
    return epoch


def maintain(soil: Soil, space_id: bytes) -> bool:
    """Admin housekeeping after control ops arrive: rotate if needed, grant missing keys.

    Returns True if it wrote anything. A non-admin node does nothing (an admin will).
    """
    state: SpaceState = soil.space_state(space_id)
    me = soil.identity
    if not state.is_admin(me.public_key):
        return False
    if state.kind == "community" and state.control_count == 0:
        return False  # adopted while restoring: wait for its log (create_space rotates)
    if state.needs_rotation():
        rotate(soil, space_id)
        return True
    missing = state.members_missing_key()
    if not missing:
        return False
    key = state.epoch_key(state.current_epoch, me)
    if key is None:
        rotate(soil, space_id)
        return True
    boxes = control.seal_keys(space_id, key, missing)
    for chunk in _chunks(sorted(boxes), control.MAX_KEYS_PER_OP):
        keys = {pub: boxes[pub] for pub in chunk}
        _append(soil, space_id, control.op_grant(lc=_lc(soil, space_id), epoch=state.current_epoch,
                                                 keys=keys))
    return True


def maintain_all(soil: Soil) -> list[bytes]:
    """:func:`maintain` every space held; returns the ids of spaces it wrote to.

    For the node to call after ingesting control envelopes (or periodically): it is what
    turns "a removal arrived" into "a new epoch without the removed member".
    """
    return [space_id for space_id in soil.space_ids() if maintain(soil, space_id)]


def writable_epoch(soil: Soil, space_id: bytes) -> tuple[int, bytes]:
    """``(epoch, key)`` to encrypt new data with; raises :class:`NoEpochKey` if none."""
    state: SpaceState = soil.space_state(space_id)
    epoch = state.current_epoch
    key = state.epoch_key(epoch, soil.identity) if epoch else None
    if key is None:
        raise NoEpochKey("no usable group key yet: waiting for an admin to rotate or grant")
    return epoch, key


# -- helpers ---------------------------------------------------------------------------
def _invite_code(soil: Soil, space_id: bytes) -> str:
    """The invite: full chain prefixes when they fit, else the control envelopes alone."""
    genesis = soil.genesis(space_id)
    # Delegation certificates (protocols/delegation.md) open their subjects' chains; they
    # reach the joiner by sync, and 10 000 of them would not fit in any invite.
    control_envs: list[bytes] = [raw for raw in soil.control_envelopes(space_id)
                                 if not delegation.is_delegation(decode_envelope(raw).ct)]
    prefixes = _chain_prefixes(soil, space_id, control_envs)
    if prefixes is not None:
        try:
            return encode_invite(genesis, prefixes)
        except InviteTooLarge:
            pass
    return encode_invite(genesis, control_envs)


def _chain_prefixes(soil: Soil, space_id: bytes, control_envs: list[bytes]) -> list[bytes] | None:
    """Each control author's chain from seq 1 up to its last control op, or None.

    Control ops share their author's chain with data, and a store appends a chain only
    without gaps; shipping the (still encrypted) data envelopes in between lets the
    joiner's store append the control ops at once instead of waiting for a sync that it
    cannot start before it knows it is a member.
    """
    last: dict[bytes, int] = {}
    for raw in control_envs:
        env = decode_envelope(raw)
        last[env.author] = max(last.get(env.author, 0), env.seq)
    if sum(last.values()) == len(control_envs):
        return control_envs
    candidates = soil.envelopes_since(space_id, {}, limit=MAX_INVITE_ENVELOPES,
                                      max_bytes=MAX_INVITE_BYTES)
    keep: list[bytes] = []
    held: dict[bytes, int] = {}
    for raw in candidates:
        env = decode_envelope(raw)
        if env.seq <= last.get(env.author, 0):
            keep.append(raw)
            held[env.author] = held.get(env.author, 0) + 1
    return keep if held == last else None


def _admin_state(soil: Soil, space_id: bytes) -> SpaceState:
    state: SpaceState = soil.space_state(space_id)
    if not state.is_admin(soil.identity.public_key):
        raise NotAdmin("only an admin of the space can do this")
    return state


def _lc(soil: Soil, space_id: bytes) -> int:
    """Lamport counter for the next op (re-read: each append advances it)."""
    state: SpaceState = soil.space_state(space_id)
    return state.next_lc()


def _append(soil: Soil, space_id: bytes, payload: bytes) -> Envelope:
    env: Envelope = soil.append(space_id, Kind.CONTROL, payload)
    return env


def _decoded(raw: bytes, space_id: bytes) -> Envelope:
    try:
        env = decode_envelope(raw)
    except MyceliumError as exc:
        raise BadInvite(f"invite carries an invalid envelope: {exc}") from exc
    if env.space != space_id:
        raise BadInvite("invite carries an envelope of another space")
    return env


def _chunks(items: Sequence[bytes], size: int) -> list[list[bytes]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)] or [[]]


def _now_ms() -> int:
    return int(time.time() * 1000)

"""Membership and key epochs of one space, resolved from its control log (protocols/spaces.md §4).

:class:`SpaceState` is pure: it holds the *set* of CONTROL envelopes it was given and
derives everything else by replaying them in one total order, ``(lc, author, seq)``. The
same set therefore gives the same members and epochs on every node, whatever order the
envelopes arrived in. An op that is not valid at its place in the order (author not an
admin at that point, removing the last admin, …) is kept but skipped, because an op that
sorts earlier and arrives later may make it valid.

Writers must encrypt only to :attr:`SpaceState.current_epoch`: the newest epoch created
after the last removal whose key was sealed only to current members. When no such epoch
exists (right after a removal), :meth:`SpaceState.needs_rotation` is true and an admin's
node creates one; until then there is no epoch to write to.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from mycelium.log.envelope import Envelope, Kind
from mycelium.spaces import delegation
from mycelium.spaces.control import (
    AddMember,
    ControlOp,
    EpochOp,
    GrantOp,
    RemoveMember,
    Revoke,
    Role,
    SetRole,
    decode_op,
)
from mycelium.spaces.errors import (
    BadControlOp,
    NotAdmin,
    NotMember,
    RemovedAuthor,
    SpaceError,
    UnknownEpoch,
    WrongSpace,
)
from mycelium.spaces.genesis import Genesis, SpaceKind
from mycelium.spaces.keys import KeyHolder, open_group_key

#: Control ops of one author that take part in resolution: its first ones by ``seq``
#: (later ones are skipped as ``too_many_control_ops``). A bound per author, never per
#: space, so that no author can use up what another needs and the ops that count do not
#: depend on arrival order (spaces.md §4.2). Only authors some held op named admin have
#: control ops stored at all (:meth:`SpaceState.admission`).
MAX_CONTROL_OPS_PER_AUTHOR = 10_000
#: Upper bound on members of one space.
MAX_MEMBERS = 4096
#: :meth:`SpaceState.admission` reasons that only the control log can change (a store
#: keeps such envelopes pending and retries them when a control op was stored).
WAITING_FOR_LOG = frozenset({NotMember.reason, NotAdmin.reason})

#: (lc, author, seq, delta_id): delta_id only breaks ties between forked chains.
OrderKey = tuple[int, bytes, int, bytes]


def epoch_id_for(delta_id: bytes) -> int:
    """The epoch id created by the epoch op with this delta id: a non-zero uint64.

    Derived from the op's hash, so concurrent rotations by different admins can never
    pick the same id (collisions are treated as an invalid second op).
    """
    return int.from_bytes(delta_id[:8], "big") % (2**64 - 1) + 1


@dataclass(frozen=True, slots=True)
class _Entry:
    key: OrderKey
    delta_id: bytes
    op: ControlOp

    @property
    def author(self) -> bytes:
        return self.key[1]


@dataclass(slots=True)
class KeyEpoch:
    """One group key epoch: who created it, where in the order, and its sealed boxes."""

    id: int
    author: bytes
    position: int
    boxes: dict[bytes, bytes] = field(default_factory=dict)

    @property
    def recipients(self) -> frozenset[bytes]:
        return frozenset(self.boxes)


@dataclass(slots=True)
class _Resolved:
    """Everything derived from replaying the ordered control ops."""

    members: dict[bytes, Role]
    former: set[bytes] = field(default_factory=set)
    keep: dict[bytes, int] = field(default_factory=dict)
    epochs: dict[int, KeyEpoch] = field(default_factory=dict)
    last_removal: int = -1
    pins: dict[bytes, bytes] = field(default_factory=dict)  # removed member -> head at keep
    ignored: dict[bytes, str] = field(default_factory=dict)
    author_max_lc: dict[bytes, int] = field(default_factory=dict)


class SpaceState:
    """Deterministic membership/epoch state of one space (see module docstring)."""

    def __init__(self, genesis: Genesis) -> None:
        self.genesis = genesis
        self.space_id = genesis.space_id
        self._entries: list[_Entry] = []
        self._ids: set[bytes] = set()
        self._author_max_seq: dict[bytes, int] = {}
        self._author_seqs: dict[bytes, list[int]] = {}  # seqs of each author's counted ops
        self._over_cap: set[bytes] = set()  # delta ids beyond MAX_CONTROL_OPS_PER_AUTHOR
        #: The creator and everyone a held op ever named admin (grows only, see admission).
        self._named_admins: set[bytes] = {genesis.creator}
        #: Every key some held remove op names (a device's certificate arriving later
        #: changes whether that op applies, so it triggers a replay).
        self._removal_targets: set[bytes] = set()
        self._key_cache: dict[tuple[int, bytes], bytes] = {}
        #: Delegated writers (protocols/delegation.md): never replayed, not control ops.
        self.delegations = delegation.Delegations()
        self._stopped: set[bytes] | None = None  # cache of _stopped_delegates()
        self._r = self._fresh()
        self._dirty = False

    # -- applying ----------------------------------------------------------------------
    def apply(self, env: Envelope) -> None:
        """Add one CONTROL envelope (signature already verified by the caller).

        Idempotent. Raises :class:`WrongSpace` or :class:`BadControlOp` for envelopes that
        can never be valid; ops that are merely not valid *yet* are kept and skipped (see
        :attr:`ignored`), and so are an author's ops beyond its first
        :data:`MAX_CONTROL_OPS_PER_AUTHOR` (``too_many_control_ops``).
        """
        self.apply_many([env])

    def apply_many(self, envs: list[Envelope], *, stored: bool = False) -> None:
        """Apply several CONTROL envelopes with at most one replay (used when loading).

        All or nothing: if one envelope can never be valid, it raises and none is applied.
        ``stored``: they come from this node's own store, checked when they arrived, so
        delegation certificates are not verified again (protocols/delegation.md §5).
        """
        new: dict[bytes, _Entry] = {}
        certs: list[delegation.Certificate] = []
        for env in envs:
            if delegation.is_delegation(env.ct):
                certs.append(delegation.certificate_of(env, self.space_id, verify=not stored))
                continue
            entry = self._entry(env)
            if entry is not None:
                new[entry.delta_id] = entry
        self.delegations.add_many(certs, stored=stored)
        if any(c.subject in self._removal_targets for c in certs):
            self._dirty = True
        if new or self._dirty:
            self._stopped = None
        elif self._stopped is not None:  # only certificates: check just those
            self._stopped |= {c.subject for c in certs if self._is_stopped(c.subject)}
            self._stopped |= self.delegations.displaced
        if not new:
            return
        first = next(iter(new.values()))
        in_order = len(new) == 1 and self._appends_at_end(first)
        for entry in sorted(new.values(), key=lambda e: (e.author, e.key[2])):
            if not self._within_author_cap(entry):
                in_order = False
                continue
            bisect.insort(self._entries, entry, key=lambda e: e.key)
            self._ids.add(entry.delta_id)
            seq = entry.key[2]
            self._author_max_seq[entry.author] = max(self._author_max_seq.get(entry.author, 0), seq)
            op = entry.op
            if isinstance(op, AddMember | SetRole) and op.role == "admin":
                self._named_admins.add(op.member)
            elif isinstance(op, RemoveMember):
                self._removal_targets.add(op.member)
            elif isinstance(op, Revoke):
                self._removal_targets.update(op.pins)
        if in_order and not self._dirty:
            self._step(self._r, len(self._entries) - 1, first)
        else:
            self._dirty = True

    def _within_author_cap(self, entry: _Entry) -> bool:
        """Count ``entry`` among its author's ops if it is one of the author's first
        :data:`MAX_CONTROL_OPS_PER_AUTHOR` by seq; an op of a lower seq arriving later
        displaces the highest one, so the counted ops are the same in any arrival order."""
        seqs = self._author_seqs.setdefault(entry.author, [])
        seq = entry.key[2]
        if len(seqs) < MAX_CONTROL_OPS_PER_AUTHOR:
            bisect.insort(seqs, seq)
            return True
        if seq > seqs[-1]:
            self._over_cap.add(entry.delta_id)
            return False
        dropped_seq = seqs.pop()
        bisect.insort(seqs, seq)
        dropped = next(e for e in self._entries if e.author == entry.author
                       and e.key[2] == dropped_seq)
        self._entries.remove(dropped)
        self._ids.discard(dropped.delta_id)
        self._over_cap.add(dropped.delta_id)
        self._dirty = True
        return True

    def _entry(self, env: Envelope) -> _Entry | None:
        if env.kind is not Kind.CONTROL:
            raise SpaceError("only CONTROL envelopes change membership", reason="not_control")
        if env.space != self.space_id:
            raise WrongSpace("control envelope belongs to another space")
        delta_id = env.delta_id
        if delta_id in self._ids or delta_id in self._over_cap:
            return None
        op = decode_op(env.ct)
        return _Entry(key=(op.lc, env.author, env.seq, delta_id), delta_id=delta_id, op=op)

    def _appends_at_end(self, entry: _Entry) -> bool:
        last_ok = not self._entries or self._entries[-1].key < entry.key
        return last_ok and entry.key[2] > self._author_max_seq.get(entry.author, 0)

    def _fresh(self) -> _Resolved:
        return _Resolved(members={self.genesis.creator: "admin"})

    def _replay(self) -> None:
        r = self._fresh()
        lc_floor = _lc_floors(self._entries)
        for position, entry in enumerate(self._entries):
            self._step(r, position, entry, lc_floor.get(entry.delta_id, 0))
        self._r = r
        self._dirty = False

    @property
    def _res(self) -> _Resolved:
        """The resolution, replayed lazily: a burst of out-of-order ops costs one replay."""
        if self._dirty:
            self._replay()
        return self._r

    def _step(
        self, r: _Resolved, position: int, entry: _Entry, lc_floor: int | None = None
    ) -> None:
        """Apply one op at ``position`` of the total order to ``r`` (or record why not)."""
        author, lc = entry.author, entry.op.lc
        floor = r.author_max_lc.get(author, 0) if lc_floor is None else lc_floor
        r.author_max_lc[author] = max(r.author_max_lc.get(author, 0), lc)
        reason = self._invalid(r, entry, floor)
        if reason is not None:
            r.ignored[entry.delta_id] = reason
            return
        op = entry.op
        if isinstance(op, EpochOp):
            eid = epoch_id_for(entry.delta_id)
            r.epochs[eid] = KeyEpoch(id=eid, author=author, position=position, boxes=dict(op.keys))
        elif isinstance(op, GrantOp):
            boxes = r.epochs[op.epoch].boxes
            for pub, box in op.keys.items():
                boxes.setdefault(pub, box)
        elif isinstance(op, AddMember):
            r.members[op.member] = op.role
            r.former.discard(op.member)
            r.keep.pop(op.member, None)
            r.pins.pop(op.member, None)
        elif isinstance(op, RemoveMember):
            del r.members[op.member]
            r.former.add(op.member)
            r.keep[op.member] = op.keep
            if op.head is not None:
                r.pins[op.member] = op.head
            r.last_removal = position
        elif isinstance(op, Revoke):
            # Delegates hold no key box of their own: no rotation (delegation.md §4a).
            for pub, (keep, head) in op.pins.items():
                if pub in r.members or pub in r.former:
                    continue  # a member is removed, not revoked; the first revocation wins
                r.former.add(pub)
                r.keep[pub] = keep
                if head is not None:
                    r.pins[pub] = head
        else:
            r.members[op.member] = op.role

    def _invalid(self, r: _Resolved, entry: _Entry, lc_floor: int) -> str | None:
        """Why ``entry`` is not valid at this point of the replay, or None."""
        op = entry.op
        if op.lc <= lc_floor:
            return "lc_not_increasing"
        if entry.author in r.former and entry.key[2] > r.keep.get(entry.author, 0):
            return "removed_author"
        principal = self.principal(entry.author)
        if principal != entry.author and principal in r.former:
            return "removed_author"
        if isinstance(op, Revoke):  # an admin, or the issuer of every key it names
            if r.members.get(principal) == "admin" or (
                    principal in r.members and self._issued_all(principal, op)):
                return None
            return "not_admin"
        if r.members.get(principal) != "admin":
            return "not_admin"
        if isinstance(op, EpochOp):
            return "epoch_collision" if epoch_id_for(entry.delta_id) in r.epochs else None
        if isinstance(op, GrantOp):
            return None if op.epoch in r.epochs else "unknown_epoch"
        if self.genesis.kind == "personal":
            return "personal_space"
        return _membership_problem(r.members, op)

    # -- derived views -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.genesis.name

    @property
    def kind(self) -> SpaceKind:
        return self.genesis.kind

    @property
    def members(self) -> dict[bytes, str]:
        """Current members: Ed25519 pub -> ``"admin"`` | ``"member"``."""
        return dict(self._res.members)

    @property
    def admins(self) -> frozenset[bytes]:
        return frozenset(p for p, role in self._res.members.items() if role == "admin")

    @property
    def former_members(self) -> frozenset[bytes]:
        return frozenset(self._res.former)

    @property
    def epochs(self) -> dict[int, KeyEpoch]:
        return dict(self._res.epochs)

    @property
    def ignored(self) -> dict[bytes, str]:
        """delta_id -> reason for control ops skipped in the current resolution."""
        return {**dict.fromkeys(self._over_cap, "too_many_control_ops"), **self._res.ignored}

    @property
    def control_count(self) -> int:
        return len(self._entries)

    def kept_seq(self, pub: bytes) -> int:
        """Highest seq of a removed member that stays valid (0 if none or not removed)."""
        return self._res.keep.get(pub, 0) if pub in self._res.former else 0

    @property
    def has_pins(self) -> bool:
        """Whether some removed member's chain is pinned (stores check those chains)."""
        return bool(self._res.pins)

    def pinned_author(self, delta_id: bytes) -> bytes | None:
        """The removed member whose removal pins ``delta_id`` as its head, or None."""
        r = self._res
        return next((p for p, head in r.pins.items() if head == delta_id and p in r.former),
                    None)

    def pinned_head(self, pub: bytes) -> tuple[int, bytes] | None:
        """``(keep, delta_id)`` of a removed member's last valid envelope, or None: its
        envelopes up to ``keep`` are valid only on the chain that ends there (§4.3)."""
        r = self._res
        head = r.pins.get(pub) if pub in r.former else None
        return None if head is None else (r.keep[pub], head)

    def admits(self, pub: bytes) -> bool:
        """Whether the control log knows ``pub`` at all (member, former member, named
        admin, or delegated writer): its pending envelopes get the room reserved for
        authors the log admits, strangers share a small pool (store pending bounds)."""
        r = self._res
        return (pub in r.members or pub in r.former or pub in self._named_admins
                or self.delegations.may_write(pub, r.members))

    def may_sync(self, pub: bytes) -> bool:
        """Whether a peer with identity ``pub`` may sync this space: a current member or
        a key a member delegated (protocols/sync.md §3: the node's ``authorize`` hook).
        Removed members and strangers get nothing, and can push nothing."""
        r = self._res
        return pub in r.members or (pub not in r.former  # a revoked delegate: no more
                                    and self.delegations.may_write(pub, r.members))

    def admission(self, env: Envelope) -> str | None:
        """THE decision "may this author write this envelope here, now" (spaces.md §4.5).

        ``env`` is authentic and extends its author's chain. None: it may be stored (a
        removed member's envelope up to ``keep`` only on the pinned chain, which the
        caller checks with :meth:`pinned_head`). Otherwise the reason:

        * ``not_admin``: a CONTROL envelope whose author no held op ever named admin —
          not stored (it could never take effect unless such an op arrives), held pending;
        * ``not_member``: a DATA envelope of an author the log does not know — pending;
        * ``removed_author``: beyond the ``keep`` of the author's removal — refused.

        Delegations (protocols/delegation.md) and device chains extend this one function.
        """
        author, r = env.author, self._res
        if author in r.former and author not in r.members and env.seq > r.keep.get(author, 0):
            return "removed_author"
        if env.kind is Kind.CONTROL:
            named = self._named_admins
            if author not in named and self.principal(author) not in named:
                if env.seq == 1 and delegation.is_delegation(env.ct):
                    # Any key may open its chain with a certificate whose issuer is a
                    # member; strangers' certificates wait in the bounded pending pool
                    # instead of filling the space's delegations (protocols/delegation.md §3).
                    return self._certificate_admission(env, r)
                return self._revocation_admission(env, r)
        elif (author not in r.members and author not in r.former
              and not self.delegations.may_write(author, r.members)):
            return "not_member"
        return None

    def _certificate_admission(self, env: Envelope, r: _Resolved) -> str | None:
        """A certificate is stored while its issuer has the role its kind needs (so it can
        never be stored only to be cut), or when a revocation pinned its subject."""
        try:
            cert = delegation.decode(env.ct, verify=False)
        except delegation.BadDelegation:
            return None  # applying it refuses it for good
        if env.author in r.former:  # pinned by a revocation (seq 1 <= keep checked above)
            return None
        role = r.members.get(cert.issuer)
        qualifies = role == "admin" if cert.kind == "custodial" else role is not None
        return None if qualifies else "not_member"

    def _revocation_admission(self, env: Envelope, r: _Resolved) -> str | None:
        """A member that no op named admin may store one kind of control op: a revocation
        of keys it certified, while one of them is not revoked yet (bounded by its
        certificates; delegation.md §4a). Anything else from it is ``not_admin``."""
        principal = self.principal(env.author)
        if principal not in r.members or not delegation.may_be_revocation(env.ct):
            return "not_admin"
        try:
            op = decode_op(env.ct)
        except BadControlOp:
            return None  # applying it refuses it for good
        if (isinstance(op, Revoke) and self._issued_all(principal, op)
                and any(pub not in r.former for pub in op.pins)):
            return None
        return "not_admin"

    def _issued_all(self, principal: bytes, op: Revoke) -> bool:
        certs = [self.delegations.get(pub) for pub in op.pins]
        return all(c is not None and c.issuer == principal for c in certs)

    def _is_stopped(self, pub: bytes) -> bool:
        r = self._res
        return (pub not in r.members and pub not in r.former
                and not self.delegations.may_write(pub, r.members))

    @property
    def chains_to_cut(self) -> frozenset[bytes]:
        """Authors whose stored chains a store cuts back to :meth:`kept_seq` (0 unless
        pinned): removed members, revoked delegates, and delegates whose certificate no
        longer lets them write (issuer demoted or removed, or pushed out of its issuer's
        device count) and that no revocation pinned (delegation.md §4c)."""
        r = self._res
        if self._stopped is None:
            self._stopped = {pub for pub in self.delegations.subjects()
                             if self._is_stopped(pub)} | self.delegations.displaced
        return frozenset(r.former) | frozenset(self._stopped)

    def is_member(self, pub: bytes) -> bool:
        return pub in self._res.members

    def principal(self, author: bytes) -> bytes:
        """The identity an author writes for: the issuer of its ``device`` certificate
        (protocols/delta.md §10: a device acts with its identity's role, control ops
        included), else the author itself. Custodial delegates stay themselves."""
        cert = self.delegations.get(author)
        return cert.issuer if cert is not None and cert.kind == "device" else author

    def is_admin(self, pub: bytes) -> bool:
        return self._res.members.get(pub) == "admin"

    def next_lc(self) -> int:
        """The ``lc`` for a new op written by this node: one above every op it has seen."""
        return max((e.op.lc for e in self._entries), default=0) + 1

    @property
    def current_epoch(self) -> int:
        """The epoch writers must use, or 0 if none is safe (rotation needed)."""
        members = self._res.members.keys()
        best: KeyEpoch | None = None
        for ep in self._res.epochs.values():
            safe = ep.position > self._res.last_removal and ep.recipients <= members
            if safe and (best is None or ep.position > best.position):
                best = ep
        return 0 if best is None else best.id

    def needs_rotation(self) -> bool:
        """True when no epoch is safe to write to: an admin's node must start a new one."""
        return self.current_epoch == 0

    def members_missing_key(self) -> frozenset[bytes]:
        """Members that hold no box for the current epoch (an admin should grant it)."""
        current = self._res.epochs.get(self.current_epoch)
        held = current.recipients if current is not None else frozenset()
        return frozenset(self._res.members.keys() - held)

    def epoch_key(self, epoch: int, identity: KeyHolder) -> bytes | None:
        """The group key of ``epoch`` sealed to ``identity``, or None (cached once opened)."""
        pub = identity.public_key
        if epoch not in self._res.epochs:
            return None
        cached = self._key_cache.get((epoch, pub))
        if cached is not None:
            return cached
        ep = self._res.epochs.get(epoch)
        box = ep.boxes.get(pub) if ep is not None else None
        if box is None:
            return None
        key = open_group_key(identity, self.space_id, box)
        if key is not None:
            self._key_cache[(epoch, pub)] = key
        return key

    # -- checks for the store and relays -------------------------------------------------
    def check_data_author(self, env: Envelope) -> None:
        """Raise unless ``env``'s author may write it and its epoch is known.

        Authors are current members, or removed members for envelopes up to the ``keep``
        seq of their removal (written before it, so every node keeps the same chains), or
        keys delegated by a member (protocols/delegation.md; while the issuer qualifies).
        :class:`RemovedAuthor` / :class:`NotMember` are final for the current membership;
        :class:`UnknownEpoch` usually means the epoch op has not arrived yet (keep pending).
        """
        if env.space != self.space_id:
            raise WrongSpace("envelope belongs to another space")
        reason = self.admission(env)
        if reason == "removed_author":
            raise RemovedAuthor("author was removed from the space before this envelope")
        if reason is not None:
            raise NotMember("author is not a member of the space")
        if env.epoch not in self._res.epochs:
            raise UnknownEpoch(f"epoch {env.epoch} is not known in this space")

    def check_control_author(self, env: Envelope) -> None:
        """Raise :class:`NotAdmin` unless the author is an admin under the current state.

        A quick filter for relays; the authoritative decision is the replay in
        :meth:`apply`, where an op from a not-yet-admin may become valid later.
        """
        if env.space != self.space_id:
            raise WrongSpace("envelope belongs to another space")
        if env.kind is not Kind.CONTROL:
            raise BadControlOp("not a CONTROL envelope")
        if delegation.is_delegation(env.ct):  # any key may open its chain with a certificate
            delegation.certificate_of(env, self.space_id)
            return
        if not self.is_admin(self.principal(env.author)):
            raise NotAdmin("only admins may change membership or keys")


def _membership_problem(members: dict[bytes, Role], op: ControlOp) -> str | None:
    """Why a membership op cannot apply to ``members`` (None if it can)."""
    if isinstance(op, AddMember):
        if op.member in members:
            return "already_member"
        return "too_many_members" if len(members) >= MAX_MEMBERS else None
    assert isinstance(op, RemoveMember | SetRole)
    if op.member not in members:
        return "not_member"
    last_admin = members[op.member] == "admin" and sum(r == "admin" for r in members.values()) == 1
    demotes = isinstance(op, RemoveMember) or op.role != "admin"
    return "last_admin" if last_admin and demotes else None


def _lc_floors(entries: list[_Entry]) -> dict[bytes, int]:
    """delta_id -> highest lc among the same author's ops with a lower seq.

    An op must carry a higher ``lc`` than everything its author wrote before it, which
    stops a removed admin from back-dating ops before its own earlier ones.
    """
    by_author: dict[bytes, list[_Entry]] = {}
    for e in entries:
        by_author.setdefault(e.author, []).append(e)
    floors: dict[bytes, int] = {}
    for chain in by_author.values():
        running = 0
        for e in sorted(chain, key=lambda x: x.key[2]):
            floors[e.delta_id] = running
            running = max(running, e.op.lc)
    return floors

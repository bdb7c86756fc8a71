"""Typed errors of the spaces layer (genesis, control log, epochs, invites).

Every class carries a stable ``reason`` (metric label, ingest rejection reason) so the
store and relays can report *why* an envelope or an invite was refused.
"""

from __future__ import annotations

from mycelium.errors import MyceliumError


class SpaceError(MyceliumError):
    """Base class for everything the spaces layer refuses."""

    reason = "space_error"


class BadGenesis(SpaceError):
    """Genesis bytes are malformed, non-canonical, or not signed by the stated creator."""

    reason = "bad_genesis"


class BadControlOp(SpaceError):
    """A CONTROL payload is not a well-formed control operation (permanent rejection)."""

    reason = "bad_control_op"


class WrongSpace(SpaceError):
    """An envelope names a different space than the state it is applied to."""

    reason = "wrong_space"


class NotMember(SpaceError):
    """The author of a DATA envelope is not (and never was) a member of the space."""

    reason = "not_member"


class RemovedAuthor(NotMember):
    """The author was a member once but has been removed."""

    reason = "removed_author"


class NotAdmin(SpaceError):
    """A membership change was attempted by someone who is not an admin."""

    reason = "not_admin"


class UnknownEpoch(SpaceError):
    """A DATA envelope uses an epoch no known control op created (maybe not received yet)."""

    reason = "unknown_epoch"


class NoEpochKey(SpaceError):
    """This node holds no group key it may use to write (e.g. rotation pending after a removal)."""

    reason = "no_epoch_key"


class BadInvite(SpaceError):
    """An invite code cannot be decoded or does not describe a valid space."""

    reason = "bad_invite"


class InviteTooLarge(BadInvite):
    """The control log is too large to fit in an invite code."""

    reason = "invite_too_large"


class MembershipError(SpaceError):
    """A requested membership change makes no sense (unknown member, last admin, …)."""

    reason = "bad_membership_change"

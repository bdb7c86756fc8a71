"""What the relay refuses, with the HTTP status and the named reason (protocols/relay.md §7).

Every refusal is a :class:`RelayError` whose ``reason`` is sent to the client as is: in
the JSON body of a REST error, in the ``err`` message of the WebSocket pre-session phase,
or in the sync session's ``err`` frame. ``status`` is the HTTP status used over REST (and
the WebSocket close code is ``4000 + status``).
"""

from __future__ import annotations

from mycelium.errors import MyceliumError


class RelayError(MyceliumError):
    """Base class: a refusal with an HTTP status. ``retry_after`` (seconds) for 429/503."""

    reason = "relay_error"
    status = 400

    def __init__(self, message: str, *, reason: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class BadRequest(RelayError):
    reason = "bad_request"
    status = 400


class Unauthenticated(RelayError):
    """No, or no valid, proof of the client's DID (the auth reasons of identity/auth.py)."""

    reason = "unauthenticated"
    status = 401


class Forbidden(RelayError):
    """Authenticated, but not a member of the space (or not the owner of a personal space)."""

    reason = "not_member"
    status = 403


class NotFound(RelayError):
    reason = "unknown_space"
    status = 404


class TooLarge(RelayError):
    reason = "too_large"
    status = 413


class Limited(RelayError):
    """A rate or quota refusal: retry later (``retry_after``), nothing was stored."""

    reason = "rate_limited"
    status = 429


class Unavailable(RelayError):
    """Too many concurrent sessions: try again later."""

    reason = "too_many_sessions"
    status = 503


class RelayIdentityMismatch(MyceliumError):
    """Client side: the relay proved a DID other than the pinned / first-seen one."""

    reason = "relay_identity_changed"

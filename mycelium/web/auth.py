"""Who may use the web app: one-time links, device sessions and CSRF tokens (sans-IO).

The web app is passwordless (issue 14). The node prints a *login link* carrying a one-time
token; opening it creates a *session* for that browser. A signed-in browser can mint a
*pairing link* (shown as a QR code) for another device of the household; it works like a
login link, once. Sessions are listed and revoked from the app.

::

    node / signed-in page          WebAuth                       browser
    issue_link(now, purpose) ----> token (kept hashed) ---------> GET /login?token=…
                                   redeem(token, now, label) <--- (one use, before expiry)
                                   -> Session(id, csrf) --------> cookie (HttpOnly, Strict)
    every request:                 session(id, now) -> Session | None (expiry, revoked)
    every POST:                    check_csrf(session, token) -> bool

Everything here is pure: time comes in as ``now`` (seconds), randomness from the ``rng``
given at construction, and nothing touches a socket, so the rules are tested directly
(tests/web/test_auth.py) and the Starlette driver (:mod:`mycelium.web.app`) stays thin.
Only hashes of link tokens and session ids are kept, so a dump of this object (or the
sessions file the server keeps so that a restart does not sign every device out) does not
let anyone sign in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from mycelium.errors import MyceliumError

LinkPurpose = Literal["login", "pair"]

#: A login link printed by the node, or a pairing QR code, is valid this long (seconds).
LINK_TTL_S = 10 * 60.0
#: A session ends after this long without use, and in any case after SESSION_MAX_S.
SESSION_IDLE_S = 14 * 24 * 3600.0
SESSION_MAX_S = 90 * 24 * 3600.0
#: Bounds so a flood of link requests or sign-ins cannot grow memory without limit.
MAX_LINKS = 64
MAX_SESSIONS = 64
MAX_LABEL = 80
TOKEN_BYTES = 32


class AuthError(MyceliumError):
    reason = "unauthorized"


class BadLink(AuthError):
    """A link token that is unknown, already used or expired (one reason for all three, so
    the answer does not tell a guesser which)."""

    reason = "bad_link"


@dataclass(slots=True)
class Session:
    """One signed-in browser. ``id`` goes in the cookie (known only when the session is
    made; afterwards only its hash ``key`` is kept), ``csrf`` into every form."""

    key: str
    csrf: str
    label: str
    created: float
    last_seen: float
    via: LinkPurpose
    id: str = ""

    def record(self) -> dict[str, Any]:
        """What :meth:`WebAuth.snapshot` keeps of this session (no cookie value)."""
        return {"key": self.key, "csrf": self.csrf, "label": self.label,
                "created": self.created, "last_seen": self.last_seen, "via": self.via}


@dataclass(slots=True)
class _Link:
    purpose: LinkPurpose
    expires: float


@dataclass
class WebAuth:
    """Links and sessions of one node's web app (see module docstring)."""

    rng: Callable[[int], bytes] = os.urandom
    #: Bumped whenever a session is made or revoked (the driver saves then).
    changes: int = 0
    _links: dict[str, _Link] = field(default_factory=dict)
    _sessions: dict[str, Session] = field(default_factory=dict)

    # -- links ----------------------------------------------------------------------
    def issue_link(self, now: float, purpose: LinkPurpose = "login") -> str:
        """A fresh one-time token for a login (node) or pairing (signed-in page) link."""
        self._expire(now)
        if len(self._links) >= MAX_LINKS:
            oldest = min(self._links, key=lambda k: self._links[k].expires)
            del self._links[oldest]
        token = self.rng(TOKEN_BYTES).hex()
        self._links[_digest(token)] = _Link(purpose, now + LINK_TTL_S)
        return token

    def redeem(self, token: str, now: float, label: str) -> Session:
        """Spend a link token: a new session, or :class:`BadLink`. A token works once."""
        self._expire(now)
        link = self._links.pop(_digest(token), None)
        if link is None:
            raise BadLink("this sign-in link is unknown, used or expired")
        if len(self._sessions) >= MAX_SESSIONS:
            idle = min(self._sessions.values(), key=lambda s: s.last_seen)
            del self._sessions[idle.key]
        session_id = self.rng(TOKEN_BYTES).hex()
        session = Session(key=_digest(session_id), csrf=self.rng(TOKEN_BYTES).hex(),
                          label=label[:MAX_LABEL] or "browser", created=now, last_seen=now,
                          via=link.purpose, id=session_id)
        self._sessions[session.key] = session
        self.changes += 1
        return session

    # -- sessions -------------------------------------------------------------------
    def session(self, session_id: str | None, now: float) -> Session | None:
        """The live session behind a cookie value (its use noted), or None."""
        if not session_id:
            return None
        key = _digest(session_id)
        found = self._sessions.get(key)
        if found is None:
            return None
        if _expired(found, now):
            del self._sessions[key]
            return None
        found.last_seen = now
        return found

    def sessions(self, now: float) -> list[Session]:
        """Live sessions, oldest first (for the devices page)."""
        self._expire(now)
        return sorted(self._sessions.values(), key=lambda s: s.created)

    def revoke(self, key: str) -> bool:
        """End the session with this :attr:`Session.key`; False if there was none."""
        gone = self._sessions.pop(key, None) is not None
        self.changes += gone
        return gone

    # -- persistence (the driver writes this to a 0600 file so a restart keeps devices) ---
    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Live sessions as plain data: hashes of the cookies, never the cookies."""
        return [s.record() for s in self.sessions(now)]

    def restore(self, records: Any, now: float) -> int:
        """Load sessions from :meth:`snapshot` data, skipping malformed or expired ones;
        returns how many were restored."""
        if not isinstance(records, list):
            return 0
        for rec in records[:MAX_SESSIONS]:
            try:
                session = Session(key=str(rec["key"]), csrf=str(rec["csrf"]),
                                  label=str(rec["label"])[:MAX_LABEL],
                                  created=float(rec["created"]),
                                  last_seen=float(rec["last_seen"]),
                                  via="pair" if rec.get("via") == "pair" else "login")
            except (KeyError, TypeError, ValueError):
                continue
            if len(session.key) == 64 and len(session.csrf) == 64 and not _expired(session, now):
                self._sessions[session.key] = session
        return len(self._sessions)

    @staticmethod
    def check_csrf(session: Session, token: str | None) -> bool:
        """True only for this session's CSRF token (constant-time comparison)."""
        return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())

    def _expire(self, now: float) -> None:
        self._links = {k: v for k, v in self._links.items() if v.expires > now}
        self._sessions = {k: s for k, s in self._sessions.items() if not _expired(s, now)}


def _expired(session: Session, now: float) -> bool:
    return now - session.last_seen > SESSION_IDLE_S or now - session.created > SESSION_MAX_S


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()

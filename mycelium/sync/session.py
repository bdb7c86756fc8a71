"""The sans-IO sync session: one peer, one ordered byte stream (``protocols/sync.md``).

Bring your own I/O (the h11/aioquic shape): feed what arrives with
:meth:`SyncSession.receive_data` (stream bytes) or :meth:`SyncSession.receive_frame`
(one frame payload), advance time with :meth:`SyncSession.tick`, take what to send from
:meth:`SyncSession.data_to_send` / :meth:`SyncSession.frames_to_send`, and read what
happened from :meth:`SyncSession.next_event`. The session never reads a clock, never
touches a socket and never spawns anything: time is the ``now`` argument, randomness
(the HELLO salt) can be injected, so simnet replays a run exactly.

Exchange (both sides run the same machine; the initiator speaks first)::

    initiator                               responder
    HELLO(salt_i, offers, credit) ------->
    VV(s, vector) for every offer ------->
                                   <------- HELLO(salt_r, answers, credit)
                                   <------- VV(s, vector) for every shared offer
                                   <------- ENV(s, batch)... DONE(s)   (what I lacks)
    ENV(s, batch)... DONE(s)  ----------->                             (what R lacks)
    ACK(credit) / LIVE(s, batch) / WANT(s, vector) both ways, until BYE or ERR

The session keeps, per shared space, a *view* of what the peer holds: its announced
vector, advanced by everything sent to it and received from it. Batches are drawn from
``store.envelopes_since(space, view)``, so the session never sends what the peer has,
including never echoing back an envelope the peer itself sent (no separate echo filter).

Lazy push (``SyncLimits.lazy_push``, negotiated with the HELLO cap ``lazy``; sync.md
§7.5): a live batch that was mostly duplicates makes the receiver send PRUNE, after which
the link carries HAVE summaries instead of envelopes (both ways) until a WANT grafts it
again; what a HAVE announced and does not arrive within ``graft_timeout`` is pulled with
WANT. Timers run through :meth:`SyncSession.next_deadline` / :meth:`lazy_deadline`.

States (:class:`SessionState`): HANDSHAKE -> RECONCILING <-> LIVE -> CLOSED; see
``_TRANSITIONS`` and ``_ALLOWED``. A message not allowed in the current state, a malformed
frame or a broken limit ends the session with an ERR frame and a :class:`SessionError`.
"""

from __future__ import annotations

import math
import os
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from mycelium.codec.frames import FrameDecoder, encode_frame
from mycelium.errors import MyceliumError
from mycelium.log.envelope import MAX_ENVELOPE_BYTES
from mycelium.sync import offers as offer_tokens
from mycelium.sync.cache import CachedRejection, VerifyCache
from mycelium.sync.messages import (
    CAP_HEADS,
    CAP_LAZY,
    DEFAULT_LIMITS,
    HEAD_PREFIX_BYTES,
    SALT_BYTES,
    Ack,
    Bye,
    Done,
    Envelopes,
    Error,
    Have,
    Heads,
    Hello,
    Live,
    Message,
    MessageLimits,
    ProtocolError,
    Prune,
    Vector,
    Want,
    decode_message,
    encode_message,
)
from mycelium.sync.ports import DeltaStore, IngestResult, VersionVector

#: Ingest rejections that only a faulty or malicious peer can cause (an honest peer
#: verified every envelope before storing it, and only sends from its store). One of
#: them ends the session (``protocols/sync.md`` §6). Others (``not_member``, ``fork``,
#: ``unknown_epoch``...) can come from honest peers with different knowledge: counted only.
FATAL_REJECTIONS = frozenset({
    "bad_signature", "bad_envelope", "bad_cbor", "non_canonical", "unknown_version",
    "oversized", "wrong_space", "seq_too_large",
})

#: (space id, remote peer id) -> may this peer sync this space? (optional policy hook)
Authorize = Callable[[bytes, bytes], bool]


class TakeSince(Protocol):
    """``store.take_since(space, view, limit=, max_bytes=) -> (batch, bytes, blocked)``:
    the next batch the peer lacks by ``view`` within the limits, advancing ``view`` over
    it; ``blocked``: nothing fits because the next envelope exceeds ``max_bytes``."""

    def __call__(self, space: bytes, view: VersionVector, *, limit: int,
                 max_bytes: int) -> tuple[list[bytes], int, bool]: ...


class SessionState(Enum):
    HANDSHAKE = "handshake"
    RECONCILING = "reconciling"
    LIVE = "live"
    CLOSED = "closed"


#: Messages a peer may send in each state (anything else: ``unexpected_message``).
_ALLOWED: dict[SessionState, frozenset[type]] = {
    SessionState.HANDSHAKE: frozenset({Hello, Bye, Error}),
    SessionState.RECONCILING: frozenset({Vector, Want, Envelopes, Live, Ack, Done, Bye, Error,
                                         Have, Prune, Heads}),
    SessionState.LIVE: frozenset({Vector, Want, Envelopes, Live, Ack, Done, Bye, Error,
                                  Have, Prune, Heads}),
    SessionState.CLOSED: frozenset(),
}

#: Legal state changes; anything else is a bug in this module (AssertionError).
_TRANSITIONS: frozenset[tuple[SessionState, SessionState]] = frozenset({
    (SessionState.HANDSHAKE, SessionState.RECONCILING),  # HELLO accepted
    (SessionState.HANDSHAKE, SessionState.LIVE),         # HELLO accepted, nothing shared
    (SessionState.RECONCILING, SessionState.LIVE),       # every shared space done both ways
    (SessionState.LIVE, SessionState.RECONCILING),       # WANT/VV received or sent again
    (SessionState.HANDSHAKE, SessionState.CLOSED),
    (SessionState.RECONCILING, SessionState.CLOSED),
    (SessionState.LIVE, SessionState.CLOSED),
})


@dataclass(frozen=True, slots=True)
class SyncLimits:
    """Local policy. ``messages`` bounds what we accept; the rest bounds what we do."""

    messages: MessageLimits = DEFAULT_LIMITS
    #: Largest batch we send (count, bytes); must fit the peer's message limits.
    batch_envelopes: int = 64
    batch_bytes: int = 256 * 1024
    #: Credit we grant the peer in HELLO (and keep topping up): envelopes, bytes in flight.
    #: The envelope count is high enough that the bytes bind for envelopes of 256 B and
    #: up: the first flight carries 1 MiB, not 256 small envelopes (~80 KB), which saves
    #: two round trips of window growth on a catch-up (issue 12; sync.md §7.3). What a
    #: peer may send unasked stays 1 MiB, as before.
    credit_envelopes: int = 4096
    credit_bytes: int = 1 << 20
    handshake_timeout: float = 10.0
    idle_timeout: float = 120.0
    keepalive_interval: float = 30.0
    #: WANT rounds per space and session before we settle for what we got (we also
    #: settle as soon as a round brought nothing new).
    max_want_rounds: int = 3
    #: Lazy push (``protocols/sync.md`` §7.5), used when both HELLOs carry the ``lazy``
    #: cap: a peer whose live pushes bring only duplicates is sent PRUNE; we then send
    #: it HAVE summaries (at most every ``have_interval`` s) instead of envelopes, and
    #: pull with WANT what a HAVE announced but did not reach us within ``graft_timeout``.
    lazy_push: bool = False
    prune_after: int = 1
    have_interval: float = 0.5
    graft_timeout: float = 1.0
    #: Receive window (sync.md §7.3): while the peer keeps using up the credit we grant
    #: during reconciliation, each credit return multiplies the window by
    #: ``credit_growth``, up to these ceilings. Bytes in flight thus adapt to the link's
    #: bandwidth-delay product instead of a fixed count of envelopes per round trip.
    max_credit_envelopes: int = 32_768
    max_credit_bytes: int = 8 << 20
    credit_growth: int = 4
    #: Local ceilings on what we send, whatever credit the peer grants (sync.md §6.1):
    #: bytes sent and not yet returned by an ACK, and bytes encoded per ``data_to_send``
    #: (the rest is produced as the transport drains).
    max_inflight_bytes: int = 8 << 20
    max_out_bytes: int = 1 << 20
    #: WANT/VV for a space that do not advance what the peer declared holding (of what
    #: we hold) are tolerated this many times in a row per space; one more is
    #: ``stale_want``.
    stale_wants: int = 3
    #: Envelopes sent again below what we believed the peer held (after its WANT/VV):
    #: at most ``resend_bytes`` plus ``resend_factor`` times what we sent fresh, per
    #: session; beyond that ``want_flood``.
    resend_bytes: int = 1 << 20
    resend_factor: float = 1.0


# -- events -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class SpacesShared:
    """Handshake done; these spaces (ids, local knowledge) are shared with the peer."""

    spaces: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class EnvelopesIngested:
    """A batch from the peer went to the store. ``accepted`` are the newly stored raw
    envelopes of that batch, ready to be pushed to other peers (``push_local``).
    ``result.accepted`` may hold more ids: envelopes the store had pending and released
    because this batch filled a gap; call ``notify_changed`` on other sessions then."""

    space: bytes
    result: IngestResult
    accepted: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CaughtUp:
    """The peer has sent all it had for ``space``. ``complete`` is False when we still
    lack envelopes it announced after ``max_want_rounds`` WANTs (e.g. held pending)."""

    space: bytes
    complete: bool = True


@dataclass(frozen=True, slots=True)
class SessionError:
    """The session failed. ``remote`` is True when the peer broke the rules or reported
    the error, False for local causes (timeouts)."""

    reason: str
    message: str
    remote: bool


@dataclass(frozen=True, slots=True)
class Closed:
    """The session is over (after BYE, ERR, timeout or :meth:`SyncSession.close`)."""

    reason: str


@dataclass(frozen=True, slots=True)
class ForkDetected:
    """The peer holds a different chain of ``author`` than this node, behind the same
    ``seq`` (sync.md §6a): the author signed two chains. Reported, never merged."""

    space: bytes
    author: bytes
    seq: int


Event = SpacesShared | EnvelopesIngested | CaughtUp | SessionError | Closed | ForkDetected


@dataclass(slots=True)
class _Shared:
    """Per shared space bookkeeping. ``index`` is the space's handle on the wire."""

    index: int
    space: bytes
    view: VersionVector | None = None  # what the peer holds, as far as we know
    announced: VersionVector = field(default_factory=dict)  # its vector + what it sent us
    sent_done: bool = False  # we sent DONE since the last VV/WANT from the peer
    caught_up: bool = False  # it sent DONE and we are satisfied
    dirty: bool = False  # live mode: pushes could not go out directly, pump from the store
    live_buf: list[bytes] = field(default_factory=list)
    want_rounds: int = 0
    last_want: VersionVector | None = None
    # hostile-peer accounting (sync.md §6.1)
    declared: VersionVector = field(default_factory=dict)  # max of its VV/WANTs, capped
    stale: int = 0  # its WANT/VV that did not advance ``declared``
    resend_hwm: VersionVector | None = None  # seqs below this are resends
    # lazy push (cap "lazy")
    eager: bool = True  # we push envelopes (False once this link is pruned, until a WANT)
    have_due: bool = False  # we hold envelopes the peer may lack: announce them
    next_have: float = 0.0
    told: VersionVector = field(default_factory=dict)  # what our HAVEs announced
    graft_need: VersionVector = field(default_factory=dict)  # announced, not yet held
    graft_at: float = math.inf
    graft_next: VersionVector = field(default_factory=dict)  # announced while armed
    graft_next_at: float = math.inf
    dup_streak: int = 0  # consecutive live batches that were mostly duplicates


@dataclass(slots=True)
class SessionStats:
    frames_in: int = 0
    frames_out: int = 0
    envelopes_in: int = 0
    envelopes_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duplicates_in: int = 0
    rejected_in: dict[str, int] = field(default_factory=dict)
    prunes_out: int = 0
    forks: int = 0  # ForkDetected events (sync.md §6a)
    haves_out: int = 0
    grafts_out: int = 0
    resent_bytes: int = 0
    stale_wants_in: int = 0


class SyncSession:
    """Sync with one peer over one ordered, reliable stream. See the module docstring.

    ``local_id``/``remote_id``: the authenticated transport identities (the 32-byte
    Ed25519 public keys), which bind the space offer tokens to this pair of peers.
    ``salt``: 16 random bytes (injected for determinism; default ``os.urandom``).
    ``cache``: a (possibly shared) :class:`VerifyCache` used to read envelope headers.
    ``authorize``: optional policy; spaces it refuses for this peer are neither offered
    nor accepted.
    """

    def __init__(
        self,
        store: DeltaStore,
        *,
        local_id: bytes,
        remote_id: bytes,
        initiator: bool,
        now: float,
        limits: SyncLimits | None = None,
        salt: bytes | None = None,
        cache: VerifyCache | None = None,
        authorize: Authorize | None = None,
    ) -> None:
        self.store = store
        self.local_id = local_id
        self.remote_id = remote_id
        self.initiator = initiator
        self.limits = limits if limits is not None else SyncLimits()
        self.cache = cache if cache is not None else VerifyCache(max_entries=65_536)
        self.authorize = authorize
        self.salt = salt if salt is not None else os.urandom(SALT_BYTES)
        if len(self.salt) != SALT_BYTES:
            raise ValueError(f"salt must be {SALT_BYTES} bytes")
        lim, proto = self.limits, DEFAULT_LIMITS
        if min(lim.credit_bytes, lim.batch_bytes) < MAX_ENVELOPE_BYTES:
            raise ValueError("credit_bytes and batch_bytes must allow one maximal envelope")
        if lim.batch_bytes > proto.max_batch_bytes or not (
                0 < lim.batch_envelopes <= proto.max_batch_envelopes):
            raise ValueError("batches must stay within the protocol maxima (sync.md §5)")
        if lim.credit_envelopes < 1:
            raise ValueError("credit_envelopes must be >= 1")
        if (lim.max_credit_envelopes < lim.credit_envelopes
                or lim.max_credit_bytes < lim.credit_bytes or lim.credit_growth < 1):
            raise ValueError("the credit ceilings must be at least the initial credit")
        if min(lim.max_inflight_bytes, lim.max_out_bytes) < MAX_ENVELOPE_BYTES:
            raise ValueError("max_inflight_bytes and max_out_bytes must allow one maximal "
                             "envelope")
        self.state = SessionState.HANDSHAKE
        self.stats = SessionStats()
        self._decoder = FrameDecoder(max_frame=self.limits.messages.max_frame)
        self._out: list[bytes] = []
        self._events: deque[Event] = deque()
        self._started = now
        self._now = now
        self._last_recv = now
        self._last_send = now
        self._offered: list[bytes] = []  # initiator: space ids in offer order
        self._offered_count = 0  # responder: how many offers the initiator made
        self._shared: dict[int, _Shared] = {}
        self._by_space: dict[bytes, _Shared] = {}
        # Flow control: what the peer still lets us send / what we still let it send.
        self._credit_n = 0
        self._credit_b = 0
        self._granted_n = self.limits.credit_envelopes
        self._granted_b = self.limits.credit_bytes
        self._window_n = self.limits.credit_envelopes  # current receive window
        self._window_b = self.limits.credit_bytes
        self._regrant_n = 0
        self._regrant_b = 0
        self._unacked_b = 0  # bytes we sent that no ACK has returned yet
        self._out_bytes = 0  # bytes encoded in ``_out``
        self._out_cap: float = math.inf  # ceiling on ``_out_bytes`` for this drain
        self._out_full = False  # the pump stopped at ``_out_cap``: more to produce
        self.lazy = False  # both sides offered the "lazy" cap (set by the handshake)
        #: Optional store fast path: ``envelopes_since`` and ``_take`` in one step (see
        #: ``MemoryStore.take_since``); other stores go through ``envelopes_since``.
        self._take_since: TakeSince | None = getattr(store, "take_since", None)
        if initiator:
            self._start_initiator()

    # -- public API -----------------------------------------------------------------
    @property
    def shared_spaces(self) -> list[bytes]:
        """Space ids shared with the peer (empty until the handshake completes)."""
        return [sh.space for sh in self._shared.values()]

    def peer_vector(self, space: bytes) -> VersionVector | None:
        """What the peer is known to hold of ``space`` (its announced vector advanced by
        everything exchanged since), or None before that is known. For status (backlog)."""
        sh = self._by_space.get(space)
        return dict(sh.view) if sh is not None and sh.view is not None else None

    def receive_data(self, data: bytes, now: float) -> None:
        """Feed bytes read from the stream (any split). On EOF call :meth:`connection_lost`."""
        if self.state is SessionState.CLOSED:
            return
        try:
            frames = self._decoder.feed(data)
        except MyceliumError as exc:
            self._fail(exc.reason, str(exc), remote=True)
            return
        for frame in frames:
            self.receive_frame(frame, now)
            if self.state is SessionState.CLOSED:
                return

    def receive_frame(self, payload: bytes, now: float) -> None:
        """Process one frame payload (for transports that frame messages themselves)."""
        if self.state is SessionState.CLOSED:
            return
        self._now = self._last_recv = now
        self.stats.frames_in += 1
        try:
            msg = decode_message(payload, self.limits.messages)
            if type(msg) not in _ALLOWED[self.state]:
                raise ProtocolError(f"{type(msg).__name__} not allowed in {self.state.value}",
                                    reason="unexpected_message")
            self._handle(msg)
        except ProtocolError as exc:
            self._fail(exc.reason, str(exc), remote=True)
            return
        self._update_state()

    def push_local(self, space: bytes, envelope: bytes, now: float | None = None) -> bool:
        """Offer an envelope the store now holds (a local write or one ingested from
        another peer) to this peer. Returns False when the peer has it already, the space
        is not shared or the session is not ready (reconciliation will cover it).
        Pushes are coalesced into LIVE frames at the next ``frames_to_send``.
        """
        if now is not None:
            self._now = now
        sh = self._by_space.get(space)
        if sh is None or sh.view is None or self.state is SessionState.CLOSED:
            return False
        try:
            info = self.cache.info(envelope)
        except CachedRejection:
            return False
        if info.seq <= sh.view.get(info.author, 0):
            return False
        if sh.sent_done and not sh.eager:
            sh.have_due = True  # pruned: announce it in a HAVE, do not send it
        elif sh.sent_done and not sh.dirty:
            sh.live_buf.append(envelope)
        # else: the pump draws it from the store (reconciling, or already dirty)
        return True

    def notify_changed(self, space: bytes) -> None:
        """The store gained envelopes of ``space`` by other means (gossip that filled a
        gap, an archive import...): compare with the peer's view again at the next send."""
        sh = self._by_space.get(space)
        if sh is not None and sh.view is not None:
            sh.dirty = True

    def tick(self, now: float) -> None:
        """Advance time: timeouts and keepalives."""
        if self.state is SessionState.CLOSED:
            return
        self._now = now
        lim = self.limits
        if self.state is SessionState.HANDSHAKE and now - self._started >= lim.handshake_timeout:
            self._fail("timeout", "no HELLO before the handshake deadline", remote=False)
        elif now - self._last_recv >= lim.idle_timeout:
            self._fail("timeout", f"nothing received for {lim.idle_timeout} s", remote=False)
        elif (self.state is not SessionState.HANDSHAKE
              and now - self._last_send >= lim.keepalive_interval):
            self._send_ack()  # keepalive, returning any credit held back

    def next_deadline(self) -> float | None:
        """When ``tick`` next has something to do (None once closed)."""
        if self.state is SessionState.CLOSED:
            return None
        lim = self.limits
        deadline = self._last_recv + lim.idle_timeout
        if self.state is SessionState.HANDSHAKE:
            return min(deadline, self._started + lim.handshake_timeout)
        deadline = min(deadline, self._last_send + lim.keepalive_interval)
        if self.lazy:
            deadline = min(deadline, self.lazy_deadline())
        return deadline

    def lazy_deadline(self) -> float:
        """When a HAVE is due or a graft check expires (``inf`` if nothing is pending).
        Drivers must call :meth:`frames_to_send` (with the time) at that moment."""
        when = math.inf
        if self.lazy and self.state is not SessionState.CLOSED:
            for sh in self._shared.values():
                if sh.have_due and sh.next_have < when:
                    when = sh.next_have
                if sh.graft_at < when:
                    when = sh.graft_at
        return when

    def close(self, reason: str = "bye") -> None:
        """Orderly local close: sends BYE."""
        if self.state is SessionState.CLOSED:
            return
        self._send(Bye())
        self._set_state(SessionState.CLOSED)
        self._events.append(Closed(reason))

    def connection_lost(self, reason: str = "connection_lost") -> None:
        """The transport is gone (EOF, reset): close without sending anything."""
        if self.state is SessionState.CLOSED:
            return
        self._out.clear()
        self._set_state(SessionState.CLOSED)
        self._events.append(Closed(reason))

    def frames_to_send(self, now: float | None = None, *,
                       max_bytes: int | None = None) -> list[bytes]:
        """Frame payloads to transmit, in order (unframed: for message transports).
        ``now``: the current time, if it moved since the last call that took one.

        ``max_bytes``: stop producing envelope batches once about this many bytes are
        encoded (at least one batch goes out); :attr:`output_pending` then says that
        more is ready, to be taken once the transport has drained this. Without it,
        everything the credit and ``max_inflight_bytes`` allow is produced at once.
        """
        if now is not None:
            self._now = now
        self._out_cap = math.inf if max_bytes is None else max_bytes
        self._out_full = False
        if self.state is not SessionState.CLOSED:
            self._flush()
        out, self._out = self._out, []
        self._out_bytes = 0
        if out:
            self._last_send = self._now
            self.stats.frames_out += len(out)
        return out

    def data_to_send(self) -> bytes:
        """Length-prefixed bytes to write to the stream: at most about
        ``limits.max_out_bytes`` per call; call again after writing them while
        :attr:`output_pending` is True."""
        return b"".join(encode_frame(p, max_frame=self.limits.messages.max_frame)
                        for p in self.frames_to_send(max_bytes=self.limits.max_out_bytes))

    @property
    def output_pending(self) -> bool:
        """The last :meth:`frames_to_send` / :meth:`data_to_send` stopped at its byte
        ceiling with more to send: call it again once that output is written."""
        return self._out_full and self.state is not SessionState.CLOSED

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def events(self) -> list[Event]:
        """Drain all pending events."""
        out = list(self._events)
        self._events.clear()
        return out

    # -- handshake ------------------------------------------------------------------
    def _eligible_spaces(self) -> list[bytes]:
        spaces = sorted(self.store.member_spaces())
        if self.authorize is not None:
            spaces = [s for s in spaces if self.authorize(s, self.remote_id)]
        return spaces

    def _start_initiator(self) -> None:
        self._offered = self._eligible_spaces()[: self.limits.messages.max_spaces]
        tokens = tuple(
            offer_tokens.initiator_token(s, salt_i=self.salt, initiator=self.local_id,
                                         responder=self.remote_id)
            for s in self._offered
        )
        self._send(self._hello(tokens))
        # Vectors in the first flight: a responder can answer with data at once.
        for i, space in enumerate(self._offered):
            self._send(Vector(i, self.store.version_vector(space)))

    def _hello(self, tokens: tuple[bytes, ...]) -> Hello:
        caps: tuple[str, ...] = (CAP_LAZY,) if self.limits.lazy_push else ()
        if callable(getattr(self.store, "heads", None)):
            caps += (CAP_HEADS,)
        return Hello(salt=self.salt, offers=tokens, credit_envelopes=self._granted_n,
                     credit_bytes=self._granted_b, caps=caps)

    def _on_hello(self, msg: Hello) -> None:
        if msg.credit_envelopes < 1 or msg.credit_bytes < MAX_ENVELOPE_BYTES:
            raise ProtocolError("initial credit below one maximal envelope", reason="bad_credit")
        self._credit_n, self._credit_b = msg.credit_envelopes, msg.credit_bytes
        self.lazy = self.limits.lazy_push and CAP_LAZY in msg.caps
        if self.initiator:
            expected = {
                offer_tokens.responder_token(s, salt_i=self.salt, salt_r=msg.salt,
                                             initiator=self.local_id, responder=self.remote_id): i
                for i, s in enumerate(self._offered)
            }
            for token in msg.offers:
                i = expected.get(token)
                if i is None or i in self._shared:
                    raise ProtocolError("answer token matches no offer", reason="bad_offer")
                self._add_shared(i, self._offered[i])
        else:
            matched = offer_tokens.match_offers(
                msg.offers, self._eligible_spaces(), salt_i=msg.salt,
                initiator=self.remote_id, responder=self.local_id)
            answers = tuple(
                offer_tokens.responder_token(matched[i], salt_i=msg.salt, salt_r=self.salt,
                                             initiator=self.remote_id, responder=self.local_id)
                for i in sorted(matched)
            )
            self._send(self._hello(answers))
            for i in sorted(matched):
                self._add_shared(i, matched[i])
                self._send(Vector(i, self.store.version_vector(matched[i])))
            self._offered_count = len(msg.offers)
        self._set_state(SessionState.RECONCILING)
        self._events.append(SpacesShared(tuple(self.shared_spaces)))
        heads = getattr(self.store, "heads", None)
        if CAP_HEADS in msg.caps and callable(heads):
            for sh in self._shared.values():  # once per session (sync.md §6a)
                mine = heads(sh.space)
                order = sorted(mine)
                self._send(Heads(sh.index, {a: mine[a][0] for a in order},
                                 b"".join(mine[a][1][:HEAD_PREFIX_BYTES] for a in order)))
        if not self._shared:
            # Nothing to do together: end now rather than hold a slot (sync.md §7.1).
            self.close("nothing_shared")

    def _on_heads(self, sh: _Shared, msg: Heads) -> None:
        """Compare the peer's heads with ours where the counts agree: a different delta id
        behind the same seq is a fork of that author, which vectors alone never show."""
        heads = getattr(self.store, "heads", None)
        if not callable(heads):
            return
        mine = heads(sh.space)
        n = HEAD_PREFIX_BYTES
        for i, (author, seq) in enumerate(sorted(msg.vv.items())):
            held = mine.get(author)
            if held is not None and held[0] == seq and held[1][:n] != msg.heads[i * n:i * n + n]:
                self.stats.forks += 1
                self._events.append(ForkDetected(sh.space, author, seq))

    def _add_shared(self, index: int, space: bytes) -> None:
        sh = _Shared(index=index, space=space)
        self._shared[index] = sh
        self._by_space[space] = sh

    # -- dispatch -------------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        match msg:
            case Hello():
                self._on_hello(msg)
            case Vector() | Want():
                sh = self._shared.get(msg.space)
                if sh is None:
                    if (isinstance(msg, Vector) and not self.initiator
                            and msg.space < self._offered_count):
                        return  # initiator's eager vector for a space we do not share
                    raise ProtocolError(f"no shared space {msg.space}", reason="unknown_space")
                self._redeclared(sh, msg.vv)
                sh.view = dict(msg.vv)
                if isinstance(msg, Vector):
                    sh.announced = dict(msg.vv)
                else:
                    sh.eager = True  # a WANT grafts the link (both ways)
                sh.sent_done = False
                sh.dirty = False
                sh.live_buf.clear()
            case Envelopes() | Live():
                self._on_envelopes(msg.space, msg.envelopes, live=isinstance(msg, Live))
            case Have():
                self._on_have(self._lazy_shared(msg.space), msg.vv)
            case Prune():
                self._prune(self._lazy_shared(msg.space))
            case Heads():
                self._on_heads(self._get_shared(msg.space), msg)
            case Ack():
                self._credit_n += msg.envelopes
                self._credit_b += msg.nbytes
                self._unacked_b -= min(msg.nbytes, self._unacked_b)
            case Done():
                self._on_done(self._get_shared(msg.space))
            case Bye():
                self._set_state(SessionState.CLOSED)
                self._events.append(Closed("bye"))
            case Error():
                self._set_state(SessionState.CLOSED)
                self._events.append(SessionError(msg.reason, "reported by peer", remote=True))
                self._events.append(Closed(msg.reason))

    def _redeclared(self, sh: _Shared, vv: VersionVector) -> None:
        """Police a VV/WANT (sync.md §6.1): it resets our view of the peer, so each one
        can make us send the space again. One that does not advance what the peer
        declared before (counting only what we hold) is stale: ``stale_wants`` in a row
        are tolerated, one more ends the session. What we send below our old view is a
        resend, charged to the session's resend budget in :meth:`_send_batch`."""
        local = self.store.version_vector(sh.space)
        declared = sh.declared
        advanced = False
        for author, seq in vv.items():
            capped = min(seq, local.get(author, 0))
            if capped > declared.get(author, 0):
                declared[author] = capped
                advanced = True
        if sh.view is None:
            return  # the first declaration for this space
        if advanced:
            sh.stale = 0  # only a run of stale ones is suspicious (resends are budgeted)
        else:
            sh.stale += 1
            self.stats.stale_wants_in += 1
            if sh.stale > self.limits.stale_wants:
                raise ProtocolError(f"{sh.stale} WANT/VV without progress for space "
                                    f"{sh.index}", reason="stale_want")
        hwm = sh.resend_hwm if sh.resend_hwm is not None else {}
        for author, seq in sh.view.items():
            if seq > hwm.get(author, 0) and author in local:
                hwm[author] = seq
        sh.resend_hwm = hwm

    def _get_shared(self, index: int) -> _Shared:
        sh = self._shared.get(index)
        if sh is None:
            raise ProtocolError(f"no shared space {index}", reason="unknown_space")
        return sh

    def _lazy_shared(self, index: int) -> _Shared:
        if not self.lazy:
            raise ProtocolError("HAVE/PRUNE without the lazy cap", reason="unexpected_message")
        return self._get_shared(index)

    def _prune(self, sh: _Shared) -> None:
        """Stop pushing envelopes to the peer on this link: announce them in HAVEs."""
        sh.eager = False
        sh.live_buf.clear()
        if sh.sent_done:
            sh.dirty = False
            sh.have_due = True

    def _on_have(self, sh: _Shared, vv: VersionVector) -> None:
        """The peer holds ``vv``: never send it those; expect them by some path soon."""
        view = sh.view if sh.view is not None else {}
        sh.view = view
        announced = sh.announced
        for author, seq in vv.items():
            if seq > view.get(author, 0):
                view[author] = seq
            if seq > announced.get(author, 0):
                announced[author] = seq
        cap = self.limits.messages.max_vector_entries
        if len(view) > cap or len(announced) > cap:
            # Each HAVE is bounded; their sum must be too (sync.md §6.1).
            raise ProtocolError(f"HAVEs announced more than {cap} authors",
                                reason="too_many_entries")
        # Expect what the HAVE shows beyond our store within the graft timeout. Each
        # session waits graft_timeout plus up to as much again (drawn from its salt): of
        # several peers announcing the same envelopes, the first timer to expire grafts
        # one link, and its WANT usually brings them before the others expire. A timer
        # covers what was announced when it was armed; what is announced meanwhile is
        # still in flight and gets the next timer (``graft_next``, see ``_lazy_flush``).
        local = self.store.version_vector(sh.space)
        armed = sh.graft_at != math.inf
        need = sh.graft_next if armed else sh.graft_need
        for author, seq in vv.items():
            if seq > local.get(author, 0) and seq > need.get(author, 0):
                need[author] = seq
        if need:
            at = self._now + self.limits.graft_timeout * (1 + self.salt[0] / 256)
            if not armed:
                sh.graft_at = at
            elif sh.graft_next_at == math.inf:
                sh.graft_next_at = at

    def _lazy_flush(self, sh: _Shared) -> None:
        """Send a due HAVE; pull (WANT) what an expired HAVE announced and we still lack."""
        now = self._now
        if sh.graft_at <= now:
            sh.graft_at = math.inf
            need, sh.graft_need = sh.graft_need, {}
            local = self.store.version_vector(sh.space)
            missing = {a for a, s in need.items() if local.get(a, 0) < s}
            if missing:
                self.stats.grafts_out += 1
                sh.eager = True  # graft: the link is eager again, both ways
                sh.caught_up = False
                self._send(Want(sh.index, local))
                sh.graft_next, sh.graft_next_at = {}, math.inf
            elif sh.graft_next:  # what was announced since: its own deadline
                sh.graft_need = {a: s for a, s in sh.graft_next.items()
                                 if local.get(a, 0) < s}
                if sh.graft_need:
                    sh.graft_at = sh.graft_next_at
                sh.graft_next, sh.graft_next_at = {}, math.inf
        if sh.have_due and sh.next_have <= now and sh.view is not None:
            sh.have_due = False
            sh.next_have = now + self.limits.have_interval
            view, told = sh.view, sh.told
            news = {a: s for a, s in self.store.version_vector(sh.space).items()
                    if s > view.get(a, 0) and s > told.get(a, 0)}
            if news:
                told.update(news)
                self.stats.haves_out += 1
                self._send(Have(sh.index, news))

    def _on_envelopes(self, index: int, batch: Sequence[bytes], *, live: bool = False) -> None:
        sh = self._get_shared(index)
        n, b = len(batch), sum(map(len, batch))
        if n > self._granted_n or b > self._granted_b:
            raise ProtocolError(f"batch of {n} envelopes/{b} bytes exceeds credit "
                                f"{self._granted_n}/{self._granted_b}", reason="credit_exceeded")
        self._granted_n -= n
        self._granted_b -= b
        self._regrant_n += n
        self._regrant_b += b
        st = self.stats
        st.envelopes_in += n
        st.bytes_in += b
        result = self.store.ingest(sh.space, batch)
        st.duplicates_in += result.duplicates
        for _, reason in result.rejected:
            st.rejected_in[reason] = st.rejected_in.get(reason, 0) + 1
        fatal = next((r for _, r in result.rejected if r in FATAL_REJECTIONS), None)
        if fatal is not None:
            raise ProtocolError("peer sent an invalid envelope", reason=fatal)
        view = sh.view if sh.view is not None else {}
        sh.view = view
        announced = sh.announced
        lookup, info_of = self.cache.lookup, self.cache.info
        vget, aget = view.get, announced.get
        accepted: list[bytes] = []
        held, fresh = result.held, result.fresh
        if held is not None and fresh is not None and not result.rejected:
            # The store summarised the batch: no need to look at each envelope again.
            for author, seq in held.items():
                if seq > vget(author, 0):
                    view[author] = seq  # the peer holds it, whatever we think of it
                if seq > aget(author, 0):
                    announced[author] = seq  # something we should end up holding
            if len(fresh) < len(result.accepted):
                sh.dirty = True  # the store released envelopes it held pending: re-check
            if live and self.lazy and sh.eager:
                self._maybe_prune(sh, result)
            self._events.append(EnvelopesIngested(sh.space, result, tuple(fresh)))
            return
        n_acc = len(result.accepted)
        everything = (n_acc == len(batch) and not result.duplicates and not result.pending
                      and not result.rejected)
        if everything or (not n_acc and not result.rejected):
            # All new (nothing released besides) or nothing new (duplicates, parked):
            # no per-envelope bookkeeping beyond raising what we know the peer holds.
            for raw in batch:
                info = lookup(raw)
                if info is None:
                    try:
                        info = info_of(raw)
                    except CachedRejection:
                        continue
                author, seq = info.author, info.seq
                if seq > vget(author, 0):
                    view[author] = seq
                if seq > aget(author, 0):
                    announced[author] = seq
            if live and self.lazy and sh.eager:
                self._maybe_prune(sh, result)
            self._events.append(
                EnvelopesIngested(sh.space, result, tuple(batch) if everything else ()))
            return
        accepted_ids = set(result.accepted)
        refused = {i for i, _ in result.rejected if i is not None}
        for raw in batch:
            info = lookup(raw)
            if info is None:
                try:
                    info = info_of(raw)
                except CachedRejection:
                    continue
            author, seq = info.author, info.seq
            if seq > vget(author, 0):
                view[author] = seq  # the peer holds it, whatever we think of it
            if seq > aget(author, 0) and info.delta_id not in refused:
                announced[author] = seq  # something we should end up holding
            if info.delta_id in accepted_ids:
                accepted.append(raw)
        if len(accepted) < len(accepted_ids):
            # The batch filled a gap and the store released envelopes it held pending:
            # the peer may lack those too, so re-check against its view.
            sh.dirty = True
        if live and self.lazy and sh.eager:
            self._maybe_prune(sh, result)
        self._events.append(EnvelopesIngested(sh.space, result, tuple(accepted)))

    def _maybe_prune(self, sh: _Shared, result: IngestResult) -> None:
        """Most of a live batch was duplicates: this link is not on the shortest path to
        us. Prune it both ways (the eager links then shrink towards a tree)."""
        if result.duplicates <= len(result.accepted) or result.pending:
            sh.dup_streak = 0
            return
        sh.dup_streak += 1
        if sh.dup_streak >= self.limits.prune_after:
            sh.dup_streak = 0
            self.stats.prunes_out += 1
            self._send(Prune(sh.index))
            self._prune(sh)

    def _on_done(self, sh: _Shared) -> None:
        local = self.store.version_vector(sh.space)
        missing = any(local.get(a, 0) < s for a, s in sh.announced.items())
        if missing and sh.want_rounds < self.limits.max_want_rounds and local != sh.last_want:
            sh.want_rounds += 1
            sh.last_want = local
            sh.caught_up = False
            sh.eager = True  # a WANT makes the link eager again, both ways
            self._send(Want(sh.index, local))
            return
        sh.caught_up = True
        self._events.append(CaughtUp(sh.space, complete=not missing))

    # -- sending --------------------------------------------------------------------
    def _flush(self) -> None:
        """Turn pending work into frames: credit top-ups, live pushes, batches."""
        if (self._regrant_n or self._regrant_b) and self._credit_low():
            self._send_ack(grow=True)
        pump = False
        for sh in self._shared.values():
            if sh.live_buf:
                self._flush_live(sh)
            if sh.view is not None and (sh.dirty or not sh.sent_done):
                pump = True
        if pump:
            self._pump()
            if self.state is SessionState.CLOSED:
                return
        if self.lazy:
            now = self._now
            for sh in self._shared.values():
                if (sh.have_due and sh.next_have <= now) or sh.graft_at <= now:
                    self._lazy_flush(sh)
        self._update_state()

    def _credit_low(self) -> bool:
        """Return credit once the peer has used half of it (like a TCP window update), or
        when what it has left may not fit one more envelope; not after every batch, so
        a trickle of live pushes does not cost one ACK frame each."""
        if not (self._regrant_n or self._regrant_b):
            return False
        return (self._granted_n * 2 <= self._window_n
                or self._granted_b < max(self._window_b // 2, MAX_ENVELOPE_BYTES))

    def _send_ack(self, *, grow: bool = False) -> None:
        """Return the credit the peer used. ``grow``: it used half its window while we
        reconcile, so the link can carry more: widen the window (sync.md §7.3)."""
        n, b = self._regrant_n, self._regrant_b
        lim = self.limits
        if grow and self.state is SessionState.RECONCILING:
            new_n = min(lim.max_credit_envelopes, self._window_n * lim.credit_growth)
            new_b = min(lim.max_credit_bytes, self._window_b * lim.credit_growth)
            n += new_n - self._window_n
            b += new_b - self._window_b
            self._window_n, self._window_b = new_n, new_b
        self._granted_n += n
        self._granted_b += b
        self._send(Ack(n, b))
        self._regrant_n = self._regrant_b = 0

    def _flush_live(self, sh: _Shared) -> None:
        """Send buffered pushes that extend the peer's view contiguously and fit the credit;
        anything else switches the space to pumping from the store (``dirty``)."""
        assert sh.view is not None
        view = sh.view
        frame: list[bytes] = []
        size = 0
        lim = self.limits
        for raw in sh.live_buf:
            info = self.cache.info(raw)
            have = view.get(info.author, 0)
            if info.seq <= have:
                continue
            if (info.seq != have + 1 or len(frame) >= min(self._credit_n, lim.batch_envelopes)
                    or size + len(raw) > min(self._credit_b, lim.batch_bytes,
                                             lim.max_inflight_bytes - self._unacked_b)):
                sh.dirty = True
                break
            frame.append(raw)
            size += len(raw)
            view[info.author] = info.seq
        sh.live_buf.clear()
        if frame:
            self._send_batch(Live(sh.index, frame), size)

    def _pump(self) -> None:
        """Round-robin one batch per space until credit runs out or nothing is left."""
        lim = self.limits
        progress = True
        while progress:
            progress = False
            for sh in self._shared.values():
                if sh.view is None or (sh.sent_done and not sh.dirty):
                    continue
                if self._credit_n <= 0 or self._credit_b <= 0:
                    return
                if self._out_bytes >= self._out_cap:
                    self._out_full = True  # the rest once the transport has drained this
                    return
                if self._resend_exceeded():
                    return
                max_n = min(lim.batch_envelopes, self._credit_n)
                # Our own ceiling on unacknowledged bytes, whatever credit the peer grants.
                max_b = min(lim.batch_bytes, self._credit_b,
                            lim.max_inflight_bytes - self._unacked_b)
                if max_b <= 0:
                    return  # wait for an ACK
                if sh.sent_done and not sh.eager:
                    sh.dirty = False  # pruned link: announce instead of pushing
                    sh.have_due = True
                    continue
                if self._take_since is not None:
                    kept, size, blocked = self._take_since(sh.space, sh.view, limit=max_n,
                                                           max_bytes=max_b)
                else:
                    batch = self.store.envelopes_since(sh.space, sh.view, limit=max_n,
                                                       max_bytes=max_b)
                    kept, size = self._take(sh.view, batch, max_n, max_b)
                    blocked = bool(batch) and len(batch[0]) > max_b
                if kept:
                    msg = Live(sh.index, kept) if sh.sent_done else Envelopes(sh.index, kept)
                    self._send_batch(msg, size)
                    progress = True
                elif blocked:
                    continue  # the next envelope does not fit the credit: wait for an ACK
                elif sh.sent_done:
                    sh.dirty = False
                else:
                    sh.sent_done = True
                    self._send(Done(sh.index))

    def _take(
        self, view: VersionVector, batch: Iterable[bytes], max_n: int, max_b: int
    ) -> tuple[list[bytes], int]:
        """The prefix of ``batch`` within the limits that the peer lacks; advances ``view``.

        Stops at anything that would not advance the view, so a store that returns what
        the peer already has cannot make the pump loop forever.
        """
        kept: list[bytes] = []
        size = 0
        lookup, info_of = self.cache.lookup, self.cache.info
        vget = view.get
        for raw in batch:
            if len(kept) >= max_n or size + len(raw) > max_b:
                break
            info = lookup(raw)
            if info is None:
                try:
                    info = info_of(raw)
                except CachedRejection:
                    break
            seq = info.seq
            if seq <= vget(info.author, 0):
                break
            view[info.author] = seq
            kept.append(raw)
            size += len(raw)
        return kept, size

    def _send_batch(self, msg: Envelopes | Live, size: int) -> None:
        n = len(msg.envelopes)
        assert n <= self._credit_n and size <= self._credit_b, "flow control violated"
        self._credit_n -= n
        self._credit_b -= size
        self._unacked_b += size
        self.stats.envelopes_out += n
        self.stats.bytes_out += size
        hwm = self._shared[msg.space].resend_hwm
        if hwm:
            self._count_resends(hwm, msg.envelopes)
        self._send(msg)

    def _count_resends(self, hwm: VersionVector, batch: Sequence[bytes]) -> None:
        """Charge envelopes at or below what we believed the peer held (before its
        WANT/VV reset our view) to the session's resend budget. An author's mark is
        dropped once we send beyond it (we send each author's envelopes in ascending
        seq, so its resends are over; a later WANT/VV sets a new mark), so sessions
        stop paying for this check when no resend is under way."""
        lookup, info_of = self.cache.lookup, self.cache.info
        resent = 0
        for raw in batch:
            info = lookup(raw)
            if info is None:
                try:
                    info = info_of(raw)
                except CachedRejection:
                    continue
            mark = hwm.get(info.author)
            if mark is None:
                continue
            if info.seq <= mark:
                resent += len(raw)
            else:
                del hwm[info.author]
        self.stats.resent_bytes += resent

    def _resend_exceeded(self) -> bool:
        """Resends beyond the budget (sync.md §6.1) end the session: ``want_flood``."""
        st, lim = self.stats, self.limits
        fresh = st.bytes_out - st.resent_bytes
        if st.resent_bytes <= lim.resend_bytes + lim.resend_factor * fresh:
            return False
        self._fail("want_flood", f"peer made us resend {st.resent_bytes} bytes "
                   f"(fresh {fresh})", remote=True)
        return True

    def _send(self, msg: Message) -> None:
        frame = encode_message(msg)
        self._out.append(frame)
        self._out_bytes += len(frame)

    # -- state ----------------------------------------------------------------------
    def _set_state(self, new: SessionState) -> None:
        if new is self.state:
            return
        if (self.state, new) not in _TRANSITIONS:
            raise AssertionError(f"illegal transition {self.state} -> {new}")
        self.state = new

    def _update_state(self) -> None:
        state = self.state
        if state is SessionState.RECONCILING or state is SessionState.LIVE:
            new = SessionState.LIVE
            for sh in self._shared.values():
                if not (sh.sent_done and sh.caught_up):
                    new = SessionState.RECONCILING
                    break
            if new is not state:
                self._set_state(new)

    def _fail(self, reason: str, message: str, *, remote: bool) -> None:
        if self.state is SessionState.CLOSED:
            return
        self._out.append(encode_message(Error(reason)))
        self._set_state(SessionState.CLOSED)
        self._events.append(SessionError(reason, message, remote=remote))
        self._events.append(Closed(reason))

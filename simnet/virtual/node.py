"""One simulated node: the real sans-IO cores of ``mycelium.sync`` plus counters.

A node owns a :class:`~mycelium.sync.MemoryStore` (sharing the run's ``VerifyCache``),
its open :class:`Conn` objects (a real ``SyncSession`` at each end), a
:class:`~mycelium.sync.AntiEntropyScheduler`, and in gossip mode a
:class:`~mycelium.sync.GossipTracker` and :class:`~mycelium.sync.GossipOutbox`. The
simulation (:mod:`simnet.virtual.sim`) moves bytes between nodes; this module holds state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from mycelium.sync import AntiEntropyScheduler, GossipOutbox, GossipTracker, MemoryStore
from mycelium.sync.ports import IngestResult
from mycelium.sync.session import SyncSession

INF = math.inf


class InterningStore(MemoryStore):
    """A ``MemoryStore`` that keeps one shared ``bytes`` object per distinct envelope.

    Decoding a frame creates fresh copies of the envelopes it carries; stored as is,
    1000 nodes would each keep their own copy of every envelope (~400 B each). Swapping
    each received envelope for the run's canonical object with equal bytes (one dict
    lookup) changes nothing the store or the sessions can observe, and cuts memory to a
    pointer per (node, envelope). Unknown envelopes (forged, say) are kept as received.
    """

    def __init__(self, *, intern: dict[bytes, bytes], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self._intern = intern

    def ingest(self, space: bytes, envelopes: Sequence[bytes]) -> IngestResult:
        get = self._intern.get
        return super().ingest(space, [get(e, e) for e in envelopes])


class Conn:
    """One sync stream between node ``a`` (initiator, session ``sa``) and ``b`` (``sb``).

    ``ae``: opened by anti-entropy (or reconnect in gossip mode): report to the
    schedulers when it settles. ``persistent``: stays open for live pushes (sessions mode).
    ``last``: arrival time of the last frame per direction (streams are FIFO).
    """

    __slots__ = ("a", "ae", "b", "id", "last_ab", "last_ba", "open", "persistent", "sa", "sb")

    def __init__(self, cid: int, a: int, b: int, sa: SyncSession, sb: SyncSession, *,
                 ae: bool, persistent: bool) -> None:
        self.id = cid
        self.a = a
        self.b = b
        self.sa = sa
        self.sb = sb
        self.open = True
        self.ae = ae
        self.persistent = persistent
        self.last_ab = 0.0
        self.last_ba = 0.0

    def side(self, node: int) -> SyncSession:
        return self.sa if node == self.a else self.sb

    def peer(self, node: int) -> int:
        return self.b if node == self.a else self.a


@dataclass(eq=False)
class SimNode:
    idx: int
    pid: bytes  # transport identity (32 bytes), binds the space offer tokens
    store: MemoryStore
    sched: AntiEntropyScheduler
    tracker: GossipTracker | None = None
    outbox: GossipOutbox | None = None
    conns: dict[int, Conn] = field(default_factory=dict)
    up: bool = True
    member: bool = True
    joined: bool = True
    held: int = 0  # envelopes accepted into the store (writes + received)
    dups: int = 0  # envelopes received that the store already held
    env_in: int = 0  # envelopes received over sessions and gossip
    bytes_in: int = 0
    bytes_out: int = 0
    frames_in: int = 0
    frames_out: int = 0
    sessions_opened: int = 0
    session_errors: int = 0  # protocol errors (ERR sent or received)
    session_resets: int = 0  # connections broken by partitions, crashes, removals
    last_accept: float = 0.0
    flush_at: float = INF
    wake_at: float = INF
    tick_at: float = INF  # next lazy-push deadline of one of its sessions
    pending_writes: list[bytes] = field(default_factory=list)

    @property
    def live(self) -> bool:
        """Up, joined and still a member: must converge with the others."""
        return self.up and self.joined and self.member

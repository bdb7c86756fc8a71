"""The virtual backend: a deterministic discrete-event run of real sync cores.

Every node runs the real ``mycelium.sync`` code: a ``MemoryStore`` (one shared
``VerifyCache``, so each envelope is decoded and verified once per run), a real
``SyncSession`` at each end of every connection, the ``AntiEntropyScheduler`` and, in
gossip mode, ``GossipTracker``/``GossipOutbox``. Frames are the real canonical-CBOR
payloads; the simulator only decides *when* they arrive (:mod:`simnet.virtual.network`).

Two live-propagation modes (``sync.mode``):

* ``sessions``: one persistent session per overlay link (opened at start, after heals,
  restarts and joins), pushing new envelopes with ``push_local``; anti-entropy replaces a
  random neighbour's session with a fresh one (a full re-reconciliation).
* ``gossip``: new envelopes are published through ``GossipOutbox`` to overlay neighbours
  (datagrams: loss drops them) and received through ``GossipTracker``; sessions are
  short-lived, opened by anti-entropy, by gossip gaps and on reconnects, closed when settled.

Modelling shortcuts (documented in docs/simnet.md): connection set-up costs one extra RTT;
partitions and crashes reset connections at once (carrier loss) rather than by timeout;
a node's pushes are coalesced for ``sync.flush_interval`` (Nagle-like batching).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mycelium.sync import (
    AntiEntropyScheduler,
    GossipOutbox,
    GossipTracker,
    MemoryStore,
    VerifyCache,
)
from mycelium.sync.gossip import GossipIngested, NeedAntiEntropy
from mycelium.sync.session import (
    Closed,
    EnvelopesIngested,
    SessionError,
    SessionState,
    SyncLimits,
    SyncSession,
)
from simnet.errors import BackendUnavailable
from simnet.scenario import Event, Scenario
from simnet.virtual.engine import EventQueue, Trace
from simnet.virtual.network import Network, build_overlay, diameter
from simnet.virtual.node import INF, Conn, InterningStore, SimNode
from simnet.virtual.workload import Workload, Write, generate

# event kinds (also the trace record kinds)
FRAME, GOSSIP, FLUSH, WAKE, WRITE, SCENARIO, SAMPLE, CONNECT_FAIL, TICK = range(1, 10)
_SCENARIO_CODES = {"partition": 1, "heal": 2, "crash": 3, "restart": 4, "join": 5,
                   "remove_member": 6}
#: Bytes of framing around a payload (uvarint length prefix, small frames).
FRAME_OVERHEAD = 3

StoreFactory = Callable[[VerifyCache], MemoryStore]


#: Builds a session: ``factory(store, local_id=…, remote_id=…, initiator=…, now=…,
#: salt=…, cache=…, authorize=…)`` (the ``SyncSession`` constructor's signature).
SessionFactory = Callable[..., SyncSession]
#: ``progress(sim_time, duration)``, called now and then during a run.
Progress = Callable[[float, float], None]


@dataclass
class Sample:
    t: float
    live: int
    held_min: int
    held_median: int
    held_max: int
    expected: int
    bytes_mean: float
    bytes_max: int
    dups_total: int


@dataclass
class RunResult:
    """Everything the report needs; produced by :meth:`Simulation.run`."""

    scenario: Scenario
    seed: int
    trace_hash: str
    wall_s: float
    sim_time: float
    events: int
    nodes: list[SimNode]
    workload: Workload
    written: int
    expected_sum: int
    t_ref: float
    samples: list[Sample] = field(default_factory=list)
    lost: int = 0
    stalls: int = 0
    verify_stats: dict[str, int] = field(default_factory=dict)
    diameter: int = 0
    diameter_exact: bool = True
    rtt: float = 0.0
    removed_at: dict[int, float] = field(default_factory=dict)


class Simulation:
    """One run of one scenario with one seed. ``run()`` once; not reusable.

    ``store_factory``/``session_factory`` exist so tests can inject faulty variants and
    check that the convergence checks catch them.
    """

    def __init__(
        self,
        scenario: Scenario,
        seed: int | None = None,
        *,
        store_factory: StoreFactory | None = None,
        session_factory: SessionFactory | None = None,
        progress: Progress | None = None,
    ) -> None:
        if scenario.hostile is not None:  # its in-memory stores know no membership
            raise BackendUnavailable(
                f"scenario {scenario.name!r} has a hostile member: it runs on real Soil "
                "nodes with `python -m simnet.virtual.hostile`")
        self.sc = scenario
        self.seed = scenario.seed if seed is None else seed
        self.rng = random.Random(self.seed)
        self.q = EventQueue()
        self.trace = Trace()
        self.net = Network(scenario.link, self.rng, scenario.groups)
        self.cache = VerifyCache(max_entries=max(1_000_000, 2 * scenario.writes.total))
        self.store_factory = store_factory or self._interning_store
        self.session_factory: SessionFactory = session_factory or SyncSession
        self.progress = progress
        self.gossip = scenario.sync.mode == "gossip"
        self.flush_interval = scenario.sync.flush_interval
        self.limits = SyncLimits(lazy_push=scenario.sync.push == "lazy")
        self.adj = build_overlay(scenario, self.rng)
        self.workload = generate(scenario, self.rng)
        self._intern = {w.raw: w.raw for w in self.workload.writes}
        self.space = self.workload.space
        self.removed_pids: set[bytes] = set()
        self.removed_at: dict[int, float] = {}
        late = scenario.late_joiners()
        self.nodes = [self._make_node(i, i in late) for i in range(scenario.nodes)]
        self._authorize = lambda _space, remote: remote not in self.removed_pids
        self._conn_ids = 0
        self.written = 0
        self.expected_sum = 0
        self.last_write_at = 0.0
        self.samples: list[Sample] = []
        self._writes_left = len(self.workload.writes)
        self._events_left = len(scenario.events)

    # -- set-up ---------------------------------------------------------------------
    def _make_node(self, i: int, late: bool) -> SimNode:
        sc = self.sc
        store = self.store_factory(self.cache)
        store.add_space(self.space)
        sched = AntiEntropyScheduler(sc.sync.anti_entropy_interval, sc.sync.anti_entropy_jitter,
                                     self.rng)
        node = SimNode(idx=i, pid=self.rng.randbytes(32), store=store, sched=sched)
        if self.gossip:
            node.tracker = self._tracker(store)
            node.outbox = GossipOutbox(rate=sc.sync.gossip_rate)
        if late:
            node.up = node.joined = False
        return node

    def _interning_store(self, cache: VerifyCache) -> MemoryStore:
        return InterningStore(cache=cache, intern=self._intern)

    def _tracker(self, store: MemoryStore) -> GossipTracker:
        return GossipTracker(store, cache=self.cache, known_seq=store.known_seq,
                             anti_entropy_interval=self.sc.sync.anti_entropy_interval)

    def _can_talk(self, a: int, b: int) -> bool:
        na, nb = self.nodes[a], self.nodes[b]
        return (na.up and nb.up and na.joined and nb.joined and na.member and nb.member
                and self.net.reachable(a, b))

    # -- run ------------------------------------------------------------------------
    def run(self) -> RunResult:
        start = time.perf_counter()
        sc = self.sc
        q = self.q
        for v, node in enumerate(self.nodes):
            for w in self.adj[v]:
                node.sched.add_peer(w)
            self._arm(node)
        for wr in self.workload.writes:
            q.push(wr.at, WRITE, wr.node, 0, wr)
        for e in sc.events:
            q.push(e.at, SCENARIO, 0, 0, e)
        q.push(0.0, SAMPLE)
        if not self.gossip:
            for v in range(sc.nodes):
                for w in self.adj[v]:
                    if v < w and self._can_talk(v, w):
                        self._connect(v, w, ae=False)
        self._loop()
        self._sample(q.now)
        return self._result(time.perf_counter() - start)

    def _loop(self) -> None:
        q = self.q
        nodes = self.nodes
        duration = self.sc.duration
        progress = self.progress
        next_progress = 0.0
        while q:
            t, _, kind, a, b, payload = q.pop()
            if t > duration:
                q.now = duration
                break
            if kind == FRAME:
                self._on_frame(t, a, b, payload)
            elif kind == FLUSH:
                node = nodes[a]
                if node.flush_at == t:
                    node.flush_at = INF
                    self._flush(node)
            elif kind == GOSSIP:
                self._on_gossip(t, a, b, payload)
            elif kind == WAKE:
                node = nodes[a]
                if node.wake_at == t:
                    node.wake_at = INF
                    self._wake(node, t)
            elif kind == WRITE:
                self._writes_left -= 1
                self._on_write(t, payload)
            elif kind == SCENARIO:
                self._events_left -= 1
                self._on_scenario(t, payload)
            elif kind == SAMPLE:
                if self._sample(t):
                    break
                q.push(t + self.sc.sample_interval, SAMPLE)
                if progress is not None and t >= next_progress:
                    progress(t, duration)
                    next_progress = t + duration / 200
            elif kind == TICK:
                node = nodes[a]
                if node.tick_at == t:
                    node.tick_at = INF
                    self._flush(node)
            elif kind == CONNECT_FAIL:
                nodes[a].sched.report_failure(b, t)
                self._arm(nodes[a])

    # -- connections ----------------------------------------------------------------
    def _session(self, node: SimNode, peer: SimNode, initiator: bool, now: float) -> SyncSession:
        return self.session_factory(
            node.store, local_id=node.pid, remote_id=peer.pid, initiator=initiator, now=now,
            salt=self.rng.randbytes(16), cache=self.cache, authorize=self._authorize,
            limits=self.limits)

    def _connect(self, a: int, b: int, *, ae: bool) -> None:
        """Open a session from ``a`` to ``b``, replacing any existing one between them."""
        now = self.q.now
        na, nb = self.nodes[a], self.nodes[b]
        if not self._can_talk(a, b):
            if ae:  # a dial that fails: learnt after a connect timeout, modelled as 1 s
                self.q.push(now + 1.0, CONNECT_FAIL, a, b)
            return
        old = na.conns.get(b)
        if old is not None:
            self._close(old, a)
        self._conn_ids += 1
        conn = Conn(self._conn_ids, a, b, self._session(na, nb, True, now),
                    self._session(nb, na, False, now), ae=ae, persistent=not self.gossip)
        na.conns[b] = conn
        nb.conns[a] = conn
        na.sessions_opened += 1
        if ae:
            na.sched.started(b)
            nb.sched.started(a)
        # TCP + Noise handshake before the first frame: one extra round trip
        setup = self.net.latency() + self.net.latency()
        self._transmit(conn, a, conn.sa.frames_to_send(), now + setup)

    def _close(self, conn: Conn, by: int) -> None:
        """Orderly close from ``by``'s side (BYE travels; the peer closes on receipt)."""
        s = conn.side(by)
        s.close()
        self._transmit(conn, by, s.frames_to_send(), self.q.now)
        self._detach(conn, success=True)

    def _kill(self, conn: Conn) -> None:
        """The connection breaks (partition, crash): frames in flight are lost."""
        conn.open = False
        self._detach(conn, success=False)
        for v in (conn.a, conn.b):
            self.nodes[v].session_resets += 1

    def _detach(self, conn: Conn, *, success: bool) -> None:
        now = self.q.now
        for v in (conn.a, conn.b):
            node = self.nodes[v]
            peer = conn.peer(v)
            if node.conns.get(peer) is conn:
                del node.conns[peer]
        if conn.ae:
            conn.ae = False
            for v in (conn.a, conn.b):
                node = self.nodes[v]
                peer = conn.peer(v)
                if success:
                    node.sched.report_success(peer, now)
                else:
                    node.sched.report_failure(peer, now)
                self._arm(node)

    def _transmit(self, conn: Conn, src: int, frames: list[bytes], at: float) -> None:
        if not frames:
            return
        dst = conn.peer(src)
        net = self.net
        q = self.q
        ns = self.nodes[src]
        to_b = src == conn.a
        last = conn.last_ab if to_b else conn.last_ba
        for f in frames:
            size = len(f) + FRAME_OVERHEAD
            ns.bytes_out += size
            ns.frames_out += 1
            t = net.arrival(src, dst, size, at, stream=True)
            assert t is not None
            if t < last:
                t = last
            last = t
            q.push(t, FRAME, src, dst, (conn, to_b, f))
        if to_b:
            conn.last_ab = last
        else:
            conn.last_ba = last

    # -- receiving ------------------------------------------------------------------
    def _on_frame(self, t: float, src: int, dst: int, payload: tuple[Conn, bool, bytes]) -> None:
        conn, to_b, frame = payload
        if not conn.open:
            return
        node = self.nodes[dst]
        size = len(frame) + FRAME_OVERHEAD
        self.trace.record(t, FRAME, src, dst, size, conn.id)
        node.bytes_in += size
        node.frames_in += 1
        sess = conn.sb if to_b else conn.sa
        if sess.state is SessionState.CLOSED:
            return
        sess.receive_frame(frame, t)
        self._drain(node, conn, sess, t)
        if conn.ae and conn.open and conn.sa.state is SessionState.LIVE:
            self._settled(conn)
        self._dirty(node, t)

    def _drain(self, node: SimNode, conn: Conn, sess: SyncSession, t: float) -> None:
        for ev in sess.events():
            if isinstance(ev, EnvelopesIngested):
                res = ev.result
                node.env_in += len(ev.result.accepted) + res.duplicates + res.pending
                node.dups += res.duplicates
                if res.accepted:
                    node.held += len(res.accepted)
                    node.last_accept = t
                    self._propagate(node, ev.accepted, conn,
                                    released=len(res.accepted) > len(ev.accepted))
            elif isinstance(ev, SessionError):
                node.session_errors += 1
            elif isinstance(ev, Closed):
                if conn.open and conn.sa.state is SessionState.CLOSED and (
                        conn.sb.state is SessionState.CLOSED):
                    conn.open = False
                if node.conns.get(conn.peer(node.idx)) is conn:
                    # the peer ended it (BYE/ERR) or we failed: forget it
                    self._detach(conn, success=ev.reason == "bye")
                    self._transmit(conn, node.idx, sess.frames_to_send(), t)

    def _settled(self, conn: Conn) -> None:
        """An anti-entropy session finished reconciling both ways."""
        if conn.persistent:
            conn.ae = False
            now = self.q.now
            for v in (conn.a, conn.b):
                self.nodes[v].sched.report_success(conn.peer(v), now)
                self._arm(self.nodes[v])
        else:
            self._close(conn, conn.a)

    def _propagate(self, node: SimNode, accepted: tuple[bytes, ...] | list[bytes],
                   source: Conn | None, *, released: bool = False) -> None:
        """Offer newly stored envelopes to every other open session (and gossip)."""
        space = self.space
        v = node.idx
        if len(accepted) == 1 and not released:
            raw = accepted[0]
            for conn in node.conns.values():
                if conn is not source:
                    (conn.sa if conn.a == v else conn.sb).push_local(space, raw)
        else:
            # A batch: let each session diff the store against its view of the peer at
            # the next flush (one call per session, not one per envelope and session).
            for conn in node.conns.values():
                if conn is not source:
                    (conn.sa if conn.a == v else conn.sb).notify_changed(space)
        if node.outbox is not None:
            for raw in accepted:
                node.outbox.queue(space, raw)
            self._arm(node)

    def _dirty(self, node: SimNode, t: float) -> None:
        if self.flush_interval <= 0:
            self._flush(node)
        elif node.flush_at == INF:
            node.flush_at = t + self.flush_interval
            self.q.push(node.flush_at, FLUSH, node.idx)

    def _flush(self, node: SimNode) -> None:
        if not node.up:
            return
        now = self.q.now
        v = node.idx
        tick = INF
        for conn in list(node.conns.values()):
            s = conn.sa if conn.a == v else conn.sb
            frames = s.frames_to_send(now)
            if frames:
                self._transmit(conn, v, frames, now)
            if conn.ae and conn.open and conn.sa.state is SessionState.LIVE:
                self._settled(conn)
            if s.lazy:
                when = s.lazy_deadline()
                if when < tick:
                    tick = when
        if tick < node.tick_at:
            # lazy push: a HAVE is due or a graft check expires (``SyncSession.lazy_deadline``)
            node.tick_at = tick
            self.q.push(tick, TICK, v)

    # -- gossip ---------------------------------------------------------------------
    def _on_gossip(self, t: float, src: int, dst: int, data: bytes) -> None:
        node = self.nodes[dst]
        if not self._can_talk(src, dst) or node.tracker is None:
            return
        self.trace.record(t, GOSSIP, src, dst, len(data))
        node.bytes_in += len(data)
        node.frames_in += 1
        for act in node.tracker.on_message(self.space, data, src, t):
            if isinstance(act, GossipIngested):
                res = act.result
                node.env_in += len(res.accepted) + res.duplicates + res.pending
                node.dups += res.duplicates
                if res.accepted:
                    node.held += len(res.accepted)
                    node.last_accept = t
                    self._propagate(node, act.accepted, None,
                                    released=len(res.accepted) > len(act.accepted))
                    self._dirty(node, t)
            elif isinstance(act, NeedAntiEntropy):
                node.sched.request(act.peer)
                self._arm(node)

    def _send_gossip(self, node: SimNode, t: float) -> None:
        assert node.outbox is not None
        v = node.idx
        net = self.net
        for _topic, data in node.outbox.due(t):
            size = len(data)
            for w in self.adj[v]:
                if not self._can_talk(v, w):
                    continue
                node.bytes_out += size
                node.frames_out += 1
                arr = net.arrival(v, w, size, t, stream=False)
                if arr is not None:
                    self.q.push(arr, GOSSIP, v, w, data)

    # -- timers ---------------------------------------------------------------------
    def _arm(self, node: SimNode) -> None:
        """Schedule the node's next wake-up (anti-entropy, gossip pacing)."""
        if not node.member:
            return
        when = node.sched.next_deadline()
        if node.outbox is not None:
            ob = node.outbox.next_deadline()
            if ob is not None and ob < when:
                when = ob
        now = self.q.now
        if when < now:
            when = now
        if when < node.wake_at:
            node.wake_at = when
            self.q.push(when, WAKE, node.idx)

    def _wake(self, node: SimNode, t: float) -> None:
        if not (node.up and node.joined and node.member):
            return  # re-armed by restart/join; a removed member syncs nothing any more
        peer = node.sched.due(t)
        if peer is not None:
            assert isinstance(peer, int)
            self._connect(node.idx, peer, ae=True)
        if node.outbox is not None:
            self._send_gossip(node, t)
        self._arm(node)

    # -- writes and scenario events -------------------------------------------------
    def _on_write(self, t: float, w: Write) -> None:
        node = self.nodes[w.node]
        if not node.member:
            return  # a removed member writes no more in this space
        if not node.up or not node.joined:
            node.pending_writes.append(w.raw)
            return
        self._write(node, w.raw, t)

    def _write(self, node: SimNode, raw: bytes, t: float) -> None:
        res = node.store.ingest(self.space, [raw])
        self.written += 1
        self.expected_sum += hash(raw)
        self.last_write_at = t
        self.trace.record(t, WRITE, node.idx, 0, len(raw))
        if res.accepted:
            node.held += len(res.accepted)
            node.last_accept = t
        if node.tracker is not None:
            node.tracker.note_local([raw])
        self._propagate(node, [raw], None)
        self._dirty(node, t)

    def _on_scenario(self, t: float, e: Event) -> None:
        self.trace.record(t, SCENARIO, e.node if e.node is not None else 0xFFFF, 0, 0,
                          _SCENARIO_CODES[e.kind])
        n = self.sc.nodes
        match e.kind:
            case "partition":
                self.net.partition(n, [self.sc.groups[g] for g in e.groups])
                for node in self.nodes:
                    for conn in list(node.conns.values()):
                        if not self.net.reachable(conn.a, conn.b):
                            self._kill(conn)
            case "heal":
                cut = self.net.component
                self.net.heal()
                self._reconnect_all(cut)
            case "crash":
                assert e.node is not None
                node = self.nodes[e.node]
                for conn in list(node.conns.values()):
                    self._kill(conn)
                node.up = False
                if node.tracker is not None:
                    node.tracker = self._tracker(node.store)  # in-memory state is lost
            case "restart" | "join":
                assert e.node is not None
                node = self.nodes[e.node]
                node.up = node.joined = True
                self._reconnect(e.node)
                pending, node.pending_writes = node.pending_writes, []
                for raw in pending:
                    self._write(node, raw, t)
                self._arm(node)
            case "remove_member":
                assert e.node is not None
                node = self.nodes[e.node]
                node.member = False
                self.removed_pids.add(node.pid)
                self.removed_at[e.node] = t
                node.pending_writes.clear()
                for conn in list(node.conns.values()):
                    self._kill(conn)
                for w in self.adj[e.node]:
                    self.nodes[w].sched.remove_peer(e.node)
                    node.sched.remove_peer(w)

    def _reconnect(self, v: int) -> None:
        for w in self.adj[v]:
            if w not in self.nodes[v].conns and self._can_talk(v, w):
                self._connect(v, w, ae=self.gossip)

    def _reconnect_all(self, cut: list[int] | None) -> None:
        """After a heal: reconnect the overlay links the partition had cut."""
        for v in range(self.sc.nodes):
            for w in self.adj[v]:
                if (v < w and (cut is None or cut[v] != cut[w])
                        and w not in self.nodes[v].conns and self._can_talk(v, w)):
                    self._connect(v, w, ae=self.gossip)

    # -- sampling and the end -------------------------------------------------------
    def _sample(self, t: float) -> bool:
        """Record a timeline point; True when the run can stop (nothing left to happen
        and every live member holds every written envelope)."""
        live = [nd for nd in self.nodes if nd.live]
        held = sorted(nd.held for nd in live) or [0]
        traffic = [nd.bytes_in + nd.bytes_out for nd in self.nodes]
        self.samples.append(Sample(
            t=t, live=len(live), held_min=held[0], held_median=held[len(held) // 2],
            held_max=held[-1], expected=self.written,
            bytes_mean=sum(traffic) / max(1, len(traffic)), bytes_max=max(traffic, default=0),
            dups_total=sum(nd.dups for nd in self.nodes)))
        if self._writes_left or self._events_left:
            return False
        return held[0] == self.written and all(
            nd.store.pending_count(self.space) == 0 for nd in live)

    def _result(self, wall: float) -> RunResult:
        sc = self.sc
        gossip_dups = sum(nd.tracker.stats.duplicates for nd in self.nodes if nd.tracker)
        for nd in self.nodes:
            if nd.tracker is not None:
                nd.env_in += nd.tracker.stats.duplicates
        alive = [nd.live for nd in self.nodes]
        diam, exact = diameter(self.adj, alive, random.Random(self.seed ^ 0x5EED))
        t_ref = max(self.last_write_at, sc.last_disruption())
        res = RunResult(
            scenario=sc, seed=self.seed, trace_hash=self.trace.hexdigest(), wall_s=wall,
            sim_time=self.q.now, events=self.q.processed, nodes=self.nodes,
            workload=self.workload, written=self.written, expected_sum=self.expected_sum,
            t_ref=t_ref, samples=self.samples, lost=self.net.lost, stalls=self.net.stalls,
            verify_stats={"decodes": self.cache.decodes, "verifies": self.cache.verifies,
                          "hits": self.cache.hits, "gossip_duplicates": gossip_dups},
            diameter=diam, diameter_exact=exact,
            rtt=self.net.mean_rtt(self.adj), removed_at=dict(self.removed_at))
        return res


def run(scenario: Scenario, seed: int | None = None, **kwargs: Any) -> RunResult:
    """Run ``scenario`` on the virtual backend (see :class:`Simulation`)."""
    return Simulation(scenario, seed, **kwargs).run()


__all__ = ["RunResult", "Sample", "Simulation", "run"]

"""The simulated network: overlay graph, per-link latency/loss/bandwidth, partitions.

Timing of one message of ``size`` bytes on the directed link ``a -> b`` sent at ``now``:

* serialisation: the link is busy until ``free[a,b]``; the message leaves at
  ``max(now, free) + size / bandwidth`` (bandwidth shared by everything on that link);
* propagation: plus one latency sample from the scenario's distribution;
* loss on a *stream* (a sync session is TCP underneath): each loss stalls the message by
  one RTO, doubling per further loss, and streams stay FIFO (head-of-line blocking);
  loss on a *datagram* (a gossip message): the message is dropped.

Partitions put every node in a component; a link is usable iff both ends are in the same
component. Crashed and absent nodes are handled by the simulation, not here.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence

from simnet.scenario import Latency, Link, Scenario

#: A lost segment stalls a stream by at least this much (Linux's minimum RTO is 200 ms).
MIN_RTO = 0.2
MAX_STALL = 10.0


class LatencySampler:
    """Draws one-way latencies in seconds from a :class:`Latency` with the run's rng."""

    __slots__ = ("_draw",)

    def __init__(self, lat: Latency, rng: random.Random) -> None:
        ms = 1e-3
        match lat.dist:
            case "constant":
                v = lat.value * ms
                self._draw = lambda: v
            case "uniform":
                lo, hi = lat.low * ms, lat.high * ms
                self._draw = lambda: rng.uniform(lo, hi)
            case "normal":
                mu, sd = lat.mean * ms, lat.stddev * ms
                self._draw = lambda: max(0.0, rng.gauss(mu, sd))
            case _:
                m, s = math.log(lat.median * ms), lat.sigma
                self._draw = lambda: rng.lognormvariate(m, s)

    def __call__(self) -> float:
        return self._draw()


class LinkModel:
    """One link class: latency sampler, loss, bandwidth, RTO."""

    __slots__ = ("bandwidth", "latency", "loss", "mean_s", "rto")

    def __init__(self, link: Link, rng: random.Random) -> None:
        self.latency = LatencySampler(link.latency, rng)
        self.loss = link.loss
        self.bandwidth = link.bandwidth
        self.mean_s = link.latency.mean_ms() * 1e-3
        self.rto = max(MIN_RTO, 4 * self.mean_s)


class Network:
    """Link state for every directed pair that has carried traffic.

    ``groups``: the scenario's groups, to resolve ``link.overrides`` per node pair.
    """

    def __init__(self, link: Link, rng: random.Random,
                 groups: dict[str, tuple[int, ...]] | None = None) -> None:
        self.rng = rng
        self.base = LinkModel(link, rng)
        self.latency = self.base.latency  # connection set-up delays use the base link
        self._overrides = [(frozenset((groups or {})[o.between[0]]),
                            frozenset((groups or {})[o.between[1]]), LinkModel(o.link, rng))
                           for o in link.overrides]
        self._models: dict[tuple[int, int], LinkModel] = {}
        self._free: dict[tuple[int, int], float] = {}
        self.component: list[int] | None = None  # None: no partition
        self.lost = 0
        self.stalls = 0

    def model(self, a: int, b: int) -> LinkModel:
        """The link class of the pair (a, b): the last matching override, else the base."""
        key = (a, b) if a < b else (b, a)
        m = self._models.get(key)
        if m is None:
            m = self.base
            for ga, gb, model in self._overrides:
                if (a in ga and b in gb) or (a in gb and b in ga):
                    m = model
            self._models[key] = m
        return m

    # -- partitions -----------------------------------------------------------------
    def partition(self, n: int, groups: Sequence[Sequence[int]]) -> None:
        """Cut the network into the given groups; nodes in none form one more group."""
        comp = [len(groups)] * n
        for gi, members in enumerate(groups):
            for v in members:
                if comp[v] == len(groups):
                    comp[v] = gi
        self.component = comp

    def heal(self) -> None:
        self.component = None

    def reachable(self, a: int, b: int) -> bool:
        comp = self.component
        return comp is None or comp[a] == comp[b]

    # -- timing ---------------------------------------------------------------------
    def arrival(self, a: int, b: int, size: int, now: float, *, stream: bool) -> float | None:
        """When a message sent now arrives, or None if it is lost (datagrams only)."""
        m = self.model(a, b) if self._overrides else self.base
        t = now
        if m.bandwidth > 0:
            key = (a, b)
            free = self._free.get(key, 0.0)
            t = (free if free > now else now) + size / m.bandwidth
            self._free[key] = t
        t += m.latency()
        if m.loss > 0 and self.rng.random() < m.loss:
            if not stream:
                self.lost += 1
                return None
            stall = m.rto
            self.stalls += 1
            while self.rng.random() < m.loss and stall < MAX_STALL:
                stall *= 2
            t += stall
        return t

    def mean_rtt(self, adj: Sequence[Sequence[int]]) -> float:
        """Mean round-trip time over the overlay's links (for the lower bound)."""
        if not self._overrides:
            return 2 * self.base.mean_s
        total = n = 0.0
        for a, nbrs in enumerate(adj):
            for b in nbrs:
                if a < b:
                    total += self.model(a, b).mean_s
                    n += 1
        return 2 * total / n if n else 2 * self.base.mean_s


# -- overlay topologies -------------------------------------------------------------

def build_overlay(sc: Scenario, rng: random.Random) -> list[list[int]]:
    """Adjacency lists (sorted, symmetric) of the overlay the scenario asks for."""
    n = sc.nodes
    adj: list[set[int]] = [set() for _ in range(n)]

    def link(a: int, b: int) -> None:
        if a != b:
            adj[a].add(b)
            adj[b].add(a)

    topo = sc.topology
    if topo.kind == "full":
        for a in range(n):
            for b in range(a + 1, n):
                link(a, b)
    elif topo.kind == "random":
        _random_overlay(n, topo.degree, rng, link)
    else:
        relays = sc.groups[topo.relays]
        relay_set = set(relays)
        for i, r in enumerate(relays):
            for r2 in relays[i + 1:]:
                link(r, r2)
        for v in range(n):
            if v not in relay_set:
                for r in relays:
                    link(v, r)
        if topo.lan_links == "full":
            for lan in topo.lans:
                members = [v for v in sc.groups[lan] if v not in relay_set]
                for i, a in enumerate(members):
                    for b in members[i + 1:]:
                        link(a, b)
    return [sorted(s) for s in adj]


def _random_overlay(n: int, k: int, rng: random.Random, link: object) -> None:
    """Connected random graph with every degree >= ~k: a random ring (so it is connected
    even with one link per node) plus random chords until each node has ``k`` links."""
    assert callable(link)
    order = list(range(n))
    rng.shuffle(order)
    for i in range(n):
        link(order[i], order[(i + 1) % n])
    degree = [0] * n
    for i in range(n):
        degree[order[i]] += 2 if n > 2 else 1
    chords: dict[int, set[int]] = {v: set() for v in range(n)}
    for i in range(n):
        chords[order[i]].update((order[(i + 1) % n], order[i - 1]))
    for a in range(n):
        tries = 0
        while degree[a] < k and tries < 10 * k:
            tries += 1
            b = rng.randrange(n)
            if b == a or b in chords[a]:
                continue
            chords[a].add(b)
            chords[b].add(a)
            degree[a] += 1
            degree[b] += 1
            link(a, b)


def eccentricities(adj: Sequence[Sequence[int]], alive: Sequence[bool],
                   sources: Sequence[int]) -> list[int]:
    """BFS hop eccentricity of each source within the alive subgraph (-1 if it cannot
    reach every alive node)."""
    n = len(adj)
    total = sum(1 for v in range(n) if alive[v])
    out: list[int] = []
    for s in sources:
        dist = [-1] * n
        dist[s] = 0
        q = deque([s])
        seen = 1
        far = 0
        while q:
            v = q.popleft()
            d = dist[v] + 1
            for w in adj[v]:
                if dist[w] < 0 and alive[w]:
                    dist[w] = d
                    far = d
                    seen += 1
                    q.append(w)
        out.append(far if seen == total else -1)
    return out


def diameter(adj: Sequence[Sequence[int]], alive: Sequence[bool], rng: random.Random,
             *, exact_below: int = 400, samples: int = 24) -> tuple[int, bool]:
    """Overlay diameter in hops among alive nodes: ``(hops, exact)``.

    Exact (BFS from every node) for small graphs; otherwise the largest eccentricity of a
    random sample plus a double sweep, which is a lower bound on the true diameter, so the
    convergence ratio computed from it errs on the pessimistic side. -1: disconnected.
    """
    nodes = [v for v in range(len(adj)) if alive[v]]
    if not nodes:
        return 0, True
    if len(nodes) <= exact_below:
        ecc = eccentricities(adj, alive, nodes)
        return (-1 if min(ecc) < 0 else max(ecc)), True
    sources = rng.sample(nodes, min(samples, len(nodes)))
    ecc = eccentricities(adj, alive, sources)
    if min(ecc) < 0:
        return -1, False
    # double sweep: the node farthest from the best source is likely peripheral
    best = sources[ecc.index(max(ecc))]
    far = _farthest(adj, alive, best)
    return max(max(ecc), eccentricities(adj, alive, [far])[0]), False


def _farthest(adj: Sequence[Sequence[int]], alive: Sequence[bool], s: int) -> int:
    dist = {s: 0}
    q = deque([s])
    last = s
    while q:
        v = q.popleft()
        last = v
        for w in adj[v]:
            if w not in dist and alive[w]:
                dist[w] = dist[v] + 1
                q.append(w)
    return last

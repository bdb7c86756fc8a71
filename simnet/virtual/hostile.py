"""A hostile member among real Soil nodes (issue 15): do the honest nodes still converge?

The virtual backend's nodes hold :class:`~mycelium.sync.MemoryStore`, which knows nothing
of membership. A scenario with a ``[hostile]`` table (``hostile-member.toml``) runs here
instead: every node is a real :class:`~mycelium.store.soil.Soil` (SQLite in a temporary
directory) with its own identity, members of one community space that node 0 created, and
every exchange is a real pair of :class:`~mycelium.sync.session.SyncSession` objects with
the node's member policy as their ``authorize`` hook, exactly as ``mycelium run`` wires
them.

The run advances in ticks of one simulated second (time is an argument everywhere; the
Soils read the simulated clock): writers write, the hostile node acts, then every node
runs one anti-entropy session with a random peer, delivered at once (a shortcut: no link
latency, loss or partitions here; :mod:`simnet.virtual.sim` models those). The hostile
node, while a member, pushes through its own sessions:

* control ops of throwaway keys claiming admin (``junk_control_ops``),
* a control op of its own although it is no admin,
* writes dated 30 days ahead (``future_writes``: the clock-drift rule defers them),
* envelopes with ``seq >= 2^63`` (``bad_seq_writes``),

then the admin removes it (the removal pins its chain and rotates the key), and it pushes
a second chain for its kept seqs (``forked_chain``) signed with the old key it holds.
The run converges when every honest node ends with the same members, epoch, version
vectors and heads, the hostile node is removed everywhere, and honest writes made after
the removal are held everywhere.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mycelium.crdt import payload as payloads
from mycelium.crdt.hlc import Timestamp
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Envelope, Kind, seal
from mycelium.spaces import control, service
from mycelium.spaces.access import member_policy
from mycelium.spaces.errors import NoEpochKey
from mycelium.store.soil import Soil
from mycelium.sync.ports import IngestResult, VersionVector
from mycelium.sync.session import EnvelopesIngested, ForkDetected, SessionError, SyncSession
from simnet.scenario import Scenario

#: Simulated wall clock at t = 0 (ms).
EPOCH_MS = 1_760_000_000_000
DAY_MS = 86_400_000
#: Ticks after the scenario's duration in which the nodes may still settle.
SETTLE_TICKS = 30
#: Most flights of one session before it is cut (sessions settle in a handful).
MAX_FLIGHTS = 200


@dataclass
class HostileResult:
    """What :func:`run` found (``to_json`` for ``--json``)."""

    scenario: str
    nodes: int
    converged: bool
    members_agree: bool
    vectors_agree: bool
    heads_agree: bool
    hostile_removed_everywhere: bool
    honest_writes: int
    honest_writes_after_removal: int
    writes_missing: int
    write_waits: int  # writes postponed for want of a key (right after the rotation)
    sessions: int
    sessions_refused: int  # sessions the member policy shared nothing in
    rejected: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, int] = field(default_factory=dict)
    forks_detected: int = 0
    state_hash: str = ""
    sim_time: float = 0.0
    wall_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["convergence_ratio"] = 1.0 if self.converged else 0.0
        out["trace_hash"] = self.state_hash
        return out


class _Pushy:
    """The hostile node's store as its sessions see it: its Soil, plus envelopes it wants
    to push (offered once per session, whatever the peer's vector says), and every space
    it knows offered even after its removal."""

    def __init__(self, soil: Soil, space: bytes, extra: Sequence[bytes]) -> None:
        self.soil, self.space, self.extra = soil, space, list(extra)

    def member_spaces(self) -> list[bytes]:
        return [self.space]

    def version_vector(self, space: bytes) -> VersionVector:
        return self.soil.version_vector(space)

    def heads(self, space: bytes) -> dict[bytes, tuple[int, bytes]]:
        return self.soil.heads(space)

    def envelopes_since(self, space: bytes, remote: VersionVector, *, limit: int,
                        max_bytes: int) -> list[bytes]:
        extra, self.extra = self.extra[:limit], self.extra[limit:]
        if extra:
            return extra
        return self.soil.envelopes_since(space, remote, limit=limit, max_bytes=max_bytes)

    def ingest(self, space: bytes, envelopes: Sequence[bytes]) -> IngestResult:
        return self.soil.ingest(space, envelopes)


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> int:
        return EPOCH_MS + int(self.t * 1000)


def _identity(seed: int, i: int) -> Identity:
    return Identity.from_seed(hashlib.sha256(b"simnet-hostile %d %d" % (seed, i)).digest())


def _listing(who: Identity, space: bytes, seq: int, prev: bytes | None, epoch: int,
             key: bytes, wall_ms: int, doc: str, title: str) -> Envelope:
    body = payloads.set_fields("products", doc, {"title": title},
                               Timestamp(wall_ms, 0, who.public_key[:8]))
    return seal(signer=who.signing_key, space=space, seq=seq, prev=prev, epoch=epoch,
                payload=body.encode(), group_key=key, kind=Kind.DATA)


class _Run:
    def __init__(self, sc: Scenario, seed: int, workdir: Path) -> None:
        assert sc.hostile is not None
        self.sc, self.h, self.rng = sc, sc.hostile, random.Random(seed)
        self.clock = _Clock()
        self.ids = [_identity(seed, i) for i in range(sc.nodes)]
        self.soils = [Soil.open(workdir / f"n{i}.db", self.ids[i], clock=self.clock,
                                synchronous="NORMAL") for i in range(sc.nodes)]
        admin = self.soils[0]
        self.space = service.create_space(admin, "market")
        for i in range(1, sc.nodes):
            service.join(self.soils[i], service.invite(admin, self.space, self.ids[i].did))
        self.honest = [i for i in range(sc.nodes) if i != self.h.node]
        self.removal_at = next((e.at for e in sc.events if e.kind == "remove_member"),
                               sc.duration / 2)
        self.removed = False
        self.writes = 0
        self.writes_after = 0
        self.write_waits = 0
        self.sessions = 0
        self.refused = 0
        self.forks = 0
        self.rejected: Counter[str] = Counter()
        #: what the hostile node pushes in its sessions: before / after its removal
        self.attack_at = max(sc.writes.start, self.removal_at / 3)
        self.pre: list[bytes] = []
        self.post: list[bytes] = []
        self.write_credit = 0.0
        self.doc_no = 0

    # -- the hostile member ---------------------------------------------------------
    def _before_removal(self) -> list[bytes]:
        """Junk of strangers, its own control op, future-dated writes, huge seqs."""
        h, hs, space = self.h, self.soils[self.h.node], self.space
        who = self.ids[h.node]
        out: list[bytes] = []
        for i in range(h.junk_control_ops):
            stranger = Identity.from_seed(os.urandom(32))
            op = control.op_add_member(lc=10_000 + i, member=stranger.public_key, role="admin")
            out.append(seal(signer=stranger.signing_key, space=space, seq=1, prev=None,
                            epoch=0, payload=op, group_key=None, kind=Kind.CONTROL).raw)
        state = hs.space_state(space)
        epoch = state.current_epoch
        key = state.epoch_key(epoch, who)
        assert key is not None
        now = self.clock()
        for i in range(h.future_writes):  # into its own chain: stored, content deferred
            hs.ingest(space, [self._own(who, hs, epoch, key, now + 30 * DAY_MS + i,
                                        f"future{i}")])
        for i in range(h.bad_seq_writes):
            out.append(_listing(who, space, 2**63 + i, os.urandom(32), epoch, key, now,
                                f"huge{i}", "x").raw)
        seq, prev = hs.heads(space)[who.public_key]
        own_op = seal(signer=who.signing_key, space=space, seq=seq + 1, prev=prev, epoch=0,
                      payload=control.op_add_member(lc=99_999, member=os.urandom(32)),
                      group_key=None, kind=Kind.CONTROL)
        out.append(own_op.raw)  # beyond what its store would accept: pushed raw
        return out

    def _own(self, who: Identity, hs: Soil, epoch: int, key: bytes, wall_ms: int,
             doc: str) -> bytes:
        seq, prev = hs.heads(self.space).get(who.public_key, (0, None))
        return _listing(who, self.space, seq + 1, prev, epoch, key, wall_ms, doc,
                        "from the future").raw

    def _after_removal(self) -> list[bytes]:
        """A second chain for its pinned seqs, with the old epoch key it still holds."""
        if not self.h.forked_chain:
            return []
        hs, who = self.soils[self.h.node], self.ids[self.h.node]
        keep = self.soils[0].space_state(self.space).pinned_head(who.public_key)
        if keep is None:
            return []
        old = max(e for e in hs.space_state(self.space).epochs
                  if hs.space_state(self.space).epoch_key(e, who) is not None)
        key = hs.space_state(self.space).epoch_key(old, who)
        assert key is not None
        out, prev = [], None
        for s in range(1, min(keep[0], 50) + 1):
            env = _listing(who, self.space, s, prev, old, key, self.clock(), f"m{s}",
                           "SOLD - pay the deposit to me")
            out.append(env.raw)
            prev = env.delta_id
        return out

    # -- one tick -------------------------------------------------------------------
    def tick(self, t: float) -> None:
        self.clock.t = t
        h = self.h.node
        if not self.removed and t >= self.removal_at:
            for i in (*self.honest, h):  # the admin's node catches up, then removes
                self._session(0, i, t)
            service.remove(self.soils[0], self.space, self.ids[h].did)
            self.removed = True
            self.post = self._after_removal()
        elif not self.pre and t >= self.attack_at:
            self.pre = self._before_removal()
        self._write(t)
        order = list(range(self.sc.nodes))
        self.rng.shuffle(order)
        for i in order:
            j = self.rng.choice([k for k in range(self.sc.nodes) if k != i])
            self._session(i, j, t)

    def _write(self, t: float) -> None:
        w = self.sc.writes
        if t < w.start or self.writes >= w.total:
            return
        self.write_credit += w.rate
        writers = [i for i in w.writers if i != self.h.node] or self.honest
        while self.write_credit >= 1 and self.writes < w.total:
            node = writers[self.doc_no % len(writers)]
            try:
                self.soils[node].put_doc(self.space, "products", f"n{node}-{self.doc_no}",
                                         {"title": f"pear {self.doc_no}"})
            except NoEpochKey:  # right after the removal, until the rotation arrives
                self.write_waits += 1
                return
            self.doc_no += 1
            self.writes += 1
            self.writes_after += self.removed
            self.write_credit -= 1

    def _session(self, i: int, j: int, t: float) -> None:
        h = self.h.node
        push = self.post if self.removed else self.pre
        stores = [_Pushy(self.soils[k], self.space, push) if k == h else self.soils[k]
                  for k in (i, j)]
        sa = SyncSession(stores[0], local_id=self.ids[i].public_key,
                         remote_id=self.ids[j].public_key, initiator=True, now=t,
                         authorize=None if i == h else member_policy(self.soils[i]))
        sb = SyncSession(stores[1], local_id=self.ids[j].public_key,
                         remote_id=self.ids[i].public_key, initiator=False, now=t,
                         authorize=None if j == h else member_policy(self.soils[j]))
        self.sessions += 1
        for _ in range(MAX_FLIGHTS):
            out_a, out_b = sa.frames_to_send(), sb.frames_to_send()
            if not out_a and not out_b:
                break
            for f in out_a:
                sb.receive_frame(f, t)
            for f in out_b:
                sa.receive_frame(f, t)
            for k, events in ((i, sa.events()), (j, sb.events())):
                for ev in events:
                    if isinstance(ev, EnvelopesIngested) and k != h:
                        self.rejected.update(r for _, r in ev.result.rejected)
                    elif isinstance(ev, ForkDetected) and k != h:
                        self.forks += 1
                    elif isinstance(ev, SessionError) and k != h and ev.remote:
                        # envelopes no honest peer can send end the session (sync.md §6):
                        # the refusal is the session's error, counted by its reason
                        self.rejected[ev.reason] += 1
        if not sa.shared_spaces:
            self.refused += 1
        sa.close()
        sb.close()

    # -- the verdict ----------------------------------------------------------------
    def settled(self) -> bool:
        """Every honest node holds the same vector (checked after the duration)."""
        vectors = [self.soils[i].version_vector(self.space) for i in self.honest]
        return self.writes >= self.sc.writes.total and all(v == vectors[0] for v in vectors)

    def result(self, wall: float, sim_time: float) -> HostileResult:
        sp, hpub = self.space, self.ids[self.h.node].public_key
        honest = [self.soils[i] for i in self.honest]
        states = [s.space_state(sp) for s in honest]
        members = [st.members for st in states]
        vectors = [s.version_vector(sp) for s in honest]
        heads = [s.heads(sp) for s in honest]
        members_agree = all(m == members[0] for m in members) and all(
            st.current_epoch == states[0].current_epoch for st in states)
        vectors_agree = all(v == vectors[0] for v in vectors)
        heads_agree = all(hd == heads[0] for hd in heads)
        removed = all(not st.is_member(hpub) for st in states)
        wanted = self.writes
        missing = max(0, wanted - sum(1 for d in honest[0].list_docs(sp, "products")
                                      if d["_id"].startswith("n")))
        metrics: Counter[str] = Counter()
        for s in honest:
            metrics.update({k: v for k, v in s.metrics().items()
                            if k.startswith(("rejected.", "pending", "deferred",
                                             "unapplied."))})
        state = json.dumps([sorted((k.hex(), r) for k, r in members[0].items()),
                            sorted((k.hex(), v) for k, v in vectors[0].items())])
        converged = (members_agree and vectors_agree and heads_agree and removed
                     and missing == 0 and self.writes_after > 0)
        return HostileResult(
            scenario=self.sc.name, nodes=self.sc.nodes, converged=converged,
            members_agree=members_agree, vectors_agree=vectors_agree, heads_agree=heads_agree,
            hostile_removed_everywhere=removed, honest_writes=self.writes,
            honest_writes_after_removal=self.writes_after, writes_missing=missing,
            write_waits=self.write_waits, sessions=self.sessions,
            sessions_refused=self.refused, rejected=dict(self.rejected),
            metrics=dict(metrics), forks_detected=self.forks,
            state_hash=hashlib.sha256(state.encode()).hexdigest()[:16],
            sim_time=sim_time, wall_s=round(wall, 3))

    def close(self) -> None:
        for s in self.soils:
            s.close()


def run(sc: Scenario, seed: int | None = None) -> HostileResult:
    """Run a scenario with a ``[hostile]`` table (see the module docstring)."""
    if sc.hostile is None:
        raise ValueError(f"scenario {sc.name!r} has no [hostile] table")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="simnet-hostile-") as tmp:
        r = _Run(sc, sc.seed if seed is None else seed, Path(tmp))
        try:
            t = 0.0
            while t <= sc.duration or (t <= sc.duration + SETTLE_TICKS and not r.settled()):
                r.tick(t)
                t += 1.0
            return r.result(time.monotonic() - started, t)
        finally:
            r.close()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simnet.virtual.hostile [SCENARIO] [--seed N] [--json]``."""
    from simnet.scenario import resolve

    p = argparse.ArgumentParser(prog="python -m simnet.virtual.hostile")
    p.add_argument("scenario", nargs="?", default="hostile-member")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    res = run(resolve(args.scenario), args.seed)
    if args.json:
        print(json.dumps(res.to_json()))
    else:
        for k, v in res.to_json().items():
            print(f"{k}: {v}")
    return 0 if res.converged else 1


if __name__ == "__main__":
    sys.exit(main())

"""Building hostile envelopes for the attack tests (issue 15): forged chains, junk control
ops from throwaway keys, future-dated writes, absurd sequence numbers.

Everything here signs real envelopes with real keys, exactly as an attacker holding those
keys could; nothing reaches into a store's internals.
"""

from __future__ import annotations

import os
from typing import Any

from mycelium.crdt import payload as payloads
from mycelium.crdt.hlc import Timestamp
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Envelope, Kind, seal
from mycelium.spaces import control
from mycelium.store.soil import Soil


class Forger:
    """One key's chain in one space, starting wherever the attacker likes."""

    def __init__(self, who: Identity, space: bytes, *, seq: int = 0,
                 prev: bytes | None = None) -> None:
        self.who, self.space, self.seq, self.prev = who, space, seq, prev

    def control(self, payload: bytes) -> Envelope:
        return self._next(Kind.CONTROL, payload, 0, None)

    def data(self, payload: bytes, epoch: int, key: bytes) -> Envelope:
        return self._next(Kind.DATA, payload, epoch, key)

    def listing(self, doc: str, fields: dict[str, Any], epoch: int, key: bytes, *,
                wall_ms: int = 1_700_000_000_000) -> Envelope:
        body = payloads.set_fields("products", doc, fields,
                                   Timestamp(wall_ms, 0, self.who.public_key[:8]))
        return self.data(body.encode(), epoch, key)

    def _next(self, kind: Kind, payload: bytes, epoch: int, key: bytes | None) -> Envelope:
        env = seal(signer=self.who.signing_key, space=self.space, seq=self.seq + 1,
                   prev=self.prev, epoch=epoch, payload=payload, group_key=key, kind=kind)
        self.seq, self.prev = env.seq, env.delta_id
        return env


def throwaway() -> Identity:
    return Identity.from_seed(os.urandom(32))


def junk_control_ops(space: bytes, n: int) -> list[Envelope]:
    """``n`` strangers, each claiming admin for itself in a control op at seq 1."""
    out = []
    for i in range(n):
        who = throwaway()
        op = control.op_add_member(lc=1000 + i, member=who.public_key, role="admin")
        out.append(Forger(who, space).control(op))
    return out


def group_key(soil: Soil, space: bytes, epoch: int | None = None) -> tuple[int, bytes]:
    """An epoch (the current one by default) and its key as ``soil``'s identity holds it."""
    state = soil.space_state(space)
    epoch = state.current_epoch if epoch is None else epoch
    key = state.epoch_key(epoch, soil.identity)
    assert key is not None
    return epoch, key


def raws(envs: list[Envelope]) -> list[bytes]:
    return [e.raw for e in envs]


def sync_rounds(src: Soil, dst: Soil, space: bytes) -> None:
    """One-way sync until ``dst``'s vector equals ``src``'s, at most 8 rounds (each round
    brings what the last one released from pending; a removal's cuts may keep vectors
    apart, which is what the callers look at)."""
    for _ in range(8):
        batch = src.envelopes_since(space, dst.version_vector(space), limit=10_000,
                                    max_bytes=1 << 26)
        if not batch:
            return
        dst.ingest(space, batch)
        if dst.version_vector(space) == src.version_vector(space):
            return

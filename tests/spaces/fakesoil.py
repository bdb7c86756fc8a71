"""A tiny in-memory stand-in for ``Soil`` (docs/dev/store-spaces-contract.md), spaces part only.

Lets the service layer be tested end to end (three identities, sync by copying envelopes)
without SQLite. It follows the contract: CONTROL envelopes are applied to the space's
SpaceState, DATA envelopes are checked with ``check_data_author`` and decrypted with
``epoch_key`` when the key is known.
"""

from __future__ import annotations

from typing import Any

from mycelium.errors import MyceliumError
from mycelium.log.envelope import Envelope, Kind, decode, seal
from mycelium.spaces.genesis import parse_genesis
from mycelium.spaces.service import writable_epoch
from mycelium.spaces.state import SpaceState
from mycelium.sync.ports import IngestResult


class FakeSoil:
    def __init__(self, identity: Any) -> None:
        self.identity = identity
        self._genesis: dict[bytes, bytes] = {}
        self._states: dict[bytes, SpaceState] = {}
        self._envs: dict[bytes, dict[bytes, Envelope]] = {}
        self._heads: dict[bytes, tuple[int, bytes | None]] = {}

    # -- spaces ---------------------------------------------------------------------
    def add_space(self, genesis: bytes) -> bytes:
        g = parse_genesis(genesis)
        if g.space_id not in self._genesis:
            self._genesis[g.space_id] = genesis
            self._states[g.space_id] = SpaceState(g)
            self._envs[g.space_id] = {}
        return g.space_id

    def space_ids(self) -> list[bytes]:
        return list(self._genesis)

    def space_state(self, space_id: bytes) -> SpaceState:
        return self._states[space_id]

    def genesis(self, space_id: bytes) -> bytes:
        return self._genesis[space_id]

    def control_envelopes(self, space_id: bytes) -> list[bytes]:
        return [e.raw for e in self._envs[space_id].values() if e.kind is Kind.CONTROL]

    # -- writes ---------------------------------------------------------------------
    def append(self, space_id: bytes, kind: Kind, payload: bytes) -> Envelope:
        seq, prev = self._heads.get(space_id, (0, None))
        epoch, key = (writable_epoch(self, space_id) if kind is Kind.DATA else (0, None))
        env = seal(signer=self.identity.signing_key, space=space_id, seq=seq + 1, prev=prev,
                   epoch=epoch, payload=payload, group_key=key, kind=kind)
        self._store(space_id, env)
        self._heads[space_id] = (env.seq, env.delta_id)
        return env

    def _store(self, space_id: bytes, env: Envelope) -> None:
        if env.kind is Kind.CONTROL:
            self._states[space_id].apply(env)
        self._envs[space_id][env.delta_id] = env

    # -- sync -----------------------------------------------------------------------
    def version_vector(self, space_id: bytes) -> dict[bytes, int]:
        vv: dict[bytes, int] = {}
        for env in sorted(self._envs[space_id].values(), key=lambda e: e.seq):
            if env.seq == vv.get(env.author, 0) + 1:
                vv[env.author] = env.seq
        return vv

    def heads(self, space_id: bytes) -> dict[bytes, tuple[int, bytes]]:
        out: dict[bytes, tuple[int, bytes]] = {}
        for env in sorted(self._envs[space_id].values(), key=lambda e: e.seq):
            if env.seq == out.get(env.author, (0, b""))[0] + 1:
                out[env.author] = (env.seq, env.delta_id)
        return out

    def envelopes_since(self, space_id: bytes, remote: dict[bytes, int], *, limit: int,
                        max_bytes: int) -> list[bytes]:
        envs = sorted(self._envs[space_id].values(), key=lambda e: (e.author, e.seq))
        out, size = [], 0
        for env in envs:
            if env.seq > remote.get(env.author, 0):
                if out and (len(out) >= limit or size + len(env.raw) > max_bytes):
                    break
                out.append(env.raw)
                size += len(env.raw)
        return out

    def all_envelopes(self, space_id: bytes) -> list[bytes]:
        return [e.raw for e in self._envs[space_id].values()]

    def ingest(self, space_id: bytes, envelopes: list[bytes]) -> IngestResult:
        result = IngestResult()
        state = self._states[space_id]
        for raw in envelopes:
            try:
                env = decode(raw)
                env.verify_signature()
                if env.delta_id in self._envs[space_id]:
                    result.duplicates += 1
                    continue
                if env.kind is Kind.DATA:
                    state.check_data_author(env)
                self._store(space_id, env)
                result.accepted.append(env.delta_id)
            except MyceliumError as exc:
                result.rejected.append((None, exc.reason))
        return result

    # -- reads ----------------------------------------------------------------------
    def readable(self, space_id: bytes) -> set[bytes]:
        """Plaintexts of the DATA envelopes this identity can decrypt."""
        state = self._states[space_id]
        out = set()
        for env in self._envs[space_id].values():
            if env.kind is Kind.DATA:
                key = state.epoch_key(env.epoch, self.identity)
                if key is not None:
                    out.add(env.open(key))
        return out


def sync(a: FakeSoil, b: FakeSoil, space_id: bytes) -> None:
    """Exchange every envelope both ways (what anti-entropy achieves)."""
    b.ingest(space_id, a.all_envelopes(space_id))
    a.ingest(space_id, b.all_envelopes(space_id))

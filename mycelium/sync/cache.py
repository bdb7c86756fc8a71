"""A shared cache of decoded and verified envelopes, keyed by their raw bytes.

Decoding an envelope costs a few microseconds and an Ed25519 verification ~60 µs. A
node sees the same envelope many times (from several sessions, from gossip), and a
simulator running 1000 nodes in one process sees it ~1000 times. One :class:`VerifyCache`
shared by all of them makes each envelope decoded and verified once per process; every
later sighting is one dict lookup (``bytes`` objects cache their hash, and simulated
links pass the same object around).

Failures are cached too (a flood of one forged envelope costs one verification). The
cache is bounded: when full, the oldest entries are evicted (insertion order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from mycelium.errors import MyceliumError
from mycelium.log import envelope as env_mod
from mycelium.log.envelope import Kind


@dataclass(frozen=True, slots=True)
class EnvelopeInfo:
    """The header of a decoded envelope plus its id: what sync needs, no ciphertext."""

    space: bytes
    author: bytes
    seq: int
    prev: bytes | None
    kind: Kind
    delta_id: bytes


class CachedRejection(MyceliumError):
    """An envelope known to be invalid; ``reason`` is the original failure's reason."""


class VerifyCache:
    """raw envelope bytes -> decoded header (and signature verdict), bounded."""

    __slots__ = ("_bad", "_info", "_verified", "decodes", "hits", "lookup", "max_entries",
                 "verified_set", "verifies")

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self.max_entries = max_entries
        self._info: dict[bytes, EnvelopeInfo] = {}
        self._verified: set[bytes] = set()
        self._bad: dict[bytes, str] = {}
        self.decodes = 0
        self.verifies = 0
        self.hits = 0
        #: ``lookup(raw)``: the cached header or None, like :meth:`peek` without a call
        #: layer; ``verified_set``: raws whose signature checked out. For hot loops
        #: (``MemoryStore.ingest``, the session); neither decodes nor verifies anything.
        self.lookup = self._info.get
        self.verified_set = self._verified

    def __len__(self) -> int:
        return len(self._info) + len(self._bad)

    def info(self, raw: bytes) -> EnvelopeInfo:
        """Decode ``raw`` (cached). Raises ``CachedRejection`` for malformed envelopes."""
        info = self._info.get(raw)
        if info is not None:
            self.hits += 1
            return info
        return self._decode(raw)[0]

    def peek(self, raw: bytes) -> EnvelopeInfo | None:
        """The cached header of ``raw`` if it was decoded before, else None (no decoding,
        no signature verdict: callers must not treat the result as authentic)."""
        return self._info.get(raw)

    def verified(self, raw: bytes) -> EnvelopeInfo:
        """Decode and check the signature (both cached). Raises ``CachedRejection``."""
        info = self._info.get(raw)
        if info is not None and raw in self._verified:
            self.hits += 1
            return info
        info, env = self._decode(raw)
        self._check_signature(raw, env)
        return info

    def verify_chain(self, raws: Sequence[bytes]) -> None:
        """Pre-verify a batch cheaply (DESIGN.md §3): per (space, author), check the
        newest envelope's signature, then accept each older one whose delta id is the
        signed ``prev`` of an accepted one (the author committed to exactly those bytes).
        N chained envelopes cost one Ed25519 verification plus N hashes; envelopes not
        vouched for this way get their own signature check.
        """
        Group = list[tuple[EnvelopeInfo, bytes, env_mod.Envelope | None]]
        groups: dict[tuple[bytes, bytes], Group] = {}
        for raw in raws:
            if raw in self._verified:
                continue
            info = self._info.get(raw)
            env = None
            if info is None:
                try:
                    info, env = self._decode(raw)
                except CachedRejection:
                    continue
            groups.setdefault((info.space, info.author), []).append((info, raw, env))
        for group in groups.values():
            group.sort(key=lambda p: p[0].seq, reverse=True)
            vouched: bytes | None = None  # prev of the last authentic envelope
            for info, raw, env in group:
                if vouched is not None and info.delta_id == vouched:
                    self._verified.add(raw)
                    vouched = info.prev
                    continue
                try:
                    if env is None:
                        self.verified(raw)
                    else:
                        self._check_signature(raw, env)
                except CachedRejection:
                    vouched = None
                    continue
                vouched = info.prev

    def _check_signature(self, raw: bytes, env: env_mod.Envelope) -> None:
        self.verifies += 1
        try:
            env.verify_signature()
        except MyceliumError as exc:
            self._info.pop(raw, None)
            self._remember_bad(raw, exc.reason)
            raise CachedRejection(str(exc), reason=exc.reason) from exc
        self._verified.add(raw)

    def _decode(self, raw: bytes) -> tuple[EnvelopeInfo, env_mod.Envelope]:
        bad = self._bad.get(raw)
        if bad is not None:
            self.hits += 1
            raise CachedRejection("envelope previously rejected", reason=bad)
        self.decodes += 1
        try:
            env = env_mod.decode(raw)
        except MyceliumError as exc:
            self._remember_bad(raw, exc.reason)
            raise CachedRejection(str(exc), reason=exc.reason) from exc
        info = EnvelopeInfo(space=env.space, author=env.author, seq=env.seq, prev=env.prev,
                            kind=env.kind, delta_id=hashlib.sha256(raw).digest())
        self._make_room()
        self._info[raw] = info
        return info, env

    def _remember_bad(self, raw: bytes, reason: str) -> None:
        self._make_room()
        self._bad[raw] = reason

    def _make_room(self) -> None:
        while len(self._info) + len(self._bad) >= self.max_entries:
            victim = self._info if len(self._info) >= len(self._bad) else self._bad
            key = next(iter(victim))
            del victim[key]
            self._verified.discard(key)

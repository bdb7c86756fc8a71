"""An in-memory :class:`~mycelium.sync.ports.DeltaStore` for tests and simnet.

It does the real checks a store must do on received envelopes (decoding, Ed25519
signature, space, per-author ``seq``/``prev`` chain, pending gaps, optional membership)
but keeps everything in dicts and lists. With a shared :class:`VerifyCache`, ingesting an
envelope that any node in the process has already verified is a handful of dict and list
operations, which is what lets simnet push millions of receptions through 1000 nodes.

Per space and author the store keeps the contiguous chain (raw bytes and delta ids,
index ``seq - 1``) and a bounded map of pending envelopes that arrived ahead of a gap.
It does not decrypt or materialise documents (that is Soil's job).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.log.envelope import Envelope, Kind, seal
from mycelium.sync.cache import CachedRejection, VerifyCache
from mycelium.sync.ports import IngestResult, VersionVector

#: (space, author) -> may this author write in this space?
MembershipHook = Callable[[bytes, bytes], bool]


@dataclass(slots=True)
class _AuthorLog:
    raw: list[bytes] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)
    pending: dict[int, bytes] = field(default_factory=dict)  # seq -> raw, ahead of a gap


@dataclass(slots=True)
class _Space:
    authors: dict[bytes, _AuthorLog] = field(default_factory=dict)
    vv: VersionVector = field(default_factory=dict)
    pending: int = 0


class MemoryStore:
    """Dict-backed envelope store implementing ``DeltaStore``.

    ``cache``: share one :class:`VerifyCache` between stores to verify each envelope once.
    ``is_member``: optional hook; authors for whom it returns False are rejected
    (``not_member``). ``max_pending``: per-space bound on envelopes held ahead of gaps
    (beyond it, such envelopes are dropped and counted as ``pending_full`` rejections;
    anti-entropy brings them again later).
    """

    def __init__(
        self,
        *,
        cache: VerifyCache | None = None,
        is_member: MembershipHook | None = None,
        max_pending: int = 10_000,
    ) -> None:
        self.cache = cache if cache is not None else VerifyCache()
        self.is_member = is_member
        self.max_pending = max_pending
        self._spaces: dict[bytes, _Space] = {}
        #: rejection reason -> count, for tests and reports.
        self.rejections: dict[str, int] = {}

    # -- spaces ---------------------------------------------------------------------
    def add_space(self, space: bytes) -> None:
        """Become a member of ``space`` (idempotent)."""
        self._spaces.setdefault(space, _Space())

    def member_spaces(self) -> list[bytes]:
        return list(self._spaces)

    def version_vector(self, space: bytes) -> VersionVector:
        sp = self._spaces.get(space)
        return dict(sp.vv) if sp is not None else {}

    def known_seq(self, space: bytes, author: bytes) -> int:
        """Contiguous seq held for one author (no vector copy; for gossip bookkeeping)."""
        sp = self._spaces.get(space)
        return sp.vv.get(author, 0) if sp is not None else 0

    def pending_count(self, space: bytes) -> int:
        sp = self._spaces.get(space)
        return sp.pending if sp is not None else 0

    def envelopes(self, space: bytes) -> list[bytes]:
        """Every contiguous envelope of ``space`` (authors in first-seen order, seq ascending)."""
        sp = self._spaces.get(space)
        return [r for log in sp.authors.values() for r in log.raw] if sp is not None else []

    # -- DeltaStore -----------------------------------------------------------------
    def envelopes_since(
        self, space: bytes, remote: VersionVector, *, limit: int, max_bytes: int
    ) -> list[bytes]:
        sp = self._spaces.get(space)
        out: list[bytes] = []
        if sp is None or limit <= 0:
            return out
        size = 0
        get = remote.get
        for author, log in sp.authors.items():
            raws = log.raw
            start = get(author, 0)
            if start >= len(raws):
                continue  # the peer is up to date with this author: no slice, no loop
            for i in range(start, len(raws)):
                raw = raws[i]
                if out and (len(out) >= limit or size + len(raw) > max_bytes):
                    return out
                out.append(raw)
                size += len(raw)
        return out

    def take_since(
        self, space: bytes, view: VersionVector, *, limit: int, max_bytes: int
    ) -> tuple[list[bytes], int, bool]:
        """``envelopes_since`` plus the session's prefix check in one step (the sync
        session uses it when a store has it): the envelopes a peer with vector ``view``
        lacks, at most ``limit`` and ``max_bytes`` (here never more, even for the first),
        advancing ``view`` over them. Returns (envelopes, their total size, blocked):
        ``blocked`` when nothing was taken because the next envelope exceeds ``max_bytes``.
        """
        sp = self._spaces.get(space)
        out: list[bytes] = []
        size = 0
        if sp is None or limit <= 0:
            return out, size, False
        get = view.get
        for author, log in sp.authors.items():
            raws = log.raw
            start = get(author, 0)
            end = len(raws)
            if start >= end:
                continue
            chunk = raws[start:start + limit - len(out)]
            csize = sum(map(len, chunk))
            if size + csize <= max_bytes:
                out += chunk
                size += csize
                taken = len(chunk)
            else:
                taken = 0
                for raw in chunk:
                    if size + len(raw) > max_bytes:
                        break
                    out.append(raw)
                    size += len(raw)
                    taken += 1
            if taken:
                view[author] = start + taken
            if start + taken < end:  # stopped by a limit
                return out, size, not out
        return out, size, False

    def ingest(self, space: bytes, envelopes: Sequence[bytes]) -> IngestResult:
        result = IngestResult()
        sp = self._spaces.get(space)
        if sp is None:
            for _ in envelopes:
                self._reject(result, None, "unknown_space")
            return result
        cache = self.cache
        known, verified = cache.lookup, cache.verified_set
        authors = sp.authors
        chained = len(envelopes) < 2  # batches are pre-verified once (verify_chain)
        hits = dups = 0
        held: dict[bytes, int] = {}  # author -> highest seq in the batch (see IngestResult)
        hget = held.get
        fresh: list[bytes] = []
        accepted = result.accepted
        vv = sp.vv
        plain = self.is_member is None
        run: bytes | None = None  # author of the current run (batches come per author)
        log: _AuthorLog | None = None
        for i, raw in enumerate(envelopes):
            info = known(raw)
            if info is not None:
                hits += 1
                author, seq = info.author, info.seq
                if seq > hget(author, 0):
                    held[author] = seq
                if author != run:
                    run, log = author, authors.get(author)
                # Duplicate fast path, keyed on (author, seq), before any verification:
                # equal bytes at that (author, seq) were verified when we stored them.
                if log is not None:
                    raws = log.raw
                    have = len(raws)
                    if 0 < seq <= have and raws[seq - 1] == raw:
                        dups += 1
                        continue
                    if (seq == have + 1 and have and plain and not log.pending
                            and raw in verified and info.space == space
                            and info.prev == log.ids[-1]):
                        # Fast append: the next envelope of a known chain, verified before.
                        raws.append(raw)
                        log.ids.append(info.delta_id)
                        accepted.append(info.delta_id)
                        fresh.append(raw)
                        vv[author] = seq
                        continue
                if raw not in verified:
                    info = None
            run = None  # the general path below may create or change logs
            if info is None:
                if not chained:
                    chained = True
                    cache.verify_chain(envelopes[i:])
                try:
                    info = cache.verified(raw)
                except CachedRejection as exc:
                    self._reject(result, None, exc.reason)
                    continue
                if info.seq > hget(info.author, 0):
                    held[info.author] = info.seq
            if info.space != space:
                self._reject(result, info.delta_id, "wrong_space")
                continue
            if self.is_member is not None and not self.is_member(space, info.author):
                self._reject(result, info.delta_id, "not_member")
                continue
            log = authors.get(info.author)
            if log is None:
                log = authors[info.author] = _AuthorLog()
            have = len(log.raw)
            seq = info.seq
            if seq <= have:
                if log.ids[seq - 1] == info.delta_id:
                    dups += 1
                else:
                    self._reject(result, info.delta_id, "fork")
            elif seq == have + 1:
                if info.prev != (log.ids[-1] if have else None):
                    self._reject(result, info.delta_id, "broken_chain")
                    continue
                log.raw.append(raw)
                log.ids.append(info.delta_id)
                result.accepted.append(info.delta_id)
                fresh.append(raw)
                if log.pending:
                    self._drain(sp, log, result)
                sp.vv[info.author] = len(log.raw)
            elif seq in log.pending:
                dups += 1
            elif sp.pending >= self.max_pending:
                self._reject(result, info.delta_id, "pending_full")
            else:
                log.pending[seq] = raw
                sp.pending += 1
                result.pending += 1
        result.duplicates = dups
        result.held = held
        result.fresh = fresh
        cache.hits += hits
        return result

    def _drain(self, sp: _Space, log: _AuthorLog, result: IngestResult) -> None:
        """Append pending envelopes that the last append made contiguous."""
        while (raw := log.pending.pop(len(log.raw) + 1, None)) is not None:
            sp.pending -= 1
            info = self.cache.verified(raw)  # verified when it was parked
            if info.prev != log.ids[-1]:
                self._reject(result, info.delta_id, "broken_chain")
                continue
            log.raw.append(raw)
            log.ids.append(info.delta_id)
            result.accepted.append(info.delta_id)

    def _reject(self, result: IngestResult, delta_id: bytes | None, reason: str) -> None:
        result.rejected.append((delta_id, reason))
        self.rejections[reason] = self.rejections.get(reason, 0) + 1

    # -- local writes ---------------------------------------------------------------
    def append_local(
        self,
        space: bytes,
        payload: bytes,
        *,
        signer: Ed25519PrivateKey,
        group_key: bytes | None = None,
        epoch: int = 0,
        kind: Kind = Kind.DATA,
        nonce: bytes | None = None,
    ) -> Envelope:
        """Seal ``payload`` as the signer's next envelope in ``space`` and store it."""
        self.add_space(space)
        sp = self._spaces[space]
        author = signer.public_key().public_bytes_raw()
        log = sp.authors.get(author)
        seq = len(log.raw) + 1 if log else 1
        prev = log.ids[-1] if log and log.raw else None
        env = seal(signer=signer, space=space, seq=seq, prev=prev, epoch=epoch, payload=payload,
                   group_key=group_key, kind=kind, nonce=nonce)
        result = self.ingest(space, [env.raw])
        if not result.accepted:
            raise RuntimeError(f"local append refused: {result.rejected}")
        return env

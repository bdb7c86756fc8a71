"""Chain validation of per-author delta logs (protocols/delta.md §5–§6).

Sans-IO: :func:`validate_batch` takes raw envelopes plus what the caller already holds
(each author's head ``(seq, delta_id)`` and a lookup of stored ids) and sorts every
envelope into exactly one bucket — ready to append, pending (ahead of a gap),
duplicate, or rejected with a precise reason. It never touches storage.

Batch verification (DESIGN.md §3 "Verification cost"): envelopes of one author whose
``seq`` are consecutive and whose ``prev`` equals the ``delta_id`` of the one before form
a *run*. The newest envelope's signature covers its ``prev``, which is the hash of the one
before, and so on: one Ed25519 verification plus N SHA-256 hashes authenticates the whole
run. If that signature fails, the run is scanned back from the newest to the first
envelope whose signature verifies, which vouches for all before it, so one forged
envelope cannot make honest ones be refused. A run of one is simply verified.

Membership, epoch and decryption checks need the space's state and keys; they live in the
store, but their errors are re-exported here so every delta rejection reason has one home.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from mycelium import accel
from mycelium.crypto.aead import DecryptError
from mycelium.errors import CodecError, LimitExceeded, MyceliumError
from mycelium.log import envelope as envelope_mod
from mycelium.log.envelope import BadSignature, Envelope, EnvelopeError, UnknownVersion
from mycelium.log.limits import MAX_STORED_SEQ
from mycelium.spaces.errors import NotMember, RemovedAuthor, UnknownEpoch

__all__ = [
    "CHAIN_CONFLICTS", "BadSignature", "BrokenChain", "ChainError", "CodecError",
    "DecryptError", "Duplicate", "EnvelopeError", "Fork", "Head", "LimitExceeded",
    "NotMember", "PinnedHead", "RemovedAuthor", "SeqGap", "SeqTooLarge", "StoredId",
    "UnknownEpoch", "UnknownVersion", "Verdict", "WrongSpace", "authentic_ids",
    "decode_for_space", "link_pending", "validate_batch", "verify_run",
]

#: An author's newest contiguous envelope: ``(seq, delta_id)``.
Head = tuple[int, bytes]
#: ``(author, seq) -> delta_id`` of a stored envelope, or None.
StoredId = Callable[[bytes, int], bytes | None]
#: ``author -> (seq, delta_id)`` its removal pinned, or None (spaces.md §4.3).
PinnedHead = Callable[[bytes], "Head | None"]


class ChainError(MyceliumError):
    """An authentic envelope that cannot extend its author's chain."""

    reason = "broken_chain"


class BrokenChain(ChainError):
    """``prev`` is not the delta_id of the author's envelope ``seq - 1``."""

    reason = "broken_chain"


class Fork(ChainError):
    """The author signed two different envelopes with the same ``seq`` (equivocation)."""

    reason = "fork"


#: Rejections meaning "the author's chain held here is another one than this envelope's"
#: (stores look for a removed member's pinned head among them; archives for conflicts).
CHAIN_CONFLICTS = frozenset({Fork.reason, BrokenChain.reason})


class Duplicate(MyceliumError):
    """The envelope is already held (not an error for the sender; counted, not stored)."""

    reason = "duplicate"


class SeqGap(MyceliumError):
    """``seq`` is beyond the author's head + 1: held as pending until the gap is filled."""

    reason = "seq_gap"


class SeqTooLarge(MyceliumError):
    """``seq`` is a valid uint64 but beyond :data:`MAX_STORED_SEQ`: no chain can reach it,
    so it is refused rather than held pending (protocols/delta.md §6)."""

    reason = "seq_too_large"


class WrongSpace(EnvelopeError):
    """The envelope names another space than the one it was delivered for."""

    reason = "wrong_space"


@dataclass
class Verdict:
    """Where each envelope of a batch goes. Every input lands in exactly one list.

    ``ready``: authenticated and extending the author's head contiguously; per author
    in ascending ``seq`` (authors may interleave). ``pending``: authenticated but ahead of
    a gap. ``rejected``: ``(delta_id or None if undecodable, reason)``.
    """

    ready: list[Envelope] = field(default_factory=list)
    pending: list[Envelope] = field(default_factory=list)
    duplicates: list[Envelope] = field(default_factory=list)
    rejected: list[tuple[bytes | None, str]] = field(default_factory=list)


def decode_for_space(raw: bytes, space: bytes) -> Envelope:
    """Decode one envelope and check it belongs to ``space`` (signature not checked).

    Raises :class:`CodecError` (``bad_cbor`` / ``non_canonical``), :class:`LimitExceeded`
    (``oversized``), :class:`UnknownVersion`, :class:`EnvelopeError` or :class:`WrongSpace`.
    """
    if not isinstance(raw, bytes):
        raise CodecError("envelope must be bytes")
    env = envelope_mod.decode(raw)
    if env.space != space:
        raise WrongSpace("envelope belongs to another space")
    return env


def verify_run(run: Sequence[Envelope]) -> tuple[list[Envelope], list[Envelope]]:
    """Authenticate a linked run (see module docstring): ``(authentic, bad_signature)``.

    ``run`` must be one author's envelopes with consecutive seqs, each ``prev`` equal to
    the previous envelope's ``delta_id``. Costs one signature check when all is well.
    """
    # Authenticity is per chain (delta.md §6): the newest envelope whose own signature
    # verifies vouches for every envelope before it, whatever their own signatures, so
    # scan back from the newest. Checking the earlier ones on their own instead would
    # refuse an envelope the author vouched for whenever junk follows it in the batch.
    for i in range(len(run) - 1, -1, -1):
        try:
            run[i].verify_signature()
        except BadSignature:
            continue
        return list(run[: i + 1]), list(run[i + 1:])
    return [], list(run)


def authentic_ids(envs: Iterable[Envelope]) -> set[bytes]:
    """Delta ids of ``envs`` (any authors, any order) that are authentic by the per-chain
    rule (delta.md §6): own signature valid, or named through ``prev`` by an authentic
    envelope of the same author among ``envs``. One verification per author when all is
    well. For checks that see a whole set at once (an archive's control log)."""
    by_author: dict[bytes, list[Envelope]] = {}
    for env in envs:
        by_author.setdefault(env.author, []).append(env)
    out: set[bytes] = set()
    for chain in by_author.values():
        chain.sort(key=lambda e: e.seq, reverse=True)
        vouched: bytes | None = None  # prev of the last authentic envelope
        for env in chain:
            if vouched is None or env.delta_id != vouched:
                try:
                    env.verify_signature()
                except BadSignature:
                    vouched = None
                    continue
            out.add(env.delta_id)
            vouched = env.prev
    return out


def validate_batch(
    space: bytes,
    raws: Sequence[bytes],
    heads: Mapping[bytes, Head],
    stored_id: StoredId,
    pinned_head: PinnedHead | None = None,
) -> Verdict:
    """Decode, authenticate and chain-check a batch of envelopes for ``space``.

    ``heads[author]`` is the author's newest contiguous envelope held by the caller;
    ``stored_id(author, seq)`` returns the id held at an older position (for duplicate
    and fork detection). ``pinned_head(author)``: the ``(seq, delta_id)`` a removal
    pinned for that author (spaces.md §4.3), or None; when two envelopes of the batch
    share a seq, the one on the pinned chain wins, whatever their ids (else a removed
    member mixing a forged chain into every batch would keep its real one out). Never
    raises for bad input.
    """
    compiled = accel.chain_runs  # the common batch, sorted in C (docs/accel.md)
    if compiled is not None:
        runs = compiled(raws, space, heads)  # None unless all are ready (or heads no dict)
        if runs is not None:
            verdict = _authentic_runs(runs)
            if verdict is not None:
                return verdict
    return _validate_batch(space, raws, heads, stored_id, pinned_head)


def _authentic_runs(runs: list[list[Envelope]]) -> Verdict | None:
    """The verdict for linked runs extending their authors' heads, if every run's newest
    signature verifies (else None: the caller sorts the batch out envelope by envelope)."""
    verdict = Verdict()
    for run in runs:
        try:
            run[-1].verify_signature()
        except BadSignature:
            return None
        verdict.ready += run
    return verdict


def _validate_batch(
    space: bytes,
    raws: Sequence[bytes],
    heads: Mapping[bytes, Head],
    stored_id: StoredId,
    pinned_head: PinnedHead | None = None,
) -> Verdict:
    """:func:`validate_batch` in Python, for every batch (the reference)."""
    verdict = Verdict()
    by_author: dict[bytes, dict[int, list[Envelope]]] = {}
    seen: set[bytes] = set()
    for raw in raws:
        try:
            env = decode_for_space(raw, space)
        except MyceliumError as exc:
            verdict.rejected.append((_id_or_none(raw, exc), exc.reason))
            continue
        delta_id = env.delta_id
        if delta_id in seen:
            verdict.duplicates.append(env)
            continue
        seen.add(delta_id)
        if env.seq > MAX_STORED_SEQ:
            verdict.rejected.append((delta_id, SeqTooLarge.reason))
            continue
        by_seq = by_author.get(env.author)
        if by_seq is None:
            by_seq = by_author[env.author] = {}
        same_seq = by_seq.get(env.seq)
        if same_seq is None:  # the common case: one envelope per seq
            by_seq[env.seq] = [env]
        else:
            same_seq.append(env)
    for author, by_seq in by_author.items():
        pin = pinned_head(author) if pinned_head is not None else None
        _validate_author(by_seq, heads.get(author), author, stored_id, verdict, pin)
    return verdict


def link_pending(
    head: tuple[int, bytes | None], pending: Mapping[int, Envelope]
) -> tuple[list[Envelope], list[Envelope]]:
    """Pending (already authenticated) envelopes that now extend ``head``: ``(ready, broken)``.

    ``head`` is ``(0, None)`` for an author with nothing stored yet. Walks ``seq + 1,
    seq + 2, …`` while pending envelopes exist; one whose ``prev`` does not match is
    broken (rejected ``broken_chain``) and stops the walk.
    """
    ready: list[Envelope] = []
    seq, last_id = head
    while (nxt := pending.get(seq + 1)) is not None:
        if nxt.prev != last_id:
            return ready, [nxt]
        ready.append(nxt)
        seq, last_id = nxt.seq, nxt.delta_id
    return ready, []


# -- internals ------------------------------------------------------------------------
def _id_or_none(raw: object, exc: MyceliumError) -> bytes | None:
    """The delta id of a decodable-but-invalid envelope (so peers can tell which one)."""
    if isinstance(exc, WrongSpace | EnvelopeError) and isinstance(raw, bytes):
        import hashlib

        return hashlib.sha256(raw).digest()
    return None


def _validate_author(
    by_seq: dict[int, list[Envelope]],
    head: Head | None,
    author: bytes,
    stored_id: StoredId,
    verdict: Verdict,
    pin: Head | None = None,
) -> None:
    head_seq, head_id = head if head is not None else (0, None)
    fresh: dict[int, list[Envelope]] = {}
    for seq, envs in by_seq.items():
        if seq <= head_seq:
            _old(envs, stored_id(author, seq), verdict)
        else:
            fresh[seq] = envs
    chain = _pick_per_seq(fresh, head_seq, head_id, verdict, _on_pinned_chain(fresh, pin))
    expect_seq, expect_id = head_seq, head_id
    for run in _runs(chain):
        good, bad = verify_run(run)
        verdict.rejected += [(e.delta_id, BadSignature.reason) for e in bad]
        for sub in _runs(good) if bad else [good]:
            if sub[0].seq != expect_seq + 1:
                verdict.pending += sub
            elif sub[0].prev != expect_id:
                verdict.rejected += [(e.delta_id, BrokenChain.reason) for e in sub]
                expect_seq = -1  # nothing later can link in this batch
            else:
                verdict.ready += sub
                expect_seq, expect_id = sub[-1].seq, sub[-1].delta_id


def _old(envs: list[Envelope], held: bytes | None, verdict: Verdict) -> None:
    """Envelopes at or below the head: duplicates, or (if authentic) forks."""
    for env in envs:
        if env.delta_id == held:
            verdict.duplicates.append(env)
            continue
        try:
            env.verify_signature()
        except BadSignature as exc:
            verdict.rejected.append((env.delta_id, exc.reason))
            continue
        verdict.rejected.append((env.delta_id, Fork.reason))


def _on_pinned_chain(fresh: dict[int, list[Envelope]], pin: Head | None) -> frozenset[bytes]:
    """Ids among ``fresh`` reached from the pinned head through ``prev`` (the head
    included, when it is in the batch): the chain the removal kept."""
    if pin is None:
        return frozenset()
    by_id = {e.delta_id: e for envs in fresh.values() for e in envs}
    out: set[bytes] = set()
    cur = by_id.get(pin[1])
    while cur is not None and cur.delta_id not in out:
        out.add(cur.delta_id)
        cur = by_id.get(cur.prev) if cur.prev is not None else None
    return frozenset(out)


def _pick_per_seq(
    fresh: dict[int, list[Envelope]], head_seq: int, head_id: bytes | None, verdict: Verdict,
    preferred: frozenset[bytes] = frozenset(),
) -> list[Envelope]:
    """One candidate per seq, ascending. Several at one seq (rare): keep an authentic one
    on the pinned chain (``preferred``), else one that links to the chosen predecessor;
    the rest are bad signatures or forks."""
    chosen: list[Envelope] = []
    prev_seq, prev_id = head_seq, head_id
    for seq in sorted(fresh):
        envs = fresh[seq]
        pick: Envelope | None = envs[0]
        if len(envs) > 1:
            pick = _resolve_collision(envs, prev_id if prev_seq == seq - 1 else None, verdict,
                                      preferred)
        if pick is None:
            continue
        chosen.append(pick)
        prev_seq, prev_id = seq, pick.delta_id
    return chosen


def _resolve_collision(
    envs: list[Envelope], want_prev: bytes | None, verdict: Verdict,
    preferred: frozenset[bytes] = frozenset(),
) -> Envelope | None:
    authentic = []
    for env in envs:
        try:
            env.verify_signature()
            authentic.append(env)
        except BadSignature as exc:
            verdict.rejected.append((env.delta_id, exc.reason))
    if not authentic:
        return None
    authentic.sort(key=lambda e: (e.delta_id not in preferred, e.prev != want_prev, e.delta_id))
    for loser in authentic[1:]:
        verdict.rejected.append((loser.delta_id, Fork.reason))
    return authentic[0]


def _runs(chain: Sequence[Envelope]) -> list[list[Envelope]]:
    """Split an ascending chain into linked runs (consecutive seq, prev == previous id)."""
    runs: list[list[Envelope]] = []
    for env in chain:
        last = runs[-1][-1] if runs else None
        if last is not None and env.seq == last.seq + 1 and env.prev == last.delta_id:
            runs[-1].append(env)
        else:
            runs.append([env])
    return runs

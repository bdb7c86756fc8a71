"""Pinned chains and cuts: which envelopes of a removed member (or a revoked or stopped
delegate) a store keeps (protocols/spaces.md §4.3–§4.4, delegation.md §4a–§4c).

A removal pins the removed author's chain at ``keep``: only the chain whose envelope
``keep`` is the removal's ``head`` is valid, and nothing beyond ``keep``. A store that
stored more before it heard of the removal (or another chain) must cut it back, or its
version vector differs for good from that of every store that heard of the removal first.

Both stores that hold chains, Soil (``mycelium/store/soil.py``) and the relay's keyless
store (``mycelium/relay/store.py``), take these decisions here, so they cut the same
chains at the same seqs; each only carries a decision out on its own tables. Pure: the
caller passes its heads and a lookup of stored delta ids.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from mycelium.log.envelope import Envelope
from mycelium.spaces.state import SpaceState

#: ``(seq, delta_id)`` of an author's newest contiguous stored envelope.
StoredHead = tuple[int, bytes | None]
#: ``(author, seq) -> delta_id`` of the stored envelope there, or None.
StoredId = Callable[[bytes, int], bytes | None]


@dataclass(frozen=True, slots=True)
class Cut:
    """Delete ``author``'s stored envelopes above ``to`` (0: all of them); its head
    becomes the envelope at ``to``. ``drop_pending``: its pending rows go too (not when
    the pinned chain may already wait among them)."""

    author: bytes
    to: int
    drop_pending: bool = True


def pinned_chains(state: SpaceState, envs: Sequence[Envelope]) -> set[bytes] | None:
    """Ids among ``envs`` proven to lie on a removed author's pinned chain: walked back
    through ``prev`` from the envelope its removal pins (spaces.md §4.3). An envelope of
    a pinned author up to ``keep`` that is not among them waits pending until the rest
    of the chain (up to the pinned head) is here. None when the space pins no chain."""
    if not state.has_pins:
        return None
    candidates: dict[bytes, Envelope] = {}
    tips: list[Envelope] = []
    for env in envs:
        pin = state.pinned_head(env.author)
        if pin is not None and env.seq <= pin[0]:
            candidates[env.delta_id] = env
            if env.delta_id == pin[1]:
                tips.append(env)
    ok: set[bytes] = set()
    for tip in tips:
        cur: Envelope | None = tip
        while cur is not None and cur.delta_id not in ok:
            ok.add(cur.delta_id)
            cur = candidates.get(cur.prev) if cur.prev is not None else None
    return ok


def pinned_conflict(state: SpaceState, delta_id: bytes) -> bytes | None:
    """The removed author whose pinned head ``delta_id`` is, when a store refused that
    envelope as a fork or a broken chain: the chain it stores for that author is another
    one (stored before the removal was known) and is cut (:func:`plan_cuts`, ``foreign``)
    so the pinned chain can come (spaces.md §4.4). None otherwise."""
    return state.pinned_author(delta_id) if state.has_pins else None


def plan_cuts(state: SpaceState, heads: Mapping[bytes, StoredHead], stored: StoredId,
              foreign: Collection[bytes] = ()) -> list[Cut]:
    """The cuts a store with these ``heads`` makes after control ops arrived.

    ``foreign``: authors whose pinned head the store refused as a chain conflict
    (:func:`pinned_conflict`): cut to 0, pending rows kept (the pinned chain may wait
    there). Then every author in :attr:`SpaceState.chains_to_cut` (removed, revoked or
    stopped) stored beyond ``keep``, or on another chain than the pinned one, is cut back
    to ``keep`` — to 0 when its envelope at ``keep`` is not the pinned head (none of that
    chain can be told apart from a forgery)."""
    cuts = [Cut(pub, 0, drop_pending=False) for pub in sorted(foreign) if pub in heads]
    for pub in sorted(state.chains_to_cut):
        head = heads.get(pub)
        if head is None:
            continue
        keep, pin = state.kept_seq(pub), state.pinned_head(pub)
        if head[0] < keep or (head[0] == keep and (pin is None or head[1] == pin[1])):
            continue  # nothing beyond keep, and the chain is (so far) the pinned one
        to = keep
        if pin is not None and (head[1] if head[0] == keep else stored(pub, keep)) != pin[1]:
            to = 0
        cuts.append(Cut(pub, to))
    return cuts


def pinned_pending(state: SpaceState, author: bytes, head_seq: int,
                   pending: Mapping[int, bytes], prev_of: Callable[[int], bytes | None],
                   ) -> tuple[bool, int | None]:
    """Whether removed ``author``'s pinned head waits among its pending rows
    (``pending``: seq -> delta id; ``prev_of(seq)``: that row's ``prev``), and the seq of
    a pending row to drop, or None. Walking back from the pinned head through ``prev``,
    the first row that is not the envelope its successor names belongs to a forged chain
    and is dropped, so the real one (which the next sync brings again) can take its
    place. A store drains the author's pending rows only when the head waits."""
    pin = state.pinned_head(author)
    if pin is None or pending.get(pin[0]) != pin[1]:
        return False, None
    want: bytes | None = pin[1]
    for seq in range(pin[0], head_seq, -1):
        held = pending.get(seq)
        if held is None or want is None:
            break
        if held != want:
            return True, seq
        want = prev_of(seq)
    return True, None


def stale_pending(state: SpaceState, pending: Mapping[bytes, Collection[int]]) -> dict[bytes, int]:
    """author -> ``keep`` for removed members and revoked delegates holding pending rows
    (``pending``: author -> seqs) beyond their ``keep``: admission refuses those for good
    (``removed_author``), so a store drops them rather than hold them forever (pending
    is a cache: were the author added again, sync brings them again)."""
    former = state.former_members
    out: dict[bytes, int] = {}
    for author, seqs in pending.items():
        if author in former:
            keep = state.kept_seq(author)
            if any(seq > keep for seq in seqs):
                out[author] = keep
    return out

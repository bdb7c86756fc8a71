"""What a store sends a peer that lacks part of a space (protocols/delta.md §6, senders).

Shared by :class:`~mycelium.store.soil.Soil` and the relay store, which differ only in
where rows come from. A batch holds whole runs per author in ascending ``seq``; only its
last author's segment may stop before that author's head, and it then ends on an envelope
whose own signature verifies. Authenticity is per chain: an envelope whose own signature
is invalid is vouched for by the author's next one, and a receiver checks each run's
newest on its own — a batch that ended on such an envelope would be refused as
``bad_signature`` and end the session with an honest sender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from mycelium.log import envelope as envelope_mod
from mycelium.log.envelope import BadSignature

#: ``rows(author, after_seq, n)``: the author's stored envelopes after ``after_seq``,
#: ascending, at most ``n``.
Rows = Callable[[bytes, int, int], Iterable[bytes]]


def batch_since(authors: Sequence[bytes], rows: Rows, heads: Mapping[bytes, tuple[int, bytes]],
                remote: Mapping[bytes, int], *, limit: int, max_bytes: int) -> list[bytes]:
    """Envelopes of ``authors`` (in that order) after ``remote``, within ``limit`` and
    ``max_bytes`` (the first envelope always goes, so nothing can block a peer). One
    signature check when the batch stops mid-chain, none otherwise."""
    out: list[bytes] = []
    size = 0
    for author in authors:
        seg: list[bytes] = []
        seg_size = 0
        for raw in rows(author, remote.get(author, 0), limit - len(out)):
            if (out or seg) and (len(out) + len(seg) >= limit
                                 or size + seg_size + len(raw) > max_bytes):
                break
            seg.append(raw)
            seg_size += len(raw)
        if not seg:
            if out:
                return out  # the next envelope does not fit
            continue
        head = heads.get(author)
        if head is not None and envelope_mod.decode(seg[-1]).seq == head[0]:
            out += seg
            size += seg_size
            continue
        seg = _ending_on_own_signature(seg)
        if seg or out:
            return out + seg
        # Nothing of this author can end a batch here (a faulty author's long stretch of
        # envelopes vouched for only further on): leave the room to the next authors.
    return out


def _ending_on_own_signature(seg: list[bytes]) -> list[bytes]:
    for end in range(len(seg), 0, -1):
        try:
            envelope_mod.decode(seg[end - 1]).verify_signature()
        except BadSignature:
            continue
        return seg[:end]
    return []

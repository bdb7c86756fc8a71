"""Reading envelopes back out of an ``envelopes(space, author, seq, raw)`` table.

Soil and the relay's keyless store (``mycelium/relay/store.py``) keep envelopes in tables of
the same shape and answer a peer's version vector the same way; this is that one answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Mapping

from mycelium.log.sending import batch_since


def envelopes_since(conn: sqlite3.Connection, space: bytes,
                    heads: Mapping[bytes, tuple[int, bytes]], control_authors: Collection[bytes],
                    remote: Mapping[bytes, int], *, limit: int, max_bytes: int) -> list[bytes]:
    """What ``remote`` lacks of ``space``: per author ascending seq, authors that wrote
    control ops first (keys and members before the data that needs them), within ``limit``
    envelopes and ``max_bytes`` (:func:`~mycelium.log.sending.batch_since`)."""
    if limit <= 0:
        return []
    authors = sorted((a for a, (s, _) in heads.items() if s > remote.get(a, 0)),
                     key=lambda a: (a not in control_authors, a))

    def rows(author: bytes, after: int, n: int) -> Iterator[bytes]:
        for (raw,) in conn.execute(
                "SELECT raw FROM envelopes WHERE space=? AND author=? AND seq>? "
                "ORDER BY seq LIMIT ?", (space, author, after, n)):
            yield bytes(raw)

    return batch_since(authors, rows, heads, remote, limit=limit, max_bytes=max_bytes)

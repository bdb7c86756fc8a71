"""The contract between the sync core and whatever stores envelopes.

(Developers: the Soil <-> spaces interface is in docs/dev/store-spaces-contract.md.)

The sans-IO sync core (``mycelium.sync``) never imports ``store`` or ``net``: it talks to a
:class:`DeltaStore` (the Soil SQLite store in a real node, an in-memory store in simnet
and in unit tests). Everything crossing this boundary is envelope bytes exactly as signed,
so the store can verify and persist them as received.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

#: author Ed25519 public key (32 bytes) -> highest *contiguous* seq held for that author.
VersionVector = dict[bytes, int]


@dataclass
class IngestResult:
    """What happened to a batch handed to :meth:`DeltaStore.ingest`.

    ``accepted``: delta ids newly stored (in order). ``duplicates``: already held.
    ``pending``: held back (gap in the author's chain, or waiting for membership/key
    information) and retried automatically when the missing pieces arrive.
    ``rejected``: (delta id or None if undecodable, reason) for envelopes refused for good;
    reasons are the ``MyceliumError.reason`` strings (``bad_signature``, ``broken_chain``…).
    """

    accepted: list[bytes] = field(default_factory=list)
    duplicates: int = 0
    pending: int = 0
    rejected: list[tuple[bytes | None, str]] = field(default_factory=list)
    #: Optional summary a store MAY fill (``MemoryStore`` does) so the session need not
    #: decode the batch again: ``held``, author -> highest seq among the batch's
    #: decodable envelopes; ``fresh``, the batch's envelopes newly stored, in order (not
    #: those released from pending). Only used when nothing was rejected.
    held: dict[bytes, int] | None = None
    fresh: list[bytes] | None = None

    def merge(self, other: IngestResult) -> None:
        self.held = self.fresh = None  # summaries describe one batch
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.pending += other.pending
        self.rejected += other.rejected


class DeltaStore(Protocol):
    """What the sync core needs from a store. All methods are synchronous and fast."""

    def member_spaces(self) -> Sequence[bytes]:
        """Ids of the spaces this node is a member of (and so may sync)."""
        ...

    def version_vector(self, space: bytes) -> VersionVector:
        """Contiguous per-author high-water marks for ``space``."""
        ...

    def envelopes_since(
        self, space: bytes, remote: VersionVector, *, limit: int, max_bytes: int
    ) -> list[bytes]:
        """Envelopes of ``space`` that a peer with vector ``remote`` lacks.

        Ordered so the receiver can apply them in sequence: per author ascending ``seq``,
        CONTROL envelopes of all authors before DATA ones where possible. At most ``limit``
        envelopes and about ``max_bytes`` bytes (always at least one if any is missing).
        """
        ...

    def ingest(self, space: bytes, envelopes: Sequence[bytes]) -> IngestResult:
        """Validate and store envelopes received from a peer. Never raises on bad input."""
        ...

"""Space offer tokens: find shared spaces without naming them (``protocols/sync.md`` §3).

A space id is a 256-bit hash that works as a capability: whoever knows it can ask for
the space's (encrypted) envelopes. So a node must never send a space id to a peer, and
the peer must not learn which spaces we hold unless it holds them too.

Each side proves knowledge of a space id with an HMAC keyed by the id itself:

* initiator: ``HMAC-SHA256(space_id, D || 0x01 || salt_i || lp(id_i) || lp(id_r))[:16]``
* responder: ``HMAC-SHA256(space_id, D || 0x02 || salt_i || salt_r || lp(id_r) || lp(id_i))[:16]``

with ``D = "mycelium-space-offer-v1"``, ``lp(x) = len(x) as one byte || x`` and the ids
the authenticated transport identities of the two ends. Because the key is a 256-bit
random-looking id, tokens cannot be inverted or guessed offline. Fresh salts make tokens
differ in every session (nothing to correlate or replay), and the ids bind them to one
pair of peers (a token is useless towards anyone else). The responder only answers
offers that match spaces it holds, and answers with its own token (an echo would prove
nothing), so neither side learns anything about spaces the other lacks.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from mycelium.sync.messages import SALT_BYTES, TOKEN_BYTES

DOMAIN = b"mycelium-space-offer-v1"
ROLE_INITIATOR = b"\x01"
ROLE_RESPONDER = b"\x02"


def _lp(peer_id: bytes) -> bytes:
    if not 0 < len(peer_id) < 256:
        raise ValueError("peer ids must be 1..255 bytes")
    return bytes([len(peer_id)]) + peer_id


def _token(space_id: bytes, msg: bytes) -> bytes:
    return hmac.new(space_id, msg, hashlib.sha256).digest()[:TOKEN_BYTES]


def initiator_token(space_id: bytes, *, salt_i: bytes, initiator: bytes, responder: bytes) -> bytes:
    """The token with which the initiator offers ``space_id`` in its HELLO."""
    assert len(salt_i) == SALT_BYTES
    return _token(space_id, DOMAIN + ROLE_INITIATOR + salt_i + _lp(initiator) + _lp(responder))


def responder_token(
    space_id: bytes, *, salt_i: bytes, salt_r: bytes, initiator: bytes, responder: bytes
) -> bytes:
    """The token with which the responder proves it holds an offered ``space_id``."""
    assert len(salt_i) == SALT_BYTES and len(salt_r) == SALT_BYTES
    return _token(
        space_id, DOMAIN + ROLE_RESPONDER + salt_i + salt_r + _lp(responder) + _lp(initiator)
    )


def match_offers(
    offers: Iterable[bytes], spaces: Iterable[bytes], *, salt_i: bytes, initiator: bytes,
    responder: bytes,
) -> dict[int, bytes]:
    """Responder side: offer index -> own space id, for each offer naming one of ``spaces``."""
    mine = {
        initiator_token(s, salt_i=salt_i, initiator=initiator, responder=responder): s
        for s in spaces
    }
    return {i: mine[o] for i, o in enumerate(offers) if o in mine}

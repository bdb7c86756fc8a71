"""Getting spaces back from any peer after a recovery (issue 12 §2, protocols/sync.md §11).

Sync offers are salted HMACs keyed by the space id (sync/offers.py): a node that lost its
store knows no space id, offers nothing, and a peer can never tell it which spaces it
belongs to. This tiny protocol, ``/mycelium/restore/1``, fills that gap the way the
relay's ``list`` does: the dialer opens a stream and the listener answers with one frame,

    canonical CBOR {"v": 1, "spaces": [genesis, …]}

the geneses of the spaces whose control log, as the listener holds it, lets the
dialer's authenticated identity sync (``SpaceState.may_sync``: a member, or a device
a member delegated). A member is entitled to its spaces' ids, so nothing leaks to
anyone else. The dialer verifies each genesis (its hash is the space id) and adds the
ones it lacks; it holds only their genesis, so its store offers them in the next
session (``Soil.member_spaces``) and the listener, whose log lists the dialer, answers:
the control log, keys and content follow by ordinary sync.

Bounded everywhere: at most :data:`MAX_SPACES` geneses per answer, one frame of at most
:data:`MAX_FRAME` bytes, :data:`TIMEOUT_S` per exchange, :data:`MAX_CONCURRENT`
answers at once, banned peers get nothing; the dialer asks each peer once per run.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from mycelium.codec import cbor
from mycelium.codec.frames import FrameDecoder, encode_frame
from mycelium.errors import MyceliumError
from mycelium.spaces.genesis import MAX_GENESIS_BYTES, parse_genesis

log = logging.getLogger(__name__)

PROTOCOL = "/mycelium/restore/1"
VERSION = 1
MAX_SPACES = 256
MAX_FRAME = MAX_SPACES * (MAX_GENESIS_BYTES + 8) + 64
TIMEOUT_S = 10.0
MAX_CONCURRENT = 4


class BadListing(MyceliumError):
    """A restore answer that is not a bounded list of geneses."""

    reason = "bad_restore_listing"


def listing_for(soil: Any, remote: bytes) -> bytes:
    """The answer for the peer with identity key ``remote``."""
    geneses = [soil.genesis(s) for s in soil.space_ids()
               if soil.space_state(s).may_sync(remote)][:MAX_SPACES]
    return cbor.encode({"v": VERSION, "spaces": geneses})


def decode_listing(payload: bytes) -> list[bytes]:
    """The geneses of an answer; raises :class:`BadListing`."""
    try:
        value = cbor.decode_canonical(payload, max_bytes=MAX_FRAME)
    except MyceliumError as exc:
        raise BadListing(f"restore answer is not canonical CBOR: {exc}") from exc
    if not isinstance(value, dict) or set(value) != {"v", "spaces"} or value["v"] != VERSION:
        raise BadListing("restore answer must be {v: 1, spaces: [...]}")
    spaces = value["spaces"]
    if not isinstance(spaces, list) or len(spaces) > MAX_SPACES:
        raise BadListing(f"restore answer lists at most {MAX_SPACES} spaces")
    if not all(isinstance(g, bytes) for g in spaces):
        raise BadListing("restore answer spaces must be genesis bytes")
    return spaces


def restoring(soil: Any) -> int:
    """How many community spaces the store holds only the genesis of."""
    return sum(1 for s in soil.space_ids()
               if (st := soil.space_state(s)).kind == "community" and st.control_count == 0)


def adopt(soil: Any, geneses: list[bytes], label: str) -> list[bytes]:
    """Add every valid genesis the store lacks; returns the new space ids.

    At most :data:`MAX_SPACES` spaces may wait for their log at once, whoever sent them:
    peers are free to invent, and a genesis costs a row and an offer in every session."""
    held = set(soil.space_ids())
    room = MAX_SPACES - restoring(soil)
    added: list[bytes] = []
    for raw in geneses:
        if len(added) >= room:
            log.warning("restore: %s: %d spaces already wait for their log; ignoring more",
                        label, MAX_SPACES)
            break
        try:
            space = parse_genesis(raw).space_id
            if space in held:
                continue
            soil.add_space(raw)
        except MyceliumError as exc:
            log.warning("restore: %s sent an invalid genesis: %s", label, exc)
            continue
        held.add(space)
        added.append(space)
        log.info("restore: %s gave back space %s", label, space.hex()[:12])
    return added


class PeerRestore:
    """Serves ``/mycelium/restore/1`` on a libp2p host and asks peers once each."""

    def __init__(self, libp2p_host: Any, soil: Any, is_banned: Any) -> None:
        from libp2p.custom_types import TProtocol

        self.libp2p = libp2p_host
        self.soil = soil
        self.is_banned = is_banned
        self.asked: set[str] = set()
        self.restored = 0
        self._limiter = trio.CapacityLimiter(MAX_CONCURRENT)
        libp2p_host.set_stream_handler(TProtocol(PROTOCOL), self._serve)

    async def _serve(self, stream: Any) -> None:
        from mycelium.identity.didkey import public_key_from_peer_id

        peer_id = stream.muxed_conn.peer_id.to_base58()
        try:
            if self.is_banned(peer_id) or self._limiter.available_tokens == 0:
                await stream.reset()
                return
            async with self._limiter:
                with trio.move_on_after(TIMEOUT_S):
                    answer = listing_for(self.soil, public_key_from_peer_id(peer_id))
                    await stream.write(encode_frame(answer, max_frame=MAX_FRAME))
                await stream.close()
        except Exception as exc:  # a peer that vanished mid-answer: nothing to keep
            log.debug("restore answer to %s failed: %s", peer_id[-8:], exc)

    async def ask_once(self, peer_id: str) -> list[bytes]:
        """Ask ``peer_id`` for our spaces (first call per peer only); adopt what is new."""
        if peer_id in self.asked:
            return []
        self.asked.add(peer_id)
        from libp2p.custom_types import TProtocol
        from libp2p.peer.id import ID

        frames: list[bytes] = []
        try:
            with trio.move_on_after(TIMEOUT_S):
                stream = await self.libp2p.new_stream(ID.from_base58(peer_id),
                                                      [TProtocol(PROTOCOL)])
                decoder = FrameDecoder(max_frame=MAX_FRAME)
                while not frames:
                    try:
                        data = await stream.read(65536)
                    except Exception:  # StreamEOF (py-libp2p pitfall 4) or a reset
                        break
                    if not data:
                        break
                    frames = decoder.feed(data)
                await stream.close()
        except trio.Cancelled:
            raise
        except Exception as exc:  # a peer without the protocol (older node) or gone
            log.debug("restore: %s did not answer: %s", peer_id[-8:], exc)
            return []
        if not frames:
            return []
        try:
            geneses = decode_listing(frames[0])
        except BadListing as exc:
            log.warning("restore: %s: %s", peer_id[-8:], exc)
            return []
        added = adopt(self.soil, geneses, peer_id[-8:])
        self.restored += len(added)
        return added

"""How the node talks to relays (``mycelium run --relay URL``, repeatable).

:class:`RelayLinks` is the one entry point the daemon starts in its nursery: one
:class:`~mycelium.relay.link.RelayLink` per relay (connect, mutual auth, register the
node's spaces — community spaces and the personal space, whose envelopes are ciphertext
only this identity opens —, run the sync session, reconnect with backoff), plus a watcher
of the store so local writes and envelopes from LAN peers reach the relays at once. It
reports each relay's state, last sync and backlog for ``mycelium status``. The relay's DID
is pinned by ``#did:key:…`` in the URL, or trusted on first use and recorded in
``HOME/relays.json`` (:class:`TrustStore`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from mycelium.identity.identity import Identity
from mycelium.relay.client import RelayUrl
from mycelium.relay.link import RelayLink, RelayState, registration_envelopes
from mycelium.sync import VerifyCache

__all__ = ["RelayLink", "RelayLinks", "RelayState", "TrustStore", "registration_envelopes"]


class TrustStore:
    """``HOME/relays.json``: relay origin -> the DID first seen (trust on first use)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, str]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        pins = data.get("pins") if isinstance(data, dict) else None
        return {k: v for k, v in pins.items() if isinstance(v, str)} if isinstance(
            pins, dict) else {}

    def get(self, origin: str) -> str | None:
        return self._read().get(origin)

    def put(self, origin: str, did: str) -> None:
        from mycelium.identity.keystore import write_atomic

        pins = self._read()
        pins[origin] = did
        write_atomic(self.path, json.dumps({"pins": pins}, indent=1, sort_keys=True).encode())


class RelayLinks:
    """Every relay of the node: the daemon's single entry point (``run``) and status."""

    def __init__(self, urls: list[str], soil: Any, identity: Identity, cache: VerifyCache,
                 home: Path) -> None:
        trust = TrustStore(home / "relays.json")
        self.links = [RelayLink(RelayUrl.parse(u), soil, identity, cache, trust) for u in urls]
        self.soil = soil
        self._members = set(soil.member_spaces())

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for link in self.links:
                nursery.start_soon(link.run)
            nursery.start_soon(self._watch_store)

    async def _watch_store(self) -> None:
        changes = self.soil.subscribe(buffer=1024)
        async with changes:
            async for change in changes:
                if change.coll is None:
                    members = set(self.soil.member_spaces())
                    if members - self._members:
                        for link in self.links:
                            link.renew()
                    self._members = members
                for link in self.links:
                    link.notify(change.space)

    def status(self) -> list[dict[str, Any]]:
        return [link.status.as_dict(link.backlog()) for link in self.links]



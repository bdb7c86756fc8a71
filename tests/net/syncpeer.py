"""A host plus a MemoryStore that serves and opens sync sessions, for tests."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.identity.didkey import public_key_from_peer_id
from mycelium.net.framing import FramedStream
from mycelium.net.host import MyceliumHost
from mycelium.net.sync_driver import SessionRunner
from mycelium.sync.memstore import MemoryStore
from mycelium.sync.session import EnvelopesIngested, SyncLimits, SyncSession

GROUP_KEY = bytes(range(32))


@dataclass
class SyncPeer:
    host: MyceliumHost
    store: MemoryStore = field(default_factory=MemoryStore)
    author: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    events: list[object] = field(default_factory=list)
    runners: list[SessionRunner] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    #: Limits of every session this peer runs (None: the defaults).
    limits: SyncLimits | None = None

    def __post_init__(self) -> None:
        self.host.set_sync_handler(self.serve)

    def write(self, space: bytes, n: int = 1) -> list[bytes]:
        return [
            self.store.append_local(space, os.urandom(40), signer=self.author,
                                    group_key=GROUP_KEY).raw
            for _ in range(n)
        ]

    def runner(self, peer_id: str, framed: FramedStream, *, initiator: bool) -> SessionRunner:
        session = SyncSession(
            self.store,
            local_id=public_key_from_peer_id(self.host.peer_id),
            remote_id=public_key_from_peer_id(peer_id),
            initiator=initiator,
            now=trio.current_time(),
            cache=self.store.cache,
            limits=self.limits,
        )
        runner = SessionRunner(session, framed, on_event=self._on_event)
        self.runners.append(runner)
        return runner

    def _on_event(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, EnvelopesIngested):
            self.changed.set()
            self.changed = trio.Event()

    async def serve(self, peer_id: str, framed: FramedStream) -> None:
        await self.runner(peer_id, framed, initiator=False).run()

    async def sync_with(self, other: SyncPeer) -> None:
        """Dial ``other`` and run an initiator session until it ends."""
        await self.host.connect(other.host.addrs()[0])
        framed = await self.host.open_sync_stream(other.host.peer_id)
        await self.runner(other.host.peer_id, framed, initiator=True).run()


async def wait_until(predicate: object, timeout: float = 10.0, step: float = 0.02) -> None:
    """Poll ``predicate()`` until true (``trio.TooSlowError`` after ``timeout``)."""
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)

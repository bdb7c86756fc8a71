"""Helpers for tests with real py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio

from mycelium.identity.identity import Identity
from mycelium.net.host import HostLimits, MyceliumHost, open_host

LOOPBACK = ["/ip4/127.0.0.1/tcp/0"]


@contextlib.asynccontextmanager
async def hosts(n: int, limits: HostLimits | None = None) -> AsyncIterator[list[MyceliumHost]]:
    """``n`` running hosts with fresh identities, listening on loopback only."""
    async with contextlib.AsyncExitStack() as stack:
        out = [
            await stack.enter_async_context(open_host(Identity.generate(), LOOPBACK, limits=limits))
            for _ in range(n)
        ]
        yield out


class FakeStream:
    """Reads come from a memory channel (``None`` item = EOF); writes are recorded."""

    def __init__(self) -> None:
        self.send, self._recv = trio.open_memory_channel[bytes | None](100)
        self.written: list[bytes] = []
        self.resets = 0
        self.closes = 0

    async def read(self, n: int | None = None) -> bytes:
        from libp2p.network.stream.exceptions import StreamEOF

        item = await self._recv.receive()
        if item is None:
            raise StreamEOF()
        return item

    async def write(self, data: bytes) -> None:
        self.written.append(data)

    async def close(self) -> None:
        self.closes += 1

    async def reset(self) -> None:
        self.resets += 1

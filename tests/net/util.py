"""Helpers for tests with real py-libp2p hosts on 127.0.0.1."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

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

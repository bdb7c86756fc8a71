"""Helpers for relay tests: a real relay server on 127.0.0.1 in the test's trio run, real
Soil stores for the nodes, and an authenticated REST client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from mycelium.codec import cbor
from mycelium.identity.auth import Challenge, answer
from mycelium.identity.identity import Identity
from mycelium.relay.handshake import authorization
from mycelium.relay.limits import RelayLimits
from mycelium.relay.run import RelayConfig, serve_relay
from mycelium.relay.service import RelayService
from mycelium.relay.store import RelayStore, StoreLimits
from mycelium.spaces import service
from mycelium.store.soil import Soil


@dataclass
class Relay:
    url: str
    service: RelayService
    store: RelayStore
    path: Path


@asynccontextmanager
async def running_relay(tmp_path: Path, *, limits: RelayLimits | None = None,
                        store_limits: StoreLimits | None = None,
                        identity: Identity | None = None, port: int = 0,
                        public_urls: list[str] | None = None, peers: list[str] | None = None,
                        trust: list[str] | None = None,
                        tls: tuple[str, str] | None = None,
                        trusted_proxies: list[str] | None = None) -> AsyncIterator[Relay]:
    """A relay serving on a loopback port (ephemeral by default) until the block ends."""
    path = tmp_path / "relay" / "relay.db"
    store = RelayStore.open(path, limits=store_limits)
    ident = identity or Identity.generate()
    config = RelayConfig(listen=f"127.0.0.1:{port}", limits=limits,
                         public_urls=public_urls or [], peers=peers or [],
                         trust=trust or [], tls_cert=tls[0] if tls else None,
                         tls_key=tls[1] if tls else None,
                         trusted_proxies=trusted_proxies or [])
    try:
        async with trio.open_nursery() as nursery:
            url, svc = await nursery.start(serve_relay, ident, store, config)
            yield Relay(url, svc, store, path)
            nursery.cancel_scope.cancel()
    finally:
        store.close()


@dataclass
class Community:
    """Admin ``a`` created space ``market``; ``b`` is a member; ``c`` is not."""

    a: Soil
    b: Soil
    c: Soil
    space: bytes


def community(tmp_path: Path) -> Community:
    ids = [Identity.generate() for _ in range(3)]
    a, b, c = (Soil.open(tmp_path / f"{n}.db", i) for n, i in zip("abc", ids, strict=True))
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, ids[1].did))
    return Community(a, b, c, space)


async def auth_header(client: httpx.AsyncClient, relay: Relay, identity: Identity) -> str:
    """A fresh single-use ``Authorization`` value for ``identity``."""
    challenge = await fetch_challenge(client, relay)
    return header_for(answer(identity, challenge).to_cbor())


async def fetch_challenge(client: httpx.AsyncClient, relay: Relay) -> Challenge:
    resp = await client.post(f"{relay.url}/v1/auth/challenge")
    assert resp.status_code == 200, resp.text
    return Challenge.from_cbor(cbor.decode(resp.content)["challenge"])


def header_for(response_cbor: bytes) -> str:
    return authorization(response_cbor)


def cbor_body(value: Any) -> bytes:
    return cbor.encode(value)


def envelopes_of(soil: Soil, space: bytes) -> list[bytes]:
    return soil.envelopes_since(space, {}, limit=100_000, max_bytes=1 << 30)

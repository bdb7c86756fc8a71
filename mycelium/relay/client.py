"""The node's WebSocket connection to a relay (trio-websocket; protocols/relay.md §3–§4).

:func:`connect` opens ``/v1/sync``, runs the mutual handshake of
:mod:`mycelium.relay.handshake` and returns a :class:`RelayConnection` on which the caller
registers spaces, lists the spaces the relay holds for it, and finally starts the sync
session (:meth:`RelayConnection.start_sync`), after which the connection is a
:class:`~mycelium.relay.driver.MessageTransport` for the session driver.

Why trio-websocket: it is trio-native (wsproto underneath, structured concurrency, TLS
via ``ssl.SSLContext``) and already installed with py-libp2p; see docs/decisions.md.
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import trio
import trio_websocket

from mycelium.codec.frames import MAX_FRAME_BYTES
from mycelium.identity.identity import Identity
from mycelium.relay import handshake
from mycelium.relay.driver import TransportClosed
from mycelium.relay.handshake import MAX_CONTROL_MESSAGE, HandshakeError

CONNECT_TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class RelayUrl:
    """``https://host[:port][/path]#did:key:…`` split into the URL and the pinned DID."""

    url: str
    pinned: str | None

    @classmethod
    def parse(cls, text: str) -> RelayUrl:
        base, _, fragment = text.partition("#")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise HandshakeError(f"relay URL must be http(s)://host[:port]: {text!r}",
                                 reason="bad_relay_url")
        if parts.scheme == "http" and not _loopback(parts.hostname):
            raise HandshakeError(
                f"plain http is only for a relay on this machine; use https:// for {text!r}",
                reason="insecure_relay_url")
        if fragment and not fragment.startswith("did:key:"):
            raise HandshakeError("the part after # must be the relay's did:key",
                                 reason="bad_relay_url")
        return cls(base.rstrip("/"), fragment or None)

    @property
    def origin(self) -> str:
        return handshake.origin_of(self.url)

    def websocket_url(self) -> str:
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        path = parts.path.rstrip("/") + "/v1/sync"
        return urlunsplit((scheme, parts.netloc, path, "", ""))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RelayConnection:
    """An authenticated WebSocket to one relay (before and during the sync session)."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, relay_did: str) -> None:
        self.ws = ws
        self.relay_did = relay_did

    async def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        await self.send(handshake.encode(message))
        data = await self.receive()
        if data is None:
            raise TransportClosed("relay closed the connection")
        msg = handshake.decode(data)
        handshake.raise_if_error(msg)
        return msg

    async def register(self, genesis: bytes, envelopes: list[bytes]) -> tuple[bool, str | None]:
        """Ask the relay to host a space: ``(ok, refusal reason)``."""
        msg = await self._request({"t": "register", "genesis": genesis, "envelopes": envelopes})
        if msg["t"] == "registered":
            return True, None
        return False, str(msg.get("reason", "refused"))

    async def list_spaces(self) -> list[dict[str, Any]]:
        """Every space the relay hosts whose control log lists us (with its genesis)."""
        msg = await self._request({"t": "list"})
        spaces = msg.get("spaces")
        return spaces if isinstance(spaces, list) else []

    async def start_sync(self) -> None:
        await self.send(handshake.encode({"t": "sync"}))

    # MessageTransport
    async def receive(self) -> bytes | None:
        try:
            data = await self.ws.get_message()
        except trio_websocket.ConnectionClosed:
            return None
        if isinstance(data, str):
            raise TransportClosed("relay sent a text message")
        return data

    async def send(self, data: bytes) -> None:
        try:
            await self.ws.send_message(data)
        except trio_websocket.ConnectionClosed as exc:
            raise TransportClosed("relay closed the connection") from exc


@asynccontextmanager
async def connect(relay: RelayUrl, identity: Identity, *, expected_did: str | None,
                  ssl_context: ssl.SSLContext | None = None,
                  ) -> AsyncIterator[RelayConnection]:
    """Open and authenticate; raises :class:`HandshakeError` (reason from the relay or
    ``relay_identity_changed``) or OSError / trio_websocket errors for the network."""
    ws_url = relay.websocket_url()
    if ws_url.startswith("wss:"):
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
        await _check_tls(relay, ssl_context)
    async with trio_websocket.open_websocket_url(
            ws_url, ssl_context=ssl_context,
            max_message_size=max(MAX_FRAME_BYTES, MAX_CONTROL_MESSAGE) + 1024,
            connect_timeout=CONNECT_TIMEOUT_S, disconnect_timeout=2,
            message_queue_size=4) as ws:
        hs = handshake.ClientHandshake(identity, relay.url, expected_did=expected_did)
        conn = RelayConnection(ws, "")
        with trio.fail_after(CONNECT_TIMEOUT_S):
            await conn.send(hs.hello(trio_now()))
            reply = await conn.receive()
            if reply is None:
                raise HandshakeError("relay closed during the handshake", reason="eof")
            await conn.send(hs.on_challenge(reply, trio_now()))
            ok = await conn.receive()
            if ok is None:
                raise HandshakeError("relay closed during the handshake", reason="eof")
            hs.on_ok(ok)
        assert hs.relay_did is not None
        conn.relay_did = hs.relay_did
        yield conn


async def _check_tls(relay: RelayUrl, context: ssl.SSLContext) -> None:
    """Complete a TLS handshake first, so a certificate the client refuses is reported
    as such (trio-websocket only times out on it, after CONNECT_TIMEOUT_S)."""
    parts = urlsplit(relay.url)
    host, port = parts.hostname or "", parts.port or 443
    with trio.fail_after(CONNECT_TIMEOUT_S):
        try:
            stream = await trio.open_ssl_over_tcp_stream(host, port, ssl_context=context)
            try:
                await stream.do_handshake()
            finally:
                await trio.aclose_forcefully(stream)
        except (trio.BrokenResourceError, ssl.SSLError) as exc:
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            raise HandshakeError(f"TLS with {relay.origin} failed: {cause}",
                                 reason="tls_failed") from exc


def trio_now() -> float:
    """Wall-clock seconds for the challenge issuer (its expiry is in wall time)."""
    import time

    return time.time()

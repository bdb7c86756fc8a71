"""``mycelium relay``: start the relay process (its identity, store and HTTP server).

The relay keeps its own home (``--home``/``MYCELIUM_HOME``): ``relay/keystore.json`` (its
identity, so it has a DID that clients pin) and ``relay/relay.db`` (or ``--data DIR``).
Plain HTTP is served only on loopback; any other address needs ``--tls-cert``/``--tls-key``
(or a reverse proxy on the same host terminating TLS and forwarding to a loopback port,
with ``--public-url`` set to the URL clients use). See docs/relay.md.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from mycelium.errors import MyceliumError
from mycelium.identity.identity import Identity
from mycelium.relay.client_ip import TrustedProxies
from mycelium.relay.handshake import origin_of
from mycelium.relay.limits import RelayLimits
from mycelium.relay.store import RelayStore, StoreLimits

log = logging.getLogger("mycelium.relay")


class RelayConfigError(MyceliumError):
    reason = "relay_config"


@dataclass
class RelayConfig:
    listen: str = "127.0.0.1:8470"
    tls_cert: str | None = None
    tls_key: str | None = None
    #: URLs clients use (behind proxies or several names); default: the bound URL.
    public_urls: list[str] = field(default_factory=list)
    data: str | None = None
    #: Peer relays to replicate with (``URL#did:key:…``, pinned); they are trusted too.
    peers: list[str] = field(default_factory=list)
    #: DIDs of peer relays allowed to replicate from us without us dialling them.
    trust: list[str] = field(default_factory=list)
    limits: RelayLimits | None = None
    store_limits: StoreLimits | None = None
    #: IPFS RPC API to archive hosted spaces to (relay/archiver.py); None: no archives.
    ipfs_api: str | None = None
    archive_every_s: float = 3600.0
    #: Reverse proxies (addresses or networks) whose X-Forwarded-For per-IP limits believe.
    trusted_proxies: list[str] = field(default_factory=list)


def relay_paths(home: Path, data: str | None) -> tuple[Path, Path]:
    """(keystore, database) of a relay home."""
    base = home / "relay"
    db = Path(data).expanduser() / "relay.db" if data else base / "relay.db"
    return base / "keystore.json", db


def check_listen(config: RelayConfig) -> tuple[str, int, bool]:
    """``(host, port, tls)``; refuses plain HTTP on anything but loopback."""
    host, sep, port_text = config.listen.rpartition(":")
    if not sep or not port_text.isdigit():
        raise RelayConfigError(f"--listen must be HOST:PORT, got {config.listen!r}")
    host = host.strip("[]") or "127.0.0.1"
    tls = bool(config.tls_cert or config.tls_key)
    if tls and not (config.tls_cert and config.tls_key):
        raise RelayConfigError("--tls-cert and --tls-key go together")
    if not tls and not _is_loopback(host):
        raise RelayConfigError(
            f"plain HTTP only on loopback; to listen on {host} give --tls-cert/--tls-key, "
            "or run a TLS reverse proxy in front of a loopback port (docs/relay.md)")
    return host, int(port_text), tls


def trusted_proxies(config: RelayConfig) -> TrustedProxies:
    """``--trusted-proxy`` as networks; a bad value is a user error before start-up."""
    try:
        return TrustedProxies(config.trusted_proxies)
    except ValueError as exc:
        raise RelayConfigError(str(exc)) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_identity(keystore: Path, get_passphrase: Callable[..., str]) -> Identity:
    from mycelium.identity.keystore import create_keystore, load_keystore

    keystore.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if keystore.exists():
        return load_keystore(keystore, get_passphrase())
    log.info("creating the relay's identity in %s", keystore)
    return create_keystore(keystore, get_passphrase(confirm=True), name="relay")


async def serve_relay(identity: Identity, store: RelayStore, config: RelayConfig, *,
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve until cancelled; ``task_status.started((url, service))`` once bound."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from mycelium.codec.frames import MAX_FRAME_BYTES
    from mycelium.relay.handshake import MAX_CONTROL_MESSAGE
    from mycelium.relay.server import make_app
    from mycelium.relay.service import RelayService

    host, port, tls = check_listen(config)
    proxies = trusted_proxies(config)
    hc = Config()
    hc.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hc.accesslog = None
    hc.errorlog = logging.getLogger("mycelium.relay.hypercorn")
    hc.graceful_timeout = 1.0
    hc.websocket_max_message_size = max(MAX_FRAME_BYTES, MAX_CONTROL_MESSAGE) + 1024
    hc.backlog = 1024  # hypercorn's 100 resets connections when many nodes reconnect at once
    if tls:
        hc.certfile, hc.keyfile = config.tls_cert, config.tls_key
    async with trio.open_nursery() as nursery:
        holder: dict[str, Any] = {}

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":  # nothing to set up: acknowledge both phases
                while (await receive())["type"] != "lifespan.shutdown":
                    await send({"type": "lifespan.startup.complete"})
                await send({"type": "lifespan.shutdown.complete"})
                return
            await holder["app"](scope, receive, send)

        binds = await nursery.start(serve, app, hc)
        bound = str(binds[0])
        origins = [origin_of(u) for u in config.public_urls] or [origin_of(bound)]
        service = RelayService(store, identity, origins, limits=config.limits,
                               trusted_proxies=proxies)
        holder["app"] = make_app(service)
        start_peering(nursery, service, identity, config)
        if config.ipfs_api:
            from mycelium.relay.archiver import Archiver, run_archiver

            archiver = Archiver(store, identity, config.ipfs_api)
            await nursery.start(run_archiver, archiver, config.archive_every_s)
        log.info("relay %s serving %s (public origin %s)", identity.did, bound,
                 service.relay.origin)
        task_status.started((bound, service))


class _NoPins:
    """Peer relays are always pinned in their URL: nothing is learned on first use."""

    path = None

    def get(self, origin: str) -> str | None:
        return None

    def put(self, origin: str, did: str) -> None:
        raise RelayConfigError("peer relays must be pinned (URL#did:key:…)")


def start_peering(nursery: trio.Nursery, service: Any, identity: Identity,
                  config: RelayConfig) -> None:
    """Trust the configured peer relays and keep a replication session to each ``--peer``
    (the same :class:`~mycelium.relay.link.RelayLink` a node uses, over this relay's store)."""
    from mycelium.identity.didkey import public_key_from_did
    from mycelium.relay.client import RelayUrl
    from mycelium.relay.link import RelayLink

    urls = [RelayUrl.parse(u) for u in config.peers]
    for did in [u.pinned for u in urls] + list(config.trust):
        if did is None:
            raise RelayConfigError("a --peer relay URL must end in #did:key:… (its DID)")
        service.trusted.add(public_key_from_did(did))
    for url in urls:
        link = RelayLink(url, service.store, identity, service.cache, _NoPins())
        link.on_ingested = service.changed
        service.on_changed.append(link.notify)
        nursery.start_soon(link.run)


def run_relay(home: Path, config: RelayConfig, get_passphrase: Callable[..., str],
              on_ready: Callable[[str, str], None] | None = None) -> None:
    """Blocking entry point of ``mycelium relay``."""
    from mycelium.identity.didkey import public_key_from_did
    from mycelium.relay.client import RelayUrl

    check_listen(config)
    trusted_proxies(config)
    for url in config.peers:  # user errors now, not inside the server
        if RelayUrl.parse(url).pinned is None:
            raise RelayConfigError(f"--peer {url}: add #did:key:… (the peer relay's DID)")
    for did in config.trust:
        public_key_from_did(did)
    if config.ipfs_api:  # a bad --ipfs-api is a user error now, not a failed archive round
        from mycelium.archive.ipfs import api_url

        api_url(config.ipfs_api)
    keystore, db = relay_paths(home, config.data)
    identity = load_identity(keystore, get_passphrase)
    store = RelayStore.open(db, limits=config.store_limits)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
            url, _ = await nursery.start(serve_relay, identity, store, config)
            if on_ready is not None:
                on_ready(url, identity.did)

    try:
        trio.run(main)
    finally:
        store.close()


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return

"""``mycelium gateway``: the HTTP server, the inbox and outbox workers, and the node.

One trio nursery holds everything: hypercorn serving :func:`make_app`, a worker that
processes the inbox, a worker that drains the outbox to the Graph API, and the ordinary
node daemon (:class:`mycelium.node.daemon.Node`) that syncs the market space over libp2p.
A restart resumes from the database: received-but-unprocessed messages are processed,
pending replies are sent — which is what makes a ``kill -9`` harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from mycelium.gateway.app import make_app, wall_ms
from mycelium.gateway.service import Gateway, Post

log = logging.getLogger("mycelium.gateway")

#: Bound on one Graph API call (the webhook never waits for it).
GRAPH_TIMEOUT_S = 10.0
#: Idle workers look at the database at least this often (cheap; covers missed wakeups).
IDLE_POLL_S = 1.0
#: Pause after an unexpected failure of a worker round (a bug or a database error).
FAILURE_BACKOFF_S = 5.0


class Waker:
    """A resettable event: ``set()`` from anywhere in the trio thread, ``wait(timeout)``."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def set(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with trio.move_on_after(max(0.0, timeout)):
            await self._event.wait()
        self._event = trio.Event()


def httpx_post(client: httpx.AsyncClient) -> Post:
    """A :data:`Post` over httpx: transport errors become ``(None, reason)``."""

    async def post(url: str, body: dict[str, Any], headers: dict[str, str]
                   ) -> tuple[int | None, Any]:
        try:
            resp = await client.post(url, json=body, headers=headers, timeout=GRAPH_TIMEOUT_S)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}"
        try:
            return resp.status_code, resp.json()
        except ValueError:
            return resp.status_code, resp.text[:300]

    return post


@dataclass
class GatewayServer:
    """The running gateway's tasks (construct, then ``await nursery.start(server.serve)``)."""

    gateway: Gateway
    listen: str = "127.0.0.1:8080"
    clock: Callable[[], int] = wall_ms
    post: Post | None = None
    url: str | None = None
    _inbox: Waker = field(default_factory=Waker)
    _outbox: Waker = field(default_factory=Waker)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [self.listen]
        config.accesslog = None
        config.errorlog = logging.getLogger("mycelium.gateway.hypercorn")
        config.graceful_timeout = 1.0
        self.gateway.inbox_wakeup = self._inbox.set
        async with httpx.AsyncClient() as client, trio.open_nursery() as nursery:
            post = self.post or httpx_post(client)
            nursery.start_soon(self._inbox_worker)
            nursery.start_soon(self._outbox_worker, post)
            binds = await nursery.start(serve, make_app(self.gateway, self.clock), config)
            self.url = str(binds[0])
            log.info("gateway listening on %s (public %s)", self.url,
                     self.gateway.config.public_url)
            task_status.started(self)

    async def _inbox_worker(self) -> None:
        while True:
            try:
                processed = self.gateway.process_received(self.clock())
            except Exception:  # the database itself failed (disk full…): log, back off
                log.exception("inbox processing failed; retrying in %.0f s", FAILURE_BACKOFF_S)
                await trio.sleep(FAILURE_BACKOFF_S)
                continue
            if processed:
                self._outbox.set()
                await trio.lowlevel.checkpoint()
                continue
            await self._inbox.wait(IDLE_POLL_S)

    async def _outbox_worker(self, post: Post) -> None:
        while True:
            try:
                if await self.gateway.deliver_due(post, self.clock()):
                    continue
                due = self.gateway.db.next_due_ms()
            except Exception:  # the database itself failed: log, back off
                log.exception("outbox delivery failed; retrying in %.0f s", FAILURE_BACKOFF_S)
                await trio.sleep(FAILURE_BACKOFF_S)
                continue
            wait = IDLE_POLL_S if due is None else (due - self.clock()) / 1000
            await self._outbox.wait(min(IDLE_POLL_S, wait))


@dataclass
class RunOptions:
    """What ``mycelium gateway`` was asked to do."""

    listen: str = "127.0.0.1:8080"
    public_url: str = "http://127.0.0.1:8080"
    space: str = "market"
    p2p_listen: list[str] = field(default_factory=lambda: ["/ip4/0.0.0.0/tcp/0"])
    peers: list[str] = field(default_factory=list)
    mdns: bool = True
    relays: list[str] = field(default_factory=list)


def run_gateway(paths: Any, options: RunOptions, get_passphrase: Callable[..., str]) -> None:
    """Blocking entry point: open the node's stores, then serve until SIGINT/SIGTERM."""
    from mycelium.gateway.db import GatewayDB
    from mycelium.gateway.market import Market, ensure_market
    from mycelium.gateway.service import GatewayConfig
    from mycelium.node.daemon import Node, NodeConfig, configure_logging, unlock_or_create
    from mycelium.spaces.service import ensure_personal_space
    from mycelium.store.soil import Soil

    configure_logging()
    identity = unlock_or_create(paths, None, get_passphrase)
    config = GatewayConfig.from_env(options.public_url)
    with Soil.open(paths.soil, identity) as soil:
        ensure_personal_space(soil)
        space = ensure_market(soil, options.space)
        db = GatewayDB(paths.home / "gateway.db")
        try:
            gateway = Gateway(config, db, Market(soil, space))
            node = Node(paths, identity, soil, NodeConfig(
                listen=options.p2p_listen, peers=options.peers, mdns=options.mdns,
                relays=options.relays))
            trio.run(_main, node, GatewayServer(gateway, listen=options.listen))
        finally:
            db.close()


async def _main(node: Any, server: GatewayServer) -> None:
    from mycelium.node.daemon import _cancel_on_signal

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
        await nursery.start(node.serve)
        await nursery.start(server.serve)
        # One line on stdout that scripts and tests wait for (the node's banner is stderr).
        print(f"gateway ready {server.url} did={node.identity.did} "
              f"p2p={','.join(node.listen_addrs)}", flush=True)


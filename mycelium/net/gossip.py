"""GossipSub over the host, shaped for Mycelium's use of gossip as a *hint* (DESIGN.md §5).

py-libp2p's GossipSub drops messages silently in three places (pitfall 3,
``docs/py-libp2p-notes.md``):

- receive side: a per-peer, per-topic spam cap (``max_messages_per_topic_per_second``,
  default 10) discards and penalises. The constructor allows raising it, so we do
  (:attr:`GossipConfig.max_received_per_topic_s`) while keeping the protection on;
- send side: each peer has a 32-RPC outbound queue (fixed in ``Pubsub``, not
  configurable) that overflows on bursts. We pace :meth:`GossipService.publish` with a
  token bucket whose burst stays below that queue, and before each publish wait until
  every peer's queue is short again (when the CPU is busy the sending tasks lag);
- subscriptions: a 32-message channel that drops when nobody reads. An internal task per
  topic drains it at once into our own larger channel, and counts what *that* drops.

None of this makes gossip reliable, and it need not be: every lost message is repaired
by anti-entropy sync sessions.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import trio

from mycelium.net.errors import NetError
from mycelium.net.host import MyceliumHost

log = logging.getLogger("mycelium.net.gossip")


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Knobs of :class:`GossipService` (defaults suit a LAN of tens of nodes)."""

    degree: int = 6
    degree_low: int = 4
    degree_high: int = 12
    heartbeat_interval: int = 1
    #: Publishes per second we allow ourselves, and how many may go back to back. The
    #: burst stays well below py-libp2p's 32-RPC per-peer outbound queue.
    publish_rate: float = 50.0
    publish_burst: int = 16
    #: Before each publish, wait (up to ``queue_wait_s``) until every peer's outbound
    #: queue holds fewer than this many RPCs: closes the loop when the sending tasks are
    #: starved (a busy CPU), which open-loop pacing alone does not see.
    max_queued: int = 8
    queue_wait_s: float = 2.0
    #: What we accept from one peer on one topic per second before GossipSub drops.
    max_received_per_topic_s: float = 200.0
    #: Our per-subscription buffer (drained by the consumer); overflow is dropped.
    receive_buffer: int = 1024
    max_message_bytes: int = 256 * 1024


class GossipService:
    """Pubsub + GossipSub on a :class:`MyceliumHost`; use as an async context manager."""

    def __init__(self, host: MyceliumHost, config: GossipConfig | None = None) -> None:
        self.host = host
        self.config = config if config is not None else GossipConfig()
        self._pubsub: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._nursery: trio.Nursery | None = None
        self._outputs: dict[str, list[trio.MemorySendChannel[tuple[str, bytes]]]] = {}
        self._tokens = float(self.config.publish_burst)
        self._stamp: float | None = None
        self._publish_lock = trio.Lock()
        self._metrics = {
            "published": 0,
            "received": 0,
            "dropped_buffer_full": 0,
            "dropped_oversized": 0,
            "dropped_banned": 0,
            "publish_paced": 0,
            "publish_waited_queue": 0,
        }

    async def __aenter__(self) -> GossipService:
        from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, PROTOCOL_ID_V12, GossipSub
        from libp2p.pubsub.pubsub import Pubsub
        from libp2p.tools.anyio_service import background_trio_service

        cfg = self.config
        router = GossipSub(
            protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11],
            degree=cfg.degree,
            degree_low=cfg.degree_low,
            degree_high=cfg.degree_high,
            heartbeat_interval=cfg.heartbeat_interval,
            spam_protection_enabled=True,
            max_messages_per_topic_per_second=cfg.max_received_per_topic_s,
        )
        pubsub = Pubsub(self.host.libp2p, router, max_inbound_rpc_size=2 * cfg.max_message_bytes)
        stack = contextlib.AsyncExitStack()
        await stack.__aenter__()
        try:
            await stack.enter_async_context(background_trio_service(pubsub))
            await stack.enter_async_context(background_trio_service(router))
            with trio.fail_after(10):
                await pubsub.wait_until_ready()
            self._nursery = await stack.enter_async_context(trio.open_nursery())
        except BaseException:
            await stack.__aexit__(None, None, None)
            raise
        self._pubsub = pubsub
        self._stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._stack is not None and self._nursery is not None
        self._nursery.cancel_scope.cancel()
        for outputs in self._outputs.values():
            for send in outputs:
                send.close()
        self._outputs.clear()
        stack, self._stack, self._pubsub = self._stack, None, None
        return await stack.__aexit__(exc_type, exc, tb)

    def metrics(self) -> dict[str, int]:
        return dict(self._metrics)

    async def subscribe(self, topic: str) -> trio.MemoryReceiveChannel[tuple[str, bytes]]:
        """A channel of ``(from_peer_id, data)`` for ``topic`` (our own publishes included).

        Close the returned channel to stop; the topic is unsubscribed when its last
        channel closes.
        """
        if self._pubsub is None or self._nursery is None:
            raise NetError("gossip service is not running", reason="not_running")
        send, receive = trio.open_memory_channel[tuple[str, bytes]](self.config.receive_buffer)
        outputs = self._outputs.get(topic)
        if outputs is not None:
            outputs.append(send)
            return receive
        self._outputs[topic] = [send]
        subscription = await self._pubsub.subscribe(topic)
        self._nursery.start_soon(self._drain, topic, subscription)
        return receive

    async def _drain(self, topic: str, subscription: Any) -> None:
        """Move messages out of py-libp2p's 32-slot channel as soon as they land."""
        from libp2p.peer.id import ID

        limit = self.config.max_message_bytes
        try:
            while self._outputs.get(topic):
                msg = await subscription.get()
                if len(msg.data) > limit:
                    self._metrics["dropped_oversized"] += 1
                    continue
                sender = ID(msg.from_id).to_base58()
                if self.host.is_banned(sender):  # the origin, whoever relayed it
                    self._metrics["dropped_banned"] += 1
                    continue
                self._metrics["received"] += 1
                item = (sender, bytes(msg.data))
                for send in list(self._outputs[topic]):
                    try:
                        send.send_nowait(item)
                    except trio.WouldBlock:
                        self._metrics["dropped_buffer_full"] += 1
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        self._outputs[topic].remove(send)
        finally:
            self._outputs.pop(topic, None)
            if self._pubsub is not None:
                with (
                    trio.CancelScope(shield=True),
                    trio.move_on_after(2),
                    contextlib.suppress(Exception),
                ):
                    await self._pubsub.unsubscribe(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish ``data`` on ``topic``, paced (see the module docstring).

        Raises :class:`NetError` (``oversized`` above ``max_message_bytes``,
        ``not_running``, ``publish_failed``).
        """
        if self._pubsub is None:
            raise NetError("gossip service is not running", reason="not_running")
        if len(data) > self.config.max_message_bytes:
            raise NetError(
                f"gossip message of {len(data)} bytes exceeds {self.config.max_message_bytes}",
                reason="oversized",
            )
        async with self._publish_lock:
            await self._pace()
            await self._wait_for_queue_room()
            try:
                await self._pubsub.publish(topic, data)
            except trio.Cancelled:
                raise
            except Exception as exc:
                raise NetError(
                    f"publish on {topic} failed: {exc}", reason="publish_failed"
                ) from exc
        self._metrics["published"] += 1

    async def _wait_for_queue_room(self) -> None:
        """Let py-libp2p's per-peer 32-RPC outbound queues drain below ``max_queued``."""
        cfg = self.config
        queues = getattr(self._pubsub, "peer_queues", None)
        if not isinstance(queues, dict):
            return
        with trio.move_on_after(cfg.queue_wait_s):
            while any(len(q) >= cfg.max_queued for q in queues.values()):
                self._metrics["publish_waited_queue"] += 1
                await trio.sleep(0.005)

    async def _pace(self) -> None:
        cfg = self.config
        now = trio.current_time()
        if self._stamp is not None:
            refill = (now - self._stamp) * cfg.publish_rate
            self._tokens = min(cfg.publish_burst, self._tokens + refill)
        self._stamp = now
        if self._tokens < 1:
            self._metrics["publish_paced"] += 1
            wait = (1 - self._tokens) / cfg.publish_rate
            await trio.sleep(wait if math.isfinite(wait) else 1.0)
            self._tokens = 1.0
            self._stamp = trio.current_time()
        self._tokens -= 1

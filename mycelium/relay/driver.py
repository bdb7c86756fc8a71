"""Drive a sans-IO :class:`~mycelium.sync.session.SyncSession` over a message transport.

A WebSocket delivers whole messages, so one sync frame travels as one binary message
(protocols/relay.md §4) and the session is fed with ``receive_frame`` / drained with
``frames_to_send`` instead of the length-prefixed byte stream that the libp2p driver
(:mod:`mycelium.net.sync_driver`) uses. Both ends of a relay connection use this driver:
the relay's WebSocket endpoint (Starlette) and the node's relay link (trio-websocket).

Besides moving frames, the driver can end a session with a named reason the session
itself does not know (``rate_limited``, ``over_quota``): :meth:`MessageSessionDriver.abort`
sends an ``err`` frame carrying it and closes (protocols/sync.md §6).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Protocol

import trio

from mycelium.sync.messages import Error, encode_message
from mycelium.sync.session import Closed, SessionError, SessionState, SyncSession

log = logging.getLogger("mycelium.relay.session")


class MessageTransport(Protocol):
    """One bidirectional message channel (a WebSocket)."""

    async def receive(self) -> bytes | None:
        """The next binary message, or None once the peer closed."""
        ...

    async def send(self, data: bytes) -> None: ...


class TransportClosed(Exception):
    """Raised by transports for a connection that broke (mapped to ``connection_lost``)."""


#: Called with each received message's size before the session sees it; returns a
#: reason (``rate_limited``) to end the session, or None.
Admit = Callable[[int], str | None]


class MessageSessionDriver:
    """Runs one session over one :class:`MessageTransport` until either ends."""

    def __init__(
        self,
        session: SyncSession,
        transport: MessageTransport,
        *,
        on_event: Callable[[object], None],
        admit: Admit | None = None,
        clock: Callable[[], float] = trio.current_time,
        label: str = "",
    ) -> None:
        self.session = session
        self.transport = transport
        self.on_event = on_event
        self.admit = admit
        self.clock = clock
        self.label = label
        #: Why the session ended; None while it runs.
        self.close_reason: str | None = None
        self._wakeup = trio.Event()
        self._abort: str | None = None

    def poke(self) -> None:
        """Something changed (a local write, ``notify_changed``): flush soon."""
        self._wakeup.set()

    def abort(self, reason: str) -> None:
        """End the session with an ``err`` frame naming ``reason`` (sent by the writer)."""
        if self._abort is None and self.session.state is not SessionState.CLOSED:
            self._abort = reason
        self.poke()

    async def run(self) -> None:
        """Drive the session until it closes or the transport ends. Transport failures
        become ``Closed`` events, never exceptions; cancellation propagates."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop)
                await self._write_loop()
                nursery.cancel_scope.cancel()
        finally:
            if self.session.state is not SessionState.CLOSED:
                self.session.connection_lost("cancelled")
            self._emit()
            log.debug("relay session %s ended: %s", self.label, self.close_reason)

    async def _write_loop(self) -> None:
        session = self.session
        while True:
            if self._abort is not None and session.state is not SessionState.CLOSED:
                reason = self._abort
                session.connection_lost(reason)
                self.close_reason = reason
                await self._send_all([encode_message(Error(reason))])
                self._emit()
                return
            await self._send_all(session.frames_to_send(self.clock()))
            self._emit()
            if session.state is SessionState.CLOSED:
                return
            deadline = session.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            session.tick(self.clock())

    async def _send_all(self, frames: list[bytes]) -> None:
        for frame in frames:
            try:
                await self.transport.send(frame)
            except (TransportClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._lost("connection_lost", exc)
                return

    async def _read_loop(self) -> None:
        session = self.session
        while session.state is not SessionState.CLOSED:
            try:
                data = await self.transport.receive()
            except (TransportClosed, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._lost("connection_lost", exc)
                return
            if data is None:
                self._lost("eof", None)
                return
            if len(data) > session.limits.messages.max_frame:  # what a length prefix bounds
                self.abort("oversized_frame")
                return
            if self.admit is not None:
                refused = self.admit(len(data))
                if refused is not None:
                    self.abort(refused)
                    return
            session.receive_frame(data, self.clock())
            self.poke()

    def _lost(self, reason: str, exc: BaseException | None) -> None:
        if self.session.state is not SessionState.CLOSED:
            if exc is not None:
                log.info("relay connection %s failed (%s): %s", self.label, reason, exc)
            self.session.connection_lost(reason)
        self.poke()

    def _emit(self) -> None:
        for event in self.session.events():
            if isinstance(event, SessionError):
                log.info("relay session %s failed: %s (%s, %s)", self.label, event.reason,
                         event.message, "remote" if event.remote else "local")
                self.close_reason = event.reason
            elif isinstance(event, Closed) and self.close_reason is None:
                self.close_reason = event.reason
            self.on_event(event)



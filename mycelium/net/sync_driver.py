"""Drive a sans-IO :class:`~mycelium.sync.session.SyncSession` over a :class:`FramedStream`.

The session decides everything (what to send, when it is done, timeouts); this module
only moves bytes and time: a reader task feeds :meth:`SyncSession.receive_data`, a
writer flushes :meth:`SyncSession.data_to_send` after every receive and every
:meth:`SessionRunner.poke`, and the writer also wakes at :meth:`SyncSession.next_deadline`
to call :meth:`SyncSession.tick`. Both tasks live in one nursery inside :meth:`run`, so
nothing outlives the runner. The writer takes output as the stream drains (the session
encodes at most ``max_out_bytes`` per call), and both charge the CPU time the session
spends on the peer (decoding and storing its input, producing our output) to the peer's
CPU budget (``protocols/sync.md`` §6.3).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import trio

from mycelium.errors import MyceliumError
from mycelium.net.framing import FramedStream
from mycelium.sync.session import (
    CaughtUp,
    Closed,
    EnvelopesIngested,
    SessionError,
    SessionState,
    SpacesShared,
    SyncSession,
)

log = logging.getLogger("mycelium.net.sync")


class SessionRunner:
    """Runs one session on one stream until either ends.

    ``on_event`` receives every event of ``session.events()`` (called from the runner's
    tasks, synchronously; it must not block). ``clock`` gives the ``now`` passed to the
    session (trio's clock by default, so ``trio.testing.MockClock`` works).
    """

    def __init__(
        self,
        session: SyncSession,
        framed: FramedStream,
        *,
        on_event: Callable[[object], None],
        clock: Callable[[], float] = trio.current_time,
        cpu_clock: Callable[[], float] = time.thread_time,
    ) -> None:
        self.session = session
        self.framed = framed
        self.on_event = on_event
        self.clock = clock
        #: CPU time of this thread: what decoding and ingesting the peer's input cost,
        #: charged to its CPU budget (``FramedStream.charge_cpu``).
        self.cpu_clock = cpu_clock
        #: Why the session ended (``bye``, ``eof``, ``reset``, ``rate_limited``, a
        #: protocol error reason...); None while running.
        self.close_reason: str | None = None
        self._wakeup = trio.Event()

    def poke(self) -> None:
        """Something changed (a local write, ``push_local``, ``notify_changed``): flush
        soon. Synchronous and cheap; callable from any task of the same trio run."""
        self._wakeup.set()

    async def run(self) -> None:
        """Drive the session until it closes or the stream ends; always closes the stream.

        Transport failures end the session (``connection_lost``) and are reported as a
        ``Closed`` event, never raised. Cancellation propagates after the stream is reset.
        """
        cancelled = True
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read_loop)
                await self._write_loop()
                nursery.cancel_scope.cancel()
            cancelled = False
        finally:
            self._emit()
            if cancelled:  # the daemon is shutting down: no orderly goodbye
                self.session.connection_lost("cancelled")
                self._emit()
                await self.framed.reset()
            else:
                await self.framed.close()
            peer = self.framed.remote_peer_id[-8:]
            log.debug("sync session with %s ended: %s", peer, self.close_reason)

    async def _write_loop(self) -> None:
        session = self.session
        while True:
            sent_before = session.stats.envelopes_out
            cpu = self.cpu_clock()
            data = session.data_to_send()
            cpu = self.cpu_clock() - cpu
            if data:
                if session.stats.envelopes_out != sent_before:
                    self.framed.last_progress = self.clock()
                try:
                    # What the peer makes us produce (store reads, encoding) is its cost too.
                    await self.framed.charge_cpu(cpu)
                    await self.framed.send(data)
                except MyceliumError as exc:
                    self._lost(exc.reason, exc)
            self._emit()
            if session.state is SessionState.CLOSED:
                return
            if not (data and session.output_pending):
                # Otherwise the session holds more: it is produced as the stream drains
                # (data_to_send encodes at most ``max_out_bytes`` at a time).
                deadline = session.next_deadline()
                with trio.move_on_at(math.inf if deadline is None else deadline):
                    await self._wakeup.wait()
            # Replace the event before anything else: a poke arriving while we send
            # next sets the new event, so no wakeup is lost.
            self._wakeup = trio.Event()
            session.tick(self.clock())

    async def _read_loop(self) -> None:
        session = self.session
        while session.state is not SessionState.CLOSED:
            try:
                data = await self.framed.receive_some()
            except MyceliumError as exc:
                self._lost(exc.reason, exc)
                return
            if data is None:
                self._lost("eof", None)
                return
            before = session.stats.frames_in
            cpu = self.cpu_clock()
            session.receive_data(data, self.clock())
            cpu = self.cpu_clock() - cpu
            self.poke()
            try:  # the session decodes frames, so it is here that we can count them
                await self.framed.charge_frames(session.stats.frames_in - before)
                await self.framed.charge_cpu(cpu)
            except MyceliumError as exc:
                self._lost(exc.reason, exc)
                return

    def _lost(self, reason: str, exc: BaseException | None) -> None:
        if self.session.state is not SessionState.CLOSED:
            if exc is not None:
                log.info(
                    "sync stream to %s failed (%s): %s",
                    self.framed.remote_peer_id[-8:], reason, exc,
                )
            self.session.connection_lost(reason)
        self.poke()

    def _emit(self) -> None:
        for event in self.session.events():
            if isinstance(event, SpacesShared):
                self.framed.useful = bool(event.spaces)
            elif isinstance(event, EnvelopesIngested | CaughtUp):
                self.framed.last_progress = self.clock()
            if isinstance(event, SessionError):
                log.warning(
                    "sync session with %s failed: %s (%s, %s)",
                    self.framed.remote_peer_id[-8:], event.reason, event.message,
                    "remote" if event.remote else "local",
                )
                self.close_reason = event.reason
            elif isinstance(event, Closed) and self.close_reason is None:
                self.close_reason = event.reason
            self.on_event(event)

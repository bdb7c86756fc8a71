"""A hostile peer that speaks the sync wire format by hand against a real SyncSession.

It knows the space id (a former member does), so it can build a valid offer token, and
then sends whatever frames an attack needs. Used by ``test_attack.py`` and
``bench/sync_attack.py``.
"""

from __future__ import annotations

import os

from mycelium.codec.frames import encode_frame
from mycelium.sync import offers as offer_tokens
from mycelium.sync.messages import CAP_LAZY, Hello, Message, Vector, encode_message
from mycelium.sync.ports import DeltaStore
from mycelium.sync.session import SessionState, SyncLimits, SyncSession


class Hostile:
    """The initiator side of a session, written by hand; ``victim`` is the real
    responder. Every byte each way is counted."""

    def __init__(self, store: DeltaStore, victim_id: bytes, *, spaces: tuple[bytes, ...],
                 credit: tuple[int, int] = (1 << 30, 1 << 40), lazy: bool = False,
                 limits: SyncLimits | None = None, now: float = 0.0) -> None:
        self.id = os.urandom(32)
        self.salt = os.urandom(16)
        self.victim = SyncSession(store, local_id=victim_id, remote_id=self.id,
                                  initiator=False, now=now, limits=limits)
        self.bytes_in = 0  # what the hostile side sent (the victim's input)
        self.bytes_out = 0  # what the victim sent back
        tokens = tuple(offer_tokens.initiator_token(s, salt_i=self.salt, initiator=self.id,
                                                    responder=victim_id) for s in spaces)
        self.send(Hello(salt=self.salt, offers=tokens, credit_envelopes=credit[0],
                        credit_bytes=credit[1], caps=(CAP_LAZY,) if lazy else ()))
        for i in range(len(spaces)):
            self.send(Vector(i, {}))

    @property
    def closed(self) -> bool:
        return self.victim.state is SessionState.CLOSED

    def send(self, msg: Message, now: float = 0.0) -> None:
        self.send_raw(encode_message(msg), now)

    def send_raw(self, payload: bytes, now: float = 0.0) -> None:
        data = encode_frame(payload)
        self.bytes_in += len(data)
        self.victim.receive_data(data, now)

    def drain(self, *, rounds: int = 10_000) -> int:
        """Take everything the victim produces, as a transport that drains at once
        would (``data_to_send`` until nothing is pending). Returns the bytes taken."""
        total = 0
        for _ in range(rounds):
            data = self.victim.data_to_send()
            total += len(data)
            if not self.victim.output_pending:
                break
        self.bytes_out += total
        return total

"""The inbox/outbox lifecycle as pure functions of state and time (protocols/gateway.md §3).

No sockets, no clock, no database: the store (:mod:`mycelium.gateway.db`) persists the
states decided here and the driver (:mod:`mycelium.gateway.service`) performs the HTTP
calls. Everything takes ``now_ms``, so tests drive hours of retries in microseconds.

Inbox::

    received --process--> done            (one reply queued in the same transaction)

Outbox (one reply per inbound message, so a retried webhook never queues a second)::

    pending --ok---------> sent
    pending --retry------> pending   (next_ms = now + backoff(attempts))
    pending --permanent--> failed    (provider's error recorded, never retried)
    pending --expired----> failed    (24-hour window closed or attempts exhausted)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

#: Delay before attempt n+1 (ms): 1 s, 2 s, 4 s ... capped at 5 minutes.
BACKOFF_BASE_MS = 1_000
BACKOFF_MAX_MS = 300_000
MAX_ATTEMPTS = 12
#: WhatsApp and Instagram accept free-form replies only within 24 h of the person's message.
REPLY_WINDOW_MS = 24 * 3600 * 1000
#: Provider limits on one text message.
WHATSAPP_MAX_CHARS = 4096
INSTAGRAM_MAX_BYTES = 1000
TWILIO_MAX_CHARS = 1600
ELLIPSIS = "…"


class OutState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Result(StrEnum):
    """What one delivery attempt came to."""

    OK = "ok"
    RETRY = "retry"
    PERMANENT = "permanent"
    EXPIRED = "expired"


#: The only legal moves (h11-style): anything else is a bug, not a state.
TRANSITIONS: dict[tuple[OutState, Result], OutState] = {
    (OutState.PENDING, Result.OK): OutState.SENT,
    (OutState.PENDING, Result.RETRY): OutState.PENDING,
    (OutState.PENDING, Result.PERMANENT): OutState.FAILED,
    (OutState.PENDING, Result.EXPIRED): OutState.FAILED,
}


class IllegalTransition(RuntimeError):
    """An outcome was applied to a reply in a state that cannot take it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    error: str | None = None
    provider_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reply:
    """One outbox row as the lifecycle sees it."""

    id: int
    channel: str
    state: OutState
    attempts: int
    next_ms: int
    inbound_ms: int
    last_error: str | None = None
    provider_id: str | None = None


def backoff_ms(attempts: int) -> int:
    """Delay after the ``attempts``-th failed attempt (1-based)."""
    return int(min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** max(0, min(attempts - 1, 20))))


def before_attempt(reply: Reply, now_ms: int) -> Outcome | None:
    """An outcome that makes the attempt pointless (window closed, too many tries), or None."""
    if reply.channel != "twilio" and now_ms - reply.inbound_ms > REPLY_WINDOW_MS:
        return Outcome(Result.EXPIRED, "outside_24h_window: the person wrote more than 24 h ago")
    if reply.attempts >= MAX_ATTEMPTS:
        return Outcome(Result.EXPIRED, f"gave up after {reply.attempts} attempts: "
                       f"{reply.last_error}")
    return None


def after_attempt(reply: Reply, outcome: Outcome, now_ms: int) -> Reply:
    """The reply's next state; raises :class:`IllegalTransition` for a settled reply."""
    state = TRANSITIONS.get((reply.state, outcome.result))
    if state is None:
        raise IllegalTransition(f"{outcome.result.value} on a {reply.state.value} reply")
    attempts = reply.attempts + (0 if outcome.result is Result.EXPIRED else 1)
    next_ms = now_ms + backoff_ms(attempts) if outcome.result is Result.RETRY else reply.next_ms
    return replace(reply, state=state, attempts=attempts, next_ms=next_ms,
                   last_error=outcome.error if outcome.result is not Result.OK else None,
                   provider_id=outcome.provider_id or reply.provider_id)


def classify(status: int | None, body: Any) -> Outcome:
    """An HTTP answer of the Graph API as an outcome.

    ``status`` None means the request never got an answer (connection refused, timeout).
    2xx is delivered; 429 and 5xx are retried; other 4xx are the provider's final word
    (for example code 131047, the closed 24-hour window) and recorded as they came.
    """
    if status is None:
        return Outcome(Result.RETRY, f"unreachable: {str(body)[:200]}")
    if 200 <= status < 300:
        return Outcome(Result.OK, provider_id=_message_id(body))
    error = _provider_error(status, body)
    if status == 429 or status >= 500:
        return Outcome(Result.RETRY, error)
    return Outcome(Result.PERMANENT, error)


def _message_id(body: Any) -> str | None:
    if isinstance(body, dict):
        msgs = body.get("messages")
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
            return str(msgs[0].get("id"))[:128]
        if body.get("message_id"):
            return str(body["message_id"])[:128]
    return None


def _provider_error(status: int, body: Any) -> str:
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return (f"http {status} code {err.get('code')}: "
                f"{str(err.get('message', ''))[:300]}")
    return f"http {status}: {str(body)[:300]}"


def fit_text(channel: str, text: str) -> str:
    """``text`` cut to the channel's limit (Instagram counts UTF-8 bytes, not characters)."""
    if channel == "instagram":
        data = text.encode()
        if len(data) <= INSTAGRAM_MAX_BYTES:
            return text
        room = INSTAGRAM_MAX_BYTES - len(ELLIPSIS.encode())
        return data[:room].decode("utf-8", errors="ignore") + ELLIPSIS
    limit = WHATSAPP_MAX_CHARS if channel == "whatsapp" else TWILIO_MAX_CHARS
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS

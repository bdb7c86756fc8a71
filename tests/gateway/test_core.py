"""The outbox lifecycle (pure): retries with backoff, provider errors, 24 h window, limits."""

from __future__ import annotations

import pytest

from mycelium.gateway import core
from mycelium.gateway.core import IllegalTransition, OutState, Reply, Result

H = 3600 * 1000


def pending(channel: str = "whatsapp", attempts: int = 0, inbound_ms: int = 0) -> Reply:
    return Reply(id=1, channel=channel, state=OutState.PENDING, attempts=attempts, next_ms=0,
                 inbound_ms=inbound_ms)


def test_retry_backoff_doubles_and_caps() -> None:
    reply, now = pending(), 10_000
    delays = []
    for _ in range(12):
        reply = core.after_attempt(reply, core.classify(503, {"error": {"code": 2}}), now)
        assert reply.state is OutState.PENDING
        delays.append(reply.next_ms - now)
    assert delays[:4] == [1_000, 2_000, 4_000, 8_000]
    assert max(delays) == core.BACKOFF_MAX_MS
    gave_up = core.before_attempt(reply, now)
    assert gave_up is not None and gave_up.result is Result.EXPIRED
    assert core.after_attempt(reply, gave_up, now).state is OutState.FAILED


def test_unreachable_and_429_retry_other_4xx_fail_with_the_providers_error() -> None:
    assert core.classify(None, "ConnectError").result is Result.RETRY
    assert core.classify(429, {}).result is Result.RETRY
    window = {"error": {"code": 131047, "message": "Re-engagement message"}}
    outcome = core.classify(400, window)
    assert outcome.result is Result.PERMANENT and "131047" in (outcome.error or "")
    failed = core.after_attempt(pending(), outcome, 5)
    assert failed.state is OutState.FAILED and "Re-engagement" in (failed.last_error or "")
    with pytest.raises(IllegalTransition):
        core.after_attempt(failed, core.classify(200, {}), 6)


def test_sent_records_the_providers_message_id() -> None:
    ok = core.classify(200, {"messages": [{"id": "wamid.X"}]})
    sent = core.after_attempt(pending(), ok, 7)
    assert (sent.state, sent.provider_id, sent.attempts) == (OutState.SENT, "wamid.X", 1)


def test_reply_window_closes_after_24_hours_except_twiml() -> None:
    assert core.before_attempt(pending(inbound_ms=0), 24 * H) is None
    late = core.before_attempt(pending(inbound_ms=0), 24 * H + 1)
    assert late is not None and late.error and late.error.startswith("outside_24h_window")
    assert core.before_attempt(pending("twilio", inbound_ms=0), 48 * H) is None


def test_text_limits_per_channel() -> None:
    assert len(core.fit_text("whatsapp", "x" * 5000)) == core.WHATSAPP_MAX_CHARS
    ig = core.fit_text("instagram", "ñ" * 800)  # 1600 bytes
    assert len(ig.encode()) <= core.INSTAGRAM_MAX_BYTES and ig.endswith(core.ELLIPSIS)
    assert core.fit_text("instagram", "short") == "short"

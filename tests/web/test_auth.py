"""The sans-IO sign-in core: links work once and expire, sessions expire and can be
revoked, CSRF tokens belong to their session, memory stays bounded."""

from __future__ import annotations

import itertools

import pytest

from mycelium.web import auth
from mycelium.web.auth import BadLink, WebAuth


def counter_rng() -> WebAuth:
    """Deterministic randomness: distinct tokens from a counter."""
    counter = itertools.count(1)
    return WebAuth(rng=lambda n: next(counter).to_bytes(n, "big"))


def test_login_link_works_once() -> None:
    core = counter_rng()
    token = core.issue_link(now=100.0)
    session = core.redeem(token, now=101.0, label="Chrome · Linux")
    assert core.session(session.id, now=102.0) is session
    with pytest.raises(BadLink):
        core.redeem(token, now=103.0, label="again")


def test_link_expires() -> None:
    core = counter_rng()
    token = core.issue_link(now=0.0, purpose="pair")
    with pytest.raises(BadLink):
        core.redeem(token, now=auth.LINK_TTL_S + 1, label="late")


def test_unknown_and_empty_tokens_refused() -> None:
    core = counter_rng()
    core.issue_link(now=0.0)
    for bad in ("", "00" * 32, "not hex"):
        with pytest.raises(BadLink):
            core.redeem(bad, now=1.0, label="x")


def test_session_idle_and_absolute_expiry() -> None:
    core = counter_rng()
    s = core.redeem(core.issue_link(0.0), 0.0, "a")
    assert core.session(s.id, auth.SESSION_IDLE_S - 1) is s
    assert core.session(s.id, 2 * auth.SESSION_IDLE_S) is None  # idle too long
    t = core.redeem(core.issue_link(0.0), 0.0, "b")
    now = 0.0
    while now <= auth.SESSION_MAX_S:  # used every day, still ends at the absolute limit
        now += 24 * 3600
        found = core.session(t.id, now)
    assert found is None


def test_revoke_and_list() -> None:
    core = counter_rng()
    first = core.redeem(core.issue_link(0.0), 1.0, "phone")
    second = core.redeem(core.issue_link(0.0, "pair"), 2.0, "laptop")
    assert [s.label for s in core.sessions(3.0)] == ["phone", "laptop"]
    assert second.via == "pair"
    assert core.revoke(first.key)
    assert not core.revoke(first.key)
    assert core.session(first.id, 4.0) is None
    assert core.session(second.id, 4.0) is second


def test_csrf_belongs_to_its_session() -> None:
    core = counter_rng()
    one = core.redeem(core.issue_link(0.0), 0.0, "a")
    two = core.redeem(core.issue_link(0.0), 0.0, "b")
    assert WebAuth.check_csrf(one, one.csrf)
    assert not WebAuth.check_csrf(one, two.csrf)
    assert not WebAuth.check_csrf(one, "")
    assert not WebAuth.check_csrf(one, None)


def test_only_hashes_are_kept() -> None:
    core = counter_rng()
    token = core.issue_link(0.0)
    session = core.redeem(core.issue_link(0.0), 0.0, "a")
    dumped = repr(core._links) + repr(list(core._sessions))
    assert token not in dumped and session.id not in dumped


def test_memory_is_bounded() -> None:
    core = counter_rng()
    tokens = [core.issue_link(float(i)) for i in range(auth.MAX_LINKS + 10)]
    assert len(core._links) == auth.MAX_LINKS
    with pytest.raises(BadLink):  # the oldest links made room
        core.redeem(tokens[0], 100.0, "x")
    for i in range(auth.MAX_SESSIONS + 5):
        core.redeem(core.issue_link(200.0 + i), 200.0 + i, f"s{i}")
    assert len(core.sessions(300.0)) == auth.MAX_SESSIONS


def test_sessions_survive_a_restart_as_hashes_only() -> None:
    core = counter_rng()
    kept = core.redeem(core.issue_link(0.0), 0.0, "phone")
    gone = core.redeem(core.issue_link(0.0), 0.0, "laptop")
    core.revoke(gone.key)
    records = core.snapshot(10.0)
    assert kept.id not in repr(records)
    fresh = counter_rng()
    assert fresh.restore(records, 20.0) == 1
    found = fresh.session(kept.id, 20.0)
    assert found is not None and found.csrf == kept.csrf and found.label == "phone"
    assert fresh.session(gone.id, 20.0) is None


def test_restore_skips_bad_and_expired_records() -> None:
    core = counter_rng()
    good = core.redeem(core.issue_link(0.0), 0.0, "ok")
    record = core.snapshot(0.0)[0]
    bad = [record | {"key": "short"}, {"key": 1}, "nonsense", record | {"created": "x"}]
    assert counter_rng().restore(bad, 0.0) == 0
    assert counter_rng().restore("not a list", 0.0) == 0
    assert counter_rng().restore([record], auth.SESSION_MAX_S + 1) == 0
    assert counter_rng().restore([record], 1.0) == 1 and good.key == record["key"]

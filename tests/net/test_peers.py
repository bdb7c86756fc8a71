"""PeerManager: backoff, strikes and bans with a fake dialer and clock, then with real
py-libp2p hosts on 127.0.0.1 (banned peers are refused and cut off; others are served)."""

from __future__ import annotations

import contextlib
import logging
import random

import pytest
import trio
import trio.testing

from mycelium.codec.frames import encode_uvarint
from mycelium.identity.identity import Identity
from mycelium.net.errors import ConnectError, NetError
from mycelium.net.host import HostLimits
from mycelium.net.peers import PeerManager, PeerPolicy, peer_fault
from mycelium.sync.session import Closed, SessionError

from .syncpeer import SyncPeer, wait_until
from .util import hosts

pytestmark = pytest.mark.timeout(60)

S1 = b"\x01" * 32


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeDialer:
    """Dials succeed for addresses in ``up``; everything else is refused."""

    def __init__(self) -> None:
        self.peer_id = Identity.generate().peer_id
        self.up: set[str] = set()
        self.connected: set[str] = set()
        self.dialled: list[str] = []
        self.disconnected: list[str] = []

    async def connect(self, maddr: str) -> str:
        self.dialled.append(maddr)
        if maddr not in self.up:
            raise ConnectError(f"refused: {maddr}", reason="dial_failed")
        peer_id = maddr.rsplit("/p2p/", 1)[1]
        self.connected.add(peer_id)
        return peer_id

    async def disconnect(self, peer_id: str) -> None:
        self.disconnected.append(peer_id)
        self.connected.discard(peer_id)

    def connected_peers(self) -> list[str]:
        return sorted(self.connected)


def _manager(policy: PeerPolicy | None = None) -> tuple[PeerManager, FakeDialer, Clock]:
    dialer, clock = FakeDialer(), Clock()
    return PeerManager(dialer, policy, clock=clock, rng=random.Random(7)), dialer, clock


def _pid() -> str:
    return Identity.generate().peer_id


async def test_backoff_doubles_with_jitter_and_resets_on_success() -> None:
    pm, dialer, clock = _manager(PeerPolicy(backoff_initial=1.0, backoff_max=20.0))
    peer = _pid()
    addr = f"/ip4/10.231.0.2/tcp/4001/p2p/{peer}"
    pm.add(peer, [addr])
    assert pm.due() == [peer]
    waits = []
    for _ in range(7):
        with pytest.raises(ConnectError) as info:
            await pm.dial(peer)
        assert info.value.reason == "dial_failed"
        state = pm.get(peer)
        assert state is not None
        waits.append(state.next_dial_at - clock.now)
        assert pm.due() == []
        with pytest.raises(ConnectError, match="backoff"):
            await pm.dial(peer)
        clock.now = state.next_dial_at
    bases = [1, 2, 4, 8, 16, 20, 20]
    for wait, base in zip(waits, bases, strict=True):
        assert 0.8 * base <= wait <= 1.2 * base, (waits, bases)
    dialer.up.add(addr)
    assert await pm.dial(peer) == peer
    state = pm.get(peer)
    assert state is not None
    assert (state.dials_ok, state.dials_failed, state.consecutive_failures) == (1, 7, 0)
    assert state.last_error is None
    assert pm.due() == []  # connected
    dialer.connected.clear()
    assert pm.due() == [peer]  # and no backoff left after a success


async def test_dial_tries_addresses_in_order_loopback_last() -> None:
    pm, dialer, _ = _manager()
    peer = _pid()
    loop, lan = f"/ip4/127.0.0.1/tcp/1/p2p/{peer}", f"/ip4/10.231.0.3/tcp/2/p2p/{peer}"
    pm.add(peer, [loop, "/ip4/10.231.0.3/tcp/2"])  # a bare address gets our /p2p/ suffix
    state = pm.get(peer)
    assert state is not None and state.addrs == [lan, loop]
    dialer.up.add(loop)
    assert await pm.dial(peer) == peer
    assert dialer.dialled == [lan, loop]


async def test_add_ignores_self_foreign_ids_and_caps_known_peers() -> None:
    pm, dialer, clock = _manager(PeerPolicy(max_known=3, max_addrs_per_peer=2))
    assert pm.add(dialer.peer_id, ["/ip4/10.231.0.1/tcp/1"]) is None
    static = _pid()
    pm.add(static, source="static")
    other = _pid()
    state = pm.add(_pid(), [f"/ip4/10.231.0.9/tcp/1/p2p/{other}"], source="mdns")
    assert state is not None and state.addrs == []  # an address of someone else
    state = pm.add(state.peer_id, [f"/ip4/10.231.0.{i}/tcp/1" for i in range(5)], source="mdns")
    assert state is not None and len(state.addrs) == 2
    oldest_mdns = state.peer_id
    clock.now += 1
    pm.add(_pid(), source="mdns")
    clock.now += 1
    newest = _pid()
    pm.add(newest, source="mdns")  # full: the oldest non-static entry goes
    known = {s.peer_id for s in pm.known()}
    assert len(known) == 3 and static in known and newest in known
    assert oldest_mdns not in known
    assert pm.metrics["evicted"] == 1


async def test_strikes_within_window_ban_and_ban_expires() -> None:
    pm, _dialer, clock = _manager(PeerPolicy(strikes_to_ban=3, strike_window=60, ban_duration=100))
    peer = _pid()
    pm.add(peer, [f"/ip4/10.231.0.2/tcp/1/p2p/{peer}"])
    assert not pm.report(peer, "bad_frame")
    clock.now += 61  # the first strike has aged out
    assert not pm.report(peer, "bad_frame")
    assert not pm.report(peer, "credit_exceeded")
    assert not pm.is_banned(peer)
    assert pm.report(peer, "bad_frame")
    assert pm.is_banned(peer)
    assert pm.due() == []
    with pytest.raises(ConnectError) as info:
        await pm.dial(peer, force=True)
    assert info.value.reason == "banned"
    state = pm.get(peer)
    assert state is not None
    assert state.faults == {"bad_frame": 3, "credit_exceeded": 1}
    assert state.as_dict(clock.now)["ban_reason"] == "bad_frame"
    assert pm.banned() == {peer: pytest.approx(100)}
    clock.now += 100
    assert not pm.is_banned(peer) and pm.banned() == {}
    assert pm.due() == [peer]
    # A repeat offender is banned twice as long.
    for _ in range(3):
        pm.report(peer, "rate_limited")
    assert pm.banned() == {peer: pytest.approx(200)}
    assert pm.summary()["bans"] == 2


async def test_run_cuts_banned_peers_connections() -> None:
    pm, dialer, _ = _manager(PeerPolicy(strikes_to_ban=1))
    peer, bystander = _pid(), _pid()
    dialer.connected |= {peer, bystander}
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pm.run)
            assert pm.report(peer, "stream_flood")
            while not dialer.disconnected:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert dialer.disconnected == [peer]
    assert dialer.connected_peers() == [bystander]
    assert pm.metrics["cuts"] == 1


def test_only_protocol_violations_by_the_peer_are_faults() -> None:
    assert peer_fault(SessionError("bad_frame", "frame is not CBOR", remote=True)) == "bad_frame"
    # The peer relayed an ERR frame: it may be our fault, and it broke no rule.
    assert peer_fault(SessionError("bad_frame", "reported by peer", remote=True)) is None
    assert peer_fault(SessionError("timeout", "no HELLO", remote=False)) is None
    assert peer_fault(Closed("eof")) is None


# -- with real hosts -----------------------------------------------------------------

async def test_banned_peer_is_refused_and_cut_while_others_are_served(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="mycelium.net")
    with trio.fail_after(30):
        async with hosts(3) as (hs, hb, hh), trio.open_nursery() as nursery:
            server, honest = SyncPeer(hs), SyncPeer(hh)
            server.store.add_space(S1)
            honest.store.add_space(S1)
            server.write(S1, 10)
            pm = PeerManager(hs)
            hs.set_peer_gate(pm)
            nursery.start_soon(pm.run)
            await hb.connect(hs.addrs()[0])
            pm.ban(hb.peer_id, "test")
            await wait_until(lambda: pm.metrics["cuts"] == 1)
            await wait_until(lambda: hb.peer_id not in hs.connected_peers())
            # It reconnects and tries a stream: refused, reset, disconnected again.
            await hb.connect(hs.addrs()[0])
            try:
                framed = await hb.open_sync_stream(hs.peer_id)
                await framed.receive_some()
            except NetError:
                pass
            await wait_until(lambda: hs.metrics()["sync_streams_banned"] == 1)
            await wait_until(lambda: hb.peer_id not in hs.connected_peers())
            assert "banned" in caplog.text
            # We do not dial it either.
            with pytest.raises(ConnectError) as info:
                await hs.connect(hb.addrs()[0])
            assert info.value.reason == "banned"
            # Others are served.
            nursery.start_soon(honest.sync_with, server)
            await wait_until(lambda: honest.store.version_vector(S1)
                             == server.store.version_vector(S1))
            nursery.cancel_scope.cancel()


async def test_stream_flood_gets_the_peer_banned() -> None:
    limits = HostLimits(max_sync_streams=16, max_sync_streams_per_peer=2)
    with trio.fail_after(30):
        async with hosts(2, limits) as (hs, hf), trio.open_nursery() as nursery:
            SyncPeer(hs)
            pm = PeerManager(hs, PeerPolicy(strikes_to_ban=3))
            hs.set_peer_gate(pm)
            nursery.start_soon(pm.run)
            await hf.connect(hs.addrs()[0])

            async def open_one() -> None:
                with contextlib.suppress(NetError):
                    await hf.open_sync_stream(hs.peer_id)

            async with trio.open_nursery() as flood:
                for _ in range(20):
                    flood.start_soon(open_one)
            assert pm.is_banned(hf.peer_id)
            state = pm.get(hf.peer_id)
            assert state is not None and state.faults["stream_flood"] >= 3
            assert state.ban_reason == "stream_flood"
            await wait_until(lambda: hf.peer_id not in hs.connected_peers())
            nursery.cancel_scope.cancel()


async def test_garbage_and_rate_limit_strikes_reach_the_manager() -> None:
    """The sync driver's protocol violations (via ``observe``) and the host's rate limit
    (via the gate) both count as strikes."""
    limits = HostLimits(rate_bytes_s=20_000, burst_bytes=50_000)
    with trio.fail_after(30):
        async with hosts(2, limits) as (hs, hr), trio.open_nursery() as nursery:
            server = SyncPeer(hs)
            pm = PeerManager(hs, PeerPolicy(strikes_to_ban=2))
            hs.set_peer_gate(pm)
            nursery.start_soon(pm.run)
            await hr.connect(hs.addrs()[0])
            rogue = await hr.open_sync_stream(hs.peer_id)
            await rogue.send(encode_uvarint(5) + b"\xff" * 5)  # not CBOR
            await wait_until(lambda: any(isinstance(e, SessionError) for e in server.events))
            for event in server.events:
                pm.observe(hr.peer_id, event)
            state = pm.get(hr.peer_id)
            assert state is not None and state.faults == {"bad_frame": 1}
            assert not pm.is_banned(hr.peer_id)
            rogue = await hr.open_sync_stream(hs.peer_id)
            try:
                await rogue.send(encode_uvarint(900_000))
                for _ in range(20):
                    await rogue.send(b"\0" * 16_384)
            except NetError:
                pass
            await wait_until(lambda: pm.is_banned(hr.peer_id))
            assert state.faults["rate_limited"] == 1 and state.ban_reason == "rate_limited"
            await wait_until(lambda: hr.peer_id not in hs.connected_peers())
            nursery.cancel_scope.cancel()


async def test_connection_flood_is_capped_and_connected_peers_keep_syncing() -> None:
    """``HostLimits.max_connections`` bounds inbound connections from many identities
    (py-libp2p refuses the excess during security negotiation); peers already connected
    keep being served."""
    limits = HostLimits(max_connections=3)
    with trio.fail_after(40):
        async with hosts(1, limits) as (hs,), hosts(6) as clients:
            server = SyncPeer(hs)
            server.store.add_space(S1)
            server.write(S1, 10)
            honest = SyncPeer(clients[0])
            honest.store.add_space(S1)
            results = []
            for client in clients:
                try:
                    await client.connect(hs.addrs()[0])
                    results.append("ok")
                except ConnectError as exc:
                    results.append(exc.reason)
            assert results == ["ok"] * 3 + ["dial_failed"] * 3
            # the refused dials are gone on the server's side too (polled, not slept for)
            await wait_until(lambda: len(hs.connected_peers()) == 3, timeout=10)
            framed = await clients[0].open_sync_stream(hs.peer_id)
            async with trio.open_nursery() as nursery:
                runner = honest.runner(hs.peer_id, framed, initiator=True)
                nursery.start_soon(runner.run)
                await wait_until(lambda: honest.store.version_vector(S1)
                                 == server.store.version_vector(S1))
                nursery.cancel_scope.cancel()


async def test_keep_connected_dials_due_peers_with_backoff(
    autojump_clock: trio.testing.MockClock,
) -> None:
    dialer = FakeDialer()
    pm = PeerManager(dialer, PeerPolicy(backoff_initial=1.0), rng=random.Random(1))
    flaky, steady, late = _pid(), _pid(), _pid()
    flaky_addr = f"/ip4/10.231.0.2/tcp/1/p2p/{flaky}"
    steady_addr = f"/ip4/10.231.0.3/tcp/1/p2p/{steady}"
    dialer.up.add(steady_addr)
    pm.add(flaky, [flaky_addr])
    pm.add(steady, [steady_addr])
    sessions: list[tuple[str, float]] = []
    release = trio.Event()

    async def on_connected(peer_id: str) -> None:
        sessions.append((peer_id, trio.current_time()))
        if peer_id == late:
            raise ConnectError("session failed", reason="open_failed")
        await release.wait()

    t0 = trio.current_time()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pm.keep_connected, on_connected)
            await wait_until(lambda: len(sessions) == 1)
            assert sessions[0][0] == steady
            await trio.sleep(2.5)  # flaky failed at 0 s, ~1 s and ~3 s: three dials so far
            state = pm.get(flaky)
            assert state is not None and state.dials_failed >= 2
            dialer.up.add(flaky_addr)
            await wait_until(lambda: len(sessions) == 2, timeout=30)
            assert sessions[1][0] == flaky
            assert sessions[1][1] - t0 > 2.5
            # A newly learned address wakes the loop at once.
            dialer.up.add(f"/ip4/10.231.0.4/tcp/1/p2p/{late}")
            before = trio.current_time()
            pm.add(late, [f"/ip4/10.231.0.4/tcp/1/p2p/{late}"], source="mdns")
            await wait_until(lambda: len(sessions) == 3)
            assert sessions[2] == (late, before)
            await wait_until(lambda: pm.metrics["on_connected_failed"] == 1)
            # Steady is never dialled twice while its session runs.
            assert dialer.dialled.count(steady_addr) == 1
            release.set()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("payload", "fault"),
    [(b"\xff", "bad_frame"), (None, None)],  # None: the peer's own ERR frame
)
def test_peer_fault_matches_what_sync_session_emits(payload: bytes | None,
                                                    fault: str | None) -> None:
    """Pins :func:`peer_fault` to the real ``SyncSession``: garbage is the peer's fault,
    a relayed ERR is not."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from mycelium.codec.frames import encode_frame
    from mycelium.sync.memstore import MemoryStore
    from mycelium.sync.messages import Error, encode_message
    from mycelium.sync.session import SyncSession

    def key() -> bytes:
        return Ed25519PrivateKey.generate().public_key().public_bytes(
            Encoding.Raw, PublicFormat.Raw)

    store = MemoryStore()
    session = SyncSession(store, local_id=key(), remote_id=key(), initiator=False, now=0.0,
                          cache=store.cache)
    frame = encode_message(Error("unknown_space")) if payload is None else payload
    session.receive_data(encode_frame(frame), 0.0)
    errors = [e for e in session.events() if isinstance(e, SessionError)]
    assert len(errors) == 1
    assert peer_fault(errors[0]) == fault

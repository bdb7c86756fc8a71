"""The WebSocket path (`/v1/sync`): mutual auth, the unchanged SyncSession through the
relay between two real Soil stores, pinning and trust on first use, removed members cut
off at once, and named reasons (over_quota, rate_limited) inside the session."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from mycelium.identity.identity import Identity
from mycelium.node.relay_link import RelayLink, RelayLinks, TrustStore
from mycelium.relay.client import RelayUrl, connect
from mycelium.relay.handshake import HandshakeError
from mycelium.relay.limits import RelayLimits
from mycelium.relay.store import StoreLimits
from mycelium.spaces import service
from mycelium.store.soil import Soil
from mycelium.sync import VerifyCache
from tests.relay.conftest import Relay, community, running_relay


def _link(relay: Relay, soil: Soil, home: Path, *, pin: bool = True) -> RelayLink:
    url = f"{relay.url}#{relay.service.did}" if pin else relay.url
    return RelayLink(RelayUrl.parse(url), soil, soil.identity, VerifyCache(),
                     TrustStore(home / "relays.json"))


async def _until(predicate, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.05)


async def test_two_stores_sync_through_the_relay(tmp_path: Path) -> None:
    com = community(tmp_path)
    com.a.put_doc(com.space, "products", "p1", {"title": "tomatoes"})
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        la, lb = _link(relay, com.a, tmp_path / "ha"), _link(relay, com.b, tmp_path / "hb")
        nursery.start_soon(la.run)
        await _until(lambda: la.status.state == "connected" and la.backlog() == 0)
        nursery.start_soon(lb.run)
        await _until(lambda: com.b.get_doc(com.space, "products", "p1") is not None)
        # live: a write on B reaches A through the relay without a new connection
        links = RelayLinks([], com.a, com.a.identity, VerifyCache(), tmp_path)
        links.links = [la]
        nursery.start_soon(links.run)
        links_b = RelayLinks([], com.b, com.b.identity, VerifyCache(), tmp_path)
        links_b.links = [lb]
        nursery.start_soon(links_b.run)
        com.b.put_doc(com.space, "products", "p2", {"title": "beans"})
        await _until(lambda: com.a.get_doc(com.space, "products", "p2") is not None)
        assert la.status.reconnects == 0 and lb.status.reconnects == 0
        nursery.cancel_scope.cancel()


async def test_personal_space_is_hosted_for_its_owner_only(tmp_path: Path) -> None:
    com = community(tmp_path)
    personal = service.ensure_personal_space(com.a)
    com.a.put_doc(personal, "diary", "d1", {"body": "dear diary"})
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        la = _link(relay, com.a, tmp_path / "ha")
        nursery.start_soon(la.run)
        await _until(lambda: relay.store.hosts(personal) and
                     relay.store.version_vector(personal) == com.a.version_vector(personal))
        assert relay.store.may_read(personal, com.a.identity.public_key)
        assert not relay.store.may_read(personal, com.b.identity.public_key)
        async with connect(RelayUrl.parse(relay.url), com.a.identity,
                           expected_did=relay.service.did) as conn:
            listed = {s["space"]: s for s in await conn.list_spaces()}
        assert listed[personal]["kind"] == "personal"
        assert listed[com.space]["role"] == "admin"
        async with connect(RelayUrl.parse(relay.url), com.b.identity,
                           expected_did=relay.service.did) as conn:
            assert personal not in {s["space"] for s in await conn.list_spaces()}
        nursery.cancel_scope.cancel()


async def test_relay_did_is_pinned_or_trusted_on_first_use(tmp_path: Path) -> None:
    com = community(tmp_path)
    home = tmp_path / "home"
    home.mkdir()
    async with running_relay(tmp_path) as relay:
        tofu = _link(relay, com.a, home, pin=False)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(tofu.run)
                await _until(lambda: tofu.status.state == "connected")
                nursery.cancel_scope.cancel()
        assert TrustStore(home / "relays.json").get(tofu.relay.origin) == relay.service.did
        stranger = Identity.generate().did
        with pytest.raises(HandshakeError) as err:
            async with connect(RelayUrl.parse(relay.url), com.a.identity,
                               expected_did=stranger):
                pass
        assert err.value.reason == "relay_identity_changed"
    # a different relay on the same origin later: the recorded DID makes it a loud error
    async with running_relay(tmp_path / "other") as impostor:
        pinned = TrustStore(home / "relays.json")
        pinned.put(RelayUrl.parse(impostor.url).origin, relay.service.did)
        link = _link(impostor, com.a, home, pin=False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(link.run)
            await _until(lambda: link.status.state == "refused")
            nursery.cancel_scope.cancel()
        assert link.status.last_error == "relay_identity_changed"


async def test_websocket_auth_failures_get_named_reasons(tmp_path: Path) -> None:
    com = community(tmp_path)
    async with running_relay(tmp_path) as relay:
        # a client whose signature does not match the DID it claims
        class Forger(Identity):
            @property
            def did(self) -> str:  # type: ignore[override]
                return com.b.identity.did

        forger = Forger(Identity.generate().seed)
        with pytest.raises(HandshakeError) as err:
            async with connect(RelayUrl.parse(relay.url), forger,
                               expected_did=relay.service.did):
                pass
        assert err.value.reason == "bad_signature"


async def test_removed_member_is_cut_off_at_once(tmp_path: Path) -> None:
    com = community(tmp_path)
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        la, lb = _link(relay, com.a, tmp_path / "ha"), _link(relay, com.b, tmp_path / "hb")
        nursery.start_soon(la.run)
        await _until(lambda: la.status.state == "connected" and la.backlog() == 0)
        nursery.start_soon(lb.run)
        await _until(lambda: lb.driver is not None
                     and com.space in lb.driver.session.shared_spaces)
        service.remove(com.a, com.space, com.b.identity.did)
        assert la.driver is not None
        la.notify(com.space)
        await _until(lambda: not relay.store.may_read(com.space, com.b.identity.public_key))
        await _until(lambda: lb.status.last_error == "not_member")
        nursery.cancel_scope.cancel()


async def test_session_over_quota_ends_with_a_named_reason(tmp_path: Path) -> None:
    com = community(tmp_path)
    async with running_relay(tmp_path, store_limits=StoreLimits(space_bytes=20_000)) as relay, \
            trio.open_nursery() as nursery:
        la = _link(relay, com.a, tmp_path / "ha")
        nursery.start_soon(la.run)
        await _until(lambda: la.status.state == "connected" and la.backlog() == 0)
        for i in range(40):
            com.a.put_doc(com.space, "products", f"p{i}",
                          {"title": "x" * 180, "description": "y" * 400})
        la.notify(com.space)
        await _until(lambda: la.status.last_error == "over_quota")
        assert relay.store.space_bytes(com.space) <= 20_000
        nursery.cancel_scope.cancel()


async def test_frame_flood_ends_the_session_rate_limited(tmp_path: Path) -> None:
    com = community(tmp_path)
    for i in range(200):
        com.a.put_doc(com.space, "products", f"p{i}", {"title": f"crate {i}"})
    limits = RelayLimits(frames_per_identity=1.0, frame_burst_identity=3)
    async with running_relay(tmp_path, limits=limits) as relay, trio.open_nursery() as nursery:
        # small batches: many frames
        la = _link(relay, com.a, tmp_path / "ha")
        nursery.start_soon(la.run)
        await _until(lambda: la.status.last_error == "rate_limited")
        assert relay.service.metrics.refused["rate_limited"] >= 1
        nursery.cancel_scope.cancel()


async def test_a_relay_answers_under_each_public_origin(tmp_path: Path) -> None:
    from simnet.backends.process import free_port

    com = community(tmp_path)
    port = free_port()
    urls = [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
    async with running_relay(tmp_path, port=port, public_urls=urls) as relay:
        for url in urls:  # the client signs for the origin it dialled
            async with connect(RelayUrl.parse(url), com.a.identity,
                               expected_did=relay.service.did) as conn:
                assert conn.relay_did == relay.service.did
        other = free_port()
        async with running_relay(tmp_path / "b", port=other,
                                 public_urls=[f"http://localhost:{other}",
                                              f"http://localhost:{free_port()}"]):
            with pytest.raises(HandshakeError) as err:
                async with connect(RelayUrl.parse(f"http://127.0.0.1:{other}"),
                                   com.a.identity, expected_did=None):
                    pass
            assert err.value.reason == "wrong_origin"


async def test_relays_replicate_as_peers(tmp_path: Path) -> None:
    """Node A uses relay 1 only, node B relay 2 only; relay 2 replicates with relay 1."""
    com = community(tmp_path)
    com.a.put_doc(com.space, "products", "p1", {"title": "tomatoes"})
    id1, id2 = Identity.generate(), Identity.generate()
    async with (
        running_relay(tmp_path / "r1", identity=id1, trust=[id2.did]) as r1,
        running_relay(tmp_path / "r2", identity=id2, peers=[f"{r1.url}#{id1.did}"]) as r2,
        trio.open_nursery() as nursery,
    ):
        la, lb = _link(r1, com.a, tmp_path / "ha"), _link(r2, com.b, tmp_path / "hb")
        for link, soil in ((la, com.a), (lb, com.b)):
            links = RelayLinks([], soil, soil.identity, VerifyCache(), tmp_path)
            links.links = [link]
            nursery.start_soon(links.run)
        await _until(lambda: com.b.get_doc(com.space, "products", "p1") is not None,
                     timeout=20)
        com.b.put_doc(com.space, "products", "p2", {"title": "beans"})
        await _until(lambda: com.a.get_doc(com.space, "products", "p2") is not None,
                     timeout=20)
        assert r1.store.version_vector(com.space) == r2.store.version_vector(com.space)
        # a relay that is not trusted gets nothing from relay 1
        outsider = Identity.generate()
        async with connect(RelayUrl.parse(r1.url), outsider,
                           expected_did=id1.did) as conn:
            assert await conn.list_spaces() == []
        nursery.cancel_scope.cancel()


async def test_a_space_created_while_linked_reaches_the_relay(tmp_path: Path) -> None:
    com = community(tmp_path)
    async with running_relay(tmp_path) as relay, trio.open_nursery() as nursery:
        link = _link(relay, com.a, tmp_path / "ha")
        links = RelayLinks([], com.a, com.a.identity, VerifyCache(), tmp_path)
        links.links = [link]
        nursery.start_soon(links.run)
        await _until(lambda: relay.store.hosts(com.space))
        garden = service.create_space(com.a, "garden")
        com.a.put_doc(garden, "products", "g1", {"title": "seedlings"})
        await _until(lambda: relay.store.version_vector(garden) == com.a.version_vector(garden),
                     timeout=5)
        nursery.cancel_scope.cancel()


async def test_session_cap_refuses_with_a_reason(tmp_path: Path) -> None:
    com = community(tmp_path)
    limits = RelayLimits(max_sessions_per_identity=1)
    async with running_relay(tmp_path, limits=limits) as relay, trio.open_nursery() as nursery:
        link = _link(relay, com.a, tmp_path / "ha")
        nursery.start_soon(link.run)
        await _until(lambda: link.status.state == "connected" and link.driver is not None
                     and relay.service.sessions)
        with pytest.raises(HandshakeError) as err:
            async with connect(RelayUrl.parse(relay.url), com.a.identity,
                               expected_did=relay.service.did):
                pass
        assert err.value.reason == "too_many_sessions"
        assert relay.service.metrics.refused["too_many_sessions"] == 1
        nursery.cancel_scope.cancel()

"""The relay's REST API against a real server on 127.0.0.1: every refusal of the issue's
done-when list (401 for unauthenticated, wrong-audience, expired, replayed and forged
auth; 403 for non-members; 413 oversized; 429 over quota / too fast), each with its named
reason, and nothing the refused client sent is stored."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import httpx

from mycelium.codec import cbor
from mycelium.identity.auth import ChallengeResponse, answer
from mycelium.identity.identity import Identity
from mycelium.node.relay_link import registration_envelopes
from mycelium.relay.limits import RelayLimits
from mycelium.relay.store import StoreLimits
from tests.relay.conftest import (
    Community,
    Relay,
    auth_header,
    cbor_body,
    community,
    envelopes_of,
    fetch_challenge,
    header_for,
    running_relay,
)


async def _register(client: httpx.AsyncClient, relay: Relay, com: Community) -> None:
    body = {"genesis": com.a.genesis(com.space),
            "envelopes": registration_envelopes(com.a, com.space)}
    resp = await client.post(f"{relay.url}/v1/spaces", content=cbor_body(body),
                             headers={"Authorization": await auth_header(client, relay,
                                                                         com.a.identity)})
    assert resp.status_code == 201, resp.text
    assert cbor.decode(resp.content)["space"] == com.space


async def _post(client: httpx.AsyncClient, relay: Relay, space: bytes, envelopes: list[bytes],
                auth: str | None) -> httpx.Response:
    headers = {"Authorization": auth} if auth is not None else {}
    return await client.post(f"{relay.url}/v1/spaces/{space.hex()}/deltas",
                             content=cbor_body({"envelopes": envelopes}), headers=headers)


def _reason(resp: httpx.Response) -> str:
    return str(resp.json()["reason"])


async def test_auth_failures_are_401_with_reasons_and_store_nothing(tmp_path: Path) -> None:
    com = community(tmp_path)
    for i in range(5):
        com.a.put_doc(com.space, "products", f"p{i}", {"title": f"crate {i}"})
    async with running_relay(tmp_path) as relay, httpx.AsyncClient() as client:
        await _register(client, relay, com)
        before = relay.store.usage()
        fresh = envelopes_of(com.a, com.space)
        ident = com.a.identity

        resp = await _post(client, relay, com.space, fresh, None)
        assert (resp.status_code, _reason(resp)) == (401, "unauthenticated")

        challenge = await fetch_challenge(client, relay)
        other = dataclasses.replace(challenge, audience="https://elsewhere.example:443")
        resp = await _post(client, relay, com.space, fresh,
                           header_for(answer(ident, other).to_cbor()))
        assert (resp.status_code, _reason(resp)) == (401, "wrong_audience")

        challenge = await fetch_challenge(client, relay)
        late = answer(ident, challenge).to_cbor()
        clock = relay.service.clock
        relay.service.clock = lambda: clock() + 3600
        try:
            resp = await _post(client, relay, com.space, fresh, header_for(late))
        finally:
            relay.service.clock = clock
        assert (resp.status_code, _reason(resp)) == (401, "challenge_expired")

        used = await auth_header(client, relay, ident)
        resp = await client.get(f"{relay.url}/v1/spaces", headers={"Authorization": used})
        assert resp.status_code == 200
        resp = await _post(client, relay, com.space, fresh, used)
        assert (resp.status_code, _reason(resp)) == (401, "challenge_reused")

        challenge = await fetch_challenge(client, relay)
        forger = Identity.generate()
        forged = ChallengeResponse(challenge, ident.did,
                                   forger.sign(challenge.signing_bytes())).to_cbor()
        resp = await _post(client, relay, com.space, fresh, header_for(forged))
        assert (resp.status_code, _reason(resp)) == (401, "bad_signature")

        resp = await _post(client, relay, com.space, fresh, "Mycelium !!!not-base64")
        assert resp.status_code == 401
        assert relay.store.usage() == before
        assert relay.service.metrics.refused["challenge_reused"] == 1

        resp = await _post(client, relay, com.space, fresh,
                           await auth_header(client, relay, ident))
        assert resp.status_code == 200  # the same upload, authenticated, is stored
        assert cbor.decode(resp.content)["accepted"] == 5


async def test_non_member_reads_and_writes_are_403(tmp_path: Path) -> None:
    com = community(tmp_path)
    com.a.put_doc(com.space, "products", "p", {"title": "tomatoes"})
    async with running_relay(tmp_path) as relay, httpx.AsyncClient() as client:
        await _register(client, relay, com)
        before = relay.store.usage()
        outsider = com.c.identity
        resp = await client.get(f"{relay.url}/v1/spaces/{com.space.hex()}/deltas",
                                headers={"Authorization": await auth_header(client, relay,
                                                                            outsider)})
        assert (resp.status_code, _reason(resp)) == (403, "not_member")
        resp = await _post(client, relay, com.space, envelopes_of(com.a, com.space),
                           await auth_header(client, relay, outsider))
        assert (resp.status_code, _reason(resp)) == (403, "not_member")
        # an outsider cannot register somebody else's space either
        body = {"genesis": com.a.genesis(com.space), "envelopes": []}
        resp = await client.post(f"{relay.url}/v1/spaces", content=cbor_body(body),
                                 headers={"Authorization": await auth_header(client, relay,
                                                                             outsider)})
        assert (resp.status_code, _reason(resp)) == (403, "not_member")
        # and it lists nothing
        resp = await client.get(f"{relay.url}/v1/spaces",
                                headers={"Authorization": await auth_header(client, relay,
                                                                            outsider)})
        assert cbor.decode(resp.content)["spaces"] == []
        assert relay.store.usage() == before
        # the member does read
        resp = await client.get(f"{relay.url}/v1/spaces/{com.space.hex()}/deltas",
                                headers={"Authorization": await auth_header(
                                    client, relay, com.b.identity)})
        assert resp.status_code == 200


async def test_registration_by_a_non_member_keeps_nothing(tmp_path: Path) -> None:
    com = community(tmp_path)
    async with running_relay(tmp_path) as relay, httpx.AsyncClient() as client:
        body = {"genesis": com.a.genesis(com.space),
                "envelopes": registration_envelopes(com.a, com.space)}
        resp = await client.post(f"{relay.url}/v1/spaces", content=cbor_body(body),
                                 headers={"Authorization": await auth_header(
                                     client, relay, com.c.identity)})
        assert (resp.status_code, _reason(resp)) == (403, "not_member")
        assert relay.store.usage() == {"spaces": 0, "envelopes": 0, "bytes": 0, "pending": 0}
        assert not relay.store.hosts(com.space)


async def test_oversized_body_is_413(tmp_path: Path) -> None:
    com = community(tmp_path)
    limits = RelayLimits(max_body_bytes=2048)
    async with running_relay(tmp_path, limits=limits) as relay, httpx.AsyncClient() as client:
        await _register(client, relay, com)
        before = relay.store.usage()
        big = [b"\x00" * 4096]
        resp = await _post(client, relay, com.space, big,
                           await auth_header(client, relay, com.a.identity))
        assert (resp.status_code, _reason(resp)) == (413, "too_large")
        assert relay.store.usage() == before


async def test_over_quota_is_429_and_nothing_beyond_it_is_stored(tmp_path: Path) -> None:
    com = community(tmp_path)
    for i in range(30):
        com.a.put_doc(com.space, "products", f"p{i}",
                      {"title": "x" * 180, "description": "y" * 400})
    quota = 12_000
    store_limits = StoreLimits(space_bytes=quota)
    async with running_relay(tmp_path, store_limits=store_limits) as relay, \
            httpx.AsyncClient() as client:
        await _register(client, relay, com)
        resp = await _post(client, relay, com.space, envelopes_of(com.a, com.space),
                           await auth_header(client, relay, com.a.identity))
        assert (resp.status_code, _reason(resp)) == (429, "over_quota")
        assert int(resp.headers["Retry-After"]) >= 1
        assert 0 < resp.json()["accepted"] < 30
        assert relay.store.space_bytes(com.space) <= quota
        on_disk = sum(len(r) for r in relay.store.envelopes_since(
            com.space, {}, limit=10_000, max_bytes=1 << 30))
        assert on_disk <= quota


async def test_handshake_flood_is_429_with_retry_after(tmp_path: Path) -> None:
    limits = RelayLimits(handshakes_per_ip=0.5, handshake_burst_ip=3)
    async with running_relay(tmp_path, limits=limits) as relay, httpx.AsyncClient() as client:
        codes = [(await client.post(f"{relay.url}/v1/auth/challenge")).status_code
                 for _ in range(5)]
        assert codes[:3] == [200, 200, 200]
        resp = await client.post(f"{relay.url}/v1/auth/challenge")
        assert (resp.status_code, _reason(resp)) == (429, "rate_limited")
        assert int(resp.headers["Retry-After"]) >= 1


async def _flood(client: httpx.AsyncClient, relay: Relay, forwarded: str | None) -> list[int]:
    headers = {"X-Forwarded-For": forwarded} if forwarded is not None else {}
    return [(await client.post(f"{relay.url}/v1/auth/challenge", headers=headers)).status_code
            for _ in range(4)]


async def test_behind_a_trusted_proxy_limits_key_on_the_forwarded_client(
        tmp_path: Path) -> None:
    """Behind a reverse proxy every client comes from the proxy: with --trusted-proxy the
    per-IP limits key on the address it forwards, so one client's flood is not everyone's
    429; the leftmost entries (which the client wrote) are not believed."""
    limits = RelayLimits(handshakes_per_ip=0.01, handshake_burst_ip=3)
    async with running_relay(tmp_path, limits=limits,
                             trusted_proxies=["127.0.0.1"]) as relay, \
            httpx.AsyncClient() as client:
        assert await _flood(client, relay, "203.0.113.7") == [200, 200, 200, 429]
        assert await _flood(client, relay, "198.51.100.9") == [200, 200, 200, 429]
        # A client cannot get a fresh bucket by prepending addresses of its own.
        assert await _flood(client, relay, "192.0.2.1, 203.0.113.7") == [429] * 4
        assert await _flood(client, relay, "not-an-ip") == [200, 200, 200, 429]  # proxy's


async def test_forwarded_addresses_from_an_untrusted_peer_are_ignored(tmp_path: Path) -> None:
    limits = RelayLimits(handshakes_per_ip=0.01, handshake_burst_ip=3)
    async with running_relay(tmp_path, limits=limits) as relay, httpx.AsyncClient() as client:
        assert await _flood(client, relay, "203.0.113.7") == [200, 200, 200, 429]
        assert await _flood(client, relay, "198.51.100.9") == [429] * 4


async def test_rest_fallback_pages_by_version_vector(tmp_path: Path) -> None:
    com = community(tmp_path)
    for i in range(40):
        com.a.put_doc(com.space, "products", f"p{i}", {"title": f"crate {i}"})
    limits = RelayLimits(page_envelopes=16)
    async with running_relay(tmp_path, limits=limits) as relay, httpx.AsyncClient() as client:
        await _register(client, relay, com)
        resp = await _post(client, relay, com.space, envelopes_of(com.a, com.space),
                           await auth_header(client, relay, com.a.identity))
        assert resp.status_code == 200
        got: list[bytes] = []
        vv: dict[bytes, int] = {}
        for _ in range(20):
            param = base64.urlsafe_b64encode(cbor.encode(vv)).decode().rstrip("=")
            resp = await client.get(
                f"{relay.url}/v1/spaces/{com.space.hex()}/deltas", params={"vv": param},
                headers={"Authorization": await auth_header(client, relay, com.b.identity)})
            page = cbor.decode(resp.content)
            assert len(page["envelopes"]) <= 16
            got += page["envelopes"]
            result = com.b.ingest(com.space, page["envelopes"])
            assert not result.rejected
            vv = com.b.version_vector(com.space)
            if not page["more"]:
                break
        assert vv == com.a.version_vector(com.space) == page["vector"]
        assert com.b.get_doc(com.space, "products", "p39")["title"] == "crate 39"

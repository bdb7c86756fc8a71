"""The relay's scheduled IPFS archives (relay/archiver.py) against the real js-ipfs test
node: hosted spaces archived, a member restoring from the advertised CID, a new root after
new writes with the old one unpinned, nothing when nothing changed, the latest CID
surviving a restart, and a dead IPFS API logged once per round while the relay serves."""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from mycelium.archive import service as archives
from mycelium.archive.errors import NotARecipient
from mycelium.archive.ipfs import IpfsClient
from mycelium.identity.identity import Identity
from mycelium.relay.archiver import (
    Archiver,
    ArchiveRecord,
    SpaceMark,
    due,
    latest_archive,
    run_archiver,
)
from mycelium.relay.run import RelayConfig, serve_relay
from mycelium.relay.store import RelayStore
from mycelium.spaces import service
from mycelium.store.soil import Soil
from tests.archive.conftest import ipfs_api, ipfs_node  # noqa: F401 (the session's js-ipfs node)
from tests.archive.helpers import ADMIN, MEMBER, STRANGER, community, listings
from tests.relay.conftest import Relay, auth_header, envelopes_of

S1, S2, S3 = b"\x01" * 32, b"\x02" * 32, b"\x03" * 32


def _record(envelopes: int, epoch: int) -> ArchiveRecord:
    return ArchiveRecord(cid="bafy-old", created_ms=1, envelopes=envelopes, epoch=epoch)


def test_due_new_envelopes_or_new_epoch_only() -> None:
    current = {S1: SpaceMark(5, 7), S2: SpaceMark(9, 7), S3: SpaceMark(4, 8)}
    archived = {S1: _record(5, 7), S2: _record(8, 7), S3: _record(4, 7)}
    assert due(current, archived) == [S2, S3]  # S2: new envelopes, S3: new key epoch
    assert due(current, {}) == [S1, S2, S3]  # never archived
    assert due({S1: SpaceMark(0, 0)}, {}) == []  # nothing to archive yet
    assert due({S1: SpaceMark(5, 7)}, {S1: _record(5, 7)}) == []  # unchanged: none


def _pinned(api: str) -> str:
    resp = httpx.post(f"{api}/api/v0/pin/ls", params={"type": "recursive", "cid-base": "base32"},
                      timeout=10)
    assert resp.status_code == 200, resp.text
    return json.dumps(resp.json())


def _hosting(tmp_path: Path) -> tuple[RelayStore, Soil, bytes]:
    """A relay store hosting ADMIN's community space (MEMBER invited) with 5 listings."""
    admin, space = community(tmp_path / "admin.db", docs=5)
    store = RelayStore.open(tmp_path / "relay" / "relay.db")
    store.register(admin.genesis(space), envelopes_of(admin, space), ADMIN.public_key)
    return store, admin, space


async def test_rounds_archive_restore_supersede_and_persist(tmp_path: Path,
                                                            ipfs_api: str) -> None:  # noqa: F811
    relay_id = Identity.generate()
    store, admin, space = _hosting(tmp_path)
    # the owner's personal space is hosted too: sealed to its owner alone
    owner = Soil.open(tmp_path / "owner.db", STRANGER)
    personal = service.ensure_personal_space(owner)
    owner.put_doc(personal, "diary", "d1", {"title": "t", "body": "dear diary"})
    store.register(owner.genesis(personal), envelopes_of(owner, personal), STRANGER.public_key)

    archiver = Archiver(store, relay_id, ipfs_api, wall_ms=lambda: 1_000)
    first = await archiver.round()
    assert set(first.archived) == {space, personal} and first.ipfs_down is None
    cid1 = first.archived[space]
    assert archiver.ledger.get(space) == ArchiveRecord(
        cid1, 1_000, sum(store.version_vector(space).values()),
        store.space_state(space).current_epoch)
    assert cid1 in _pinned(ipfs_api)

    # a member restores the community space from the advertised CID, trusting the relay
    fresh = Soil.open(tmp_path / "member.db", MEMBER)
    with IpfsClient(ipfs_api, timeout=10) as ipfs:
        summary = archives.pull(fresh, ipfs, cid1, trusted_signers={relay_id.public_key})
        assert summary["space_id"] == space.hex()
        assert listings(fresh, space) == listings(admin, space)
        # the owner's new device restores the personal space; the member cannot open it
        device = Soil.open(tmp_path / "device.db", STRANGER)
        archives.pull(device, ipfs, first.archived[personal],
                      trusted_signers={relay_id.public_key})
        assert (device.get_doc(personal, "diary", "d1") or {}).get("body") == "dear diary"
        with pytest.raises(NotARecipient):
            archives.pull(Soil.open(tmp_path / "m2.db", MEMBER), ipfs,
                          first.archived[personal], trusted_signers={relay_id.public_key})

    # nothing changed: nothing happens
    idle = await archiver.round()
    assert idle.archived == {} and idle.unpinned == []

    # new writes: a new root pinned, the superseded one unpinned
    before = admin.version_vector(space)
    admin.put_doc(space, "products", "late", {"title": "late tomatoes"})
    result = store.ingest(space, admin.envelopes_since(space, before, limit=100,
                                                       max_bytes=1 << 20))
    assert result.accepted
    second = await archiver.round()
    cid2 = second.archived[space]
    assert set(second.archived) == {space} and cid2 != cid1
    assert second.unpinned == [cid1]
    pins = _pinned(ipfs_api)
    assert cid2 in pins and cid1 not in pins

    # a new key epoch (rotation) is a new archive too
    epoch_before = archiver.ledger.get(space)
    assert epoch_before is not None
    service.rotate(admin, space)
    store.ingest(space, envelopes_of(admin, space))  # the rotation's control op arrives
    assert store.space_state(space).current_epoch != epoch_before.epoch
    third = await archiver.round()
    assert set(third.archived) == {space}

    # the latest CID survives a restart of the relay
    latest = third.archived[space]
    store.close()
    reopened = RelayStore.open(tmp_path / "relay" / "relay.db")
    try:
        again = Archiver(reopened, relay_id, ipfs_api)
        assert again.ledger.get(space) is not None
        assert again.ledger.get(space).cid == latest  # type: ignore[union-attr]
        assert (await again.round()).archived == {}
    finally:
        reopened.close()


async def _serving(tmp_path: Path, store: RelayStore, api: str, every_s: float,
                   nursery: trio.Nursery) -> Relay:
    config = RelayConfig(listen="127.0.0.1:0", ipfs_api=api, archive_every_s=every_s)
    url, svc = await nursery.start(serve_relay, Identity.generate(), store, config)
    return Relay(url, svc, store, tmp_path / "relay" / "relay.db")


async def test_relay_advertises_latest_archive_to_members_only(tmp_path: Path,
                                                               ipfs_api: str) -> None:  # noqa: F811
    store, _admin, space = _hosting(tmp_path)
    try:
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            relay = await _serving(tmp_path, store, ipfs_api, 3600, nursery)
            path = f"{relay.url}/v1/spaces/{space.hex()}/archive"
            body: dict[str, object] = {}
            with trio.fail_after(30):  # the first round runs at start
                while True:
                    resp = await client.get(path, headers={
                        "Authorization": await auth_header(client, relay, MEMBER)})
                    if resp.status_code == 200:
                        body = resp.json()
                        break
                    assert resp.json()["reason"] == "no_archive"
                    await trio.sleep(0.05)
            assert body["envelopes"] == sum(store.version_vector(space).values())
            assert str(body["cid"]).startswith("bafy") and isinstance(body["created_ms"], int)
            stranger = await client.get(path, headers={
                "Authorization": await auth_header(client, relay, STRANGER)})
            assert stranger.status_code == 403
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def test_dead_ipfs_api_is_logged_once_per_round_and_relay_serves(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store, admin, space = _hosting(tmp_path)
    other = service.create_space(admin, "second-space")
    store.register(admin.genesis(other), envelopes_of(admin, other), ADMIN.public_key)
    api = f"http://127.0.0.1:{_dead_port()}"
    caplog.set_level(logging.WARNING, logger="mycelium.relay.archiver")
    try:
        async with trio.open_nursery() as nursery, httpx.AsyncClient(timeout=10) as client:
            relay = await _serving(tmp_path, store, api, 3600, nursery)
            report = await Archiver(store, Identity.generate(), api).round()
            assert report.ipfs_down is not None and api in report.ipfs_down
            assert report.archived == {}
            with trio.fail_after(10):  # the relay's own first round, at start
                while len(_archiver_lines(caplog)) < 2:
                    await trio.sleep(0.02)
            lines = _archiver_lines(caplog)
            assert len(lines) == 2, lines  # one per round, not one per space
            assert all(api in line for line in lines)
            info = await client.get(f"{relay.url}/v1/relay")
            assert info.status_code == 200
            resp = await client.get(f"{relay.url}/v1/spaces/{space.hex()}/archive",
                                    headers={"Authorization": await auth_header(
                                        client, relay, ADMIN)})
            assert resp.status_code == 404 and resp.json()["reason"] == "no_archive"
            nursery.cancel_scope.cancel()
    finally:
        store.close()


def _dead_port() -> int:
    """A loopback port nobody listens on (bound by the OS, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _archiver_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mycelium.relay.archiver"]


def _member_home_and_hosted_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, title: str
                                  ) -> tuple[Path, Soil, bytes, RelayStore]:
    """A member's node home (made by ``mycelium init``), ADMIN's space with that member
    invited and one listing ``title``, hosted by a relay store."""
    from tests.archive.cli import PASSPHRASE, run

    monkeypatch.setenv("MYCELIUM_PASSPHRASE", PASSPHRASE)
    home = tmp_path / "member-home"
    member_did = run("init", "--home", str(home), "--json")["did"]
    admin = Soil.open(tmp_path / "admin.db", ADMIN)
    space = service.create_space(admin, "relay-archived")
    service.invite(admin, space, member_did)
    admin.put_doc(space, "products", "p1", {"title": title, "quantity": 1, "unit": "kg"})
    store = RelayStore.open(tmp_path / "relay" / "relay.db")
    store.register(admin.genesis(space), envelopes_of(admin, space), ADMIN.public_key)
    return home, admin, space, store


async def test_cli_pull_of_a_relay_archive_needs_trust_relay(
        tmp_path: Path, ipfs_api: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """``mycelium archive pull CID --trust-relay DID`` restores; without it: refused."""
    from tests.archive.cli import run

    home, admin, space, store = _member_home_and_hosted_space(tmp_path, monkeypatch, "beans")
    relay_id = Identity.generate()
    try:
        cid = (await Archiver(store, relay_id, ipfs_api).round()).archived[space]
    finally:
        store.close()
        admin.close()
    refused = run("archive", "pull", cid, "--ipfs-api", ipfs_api, "--home", str(home), ok=False)
    assert "neither a member" in refused
    pulled = run("archive", "pull", cid, "--ipfs-api", ipfs_api, "--trust-relay", relay_id.did,
                 "--home", str(home), "--json")
    assert pulled["space_id"] == space.hex() and pulled["accepted"] == pulled["envelopes"]
    doc = run("doc", "get", space.hex(), "products", "p1", "--home", str(home), "--json")
    assert "beans" in json.dumps(doc), doc


async def test_failed_unpin_is_queued_and_retried_next_round(tmp_path: Path,
                                                            ipfs_api: str) -> None:  # noqa: F811
    store, _admin, space = _hosting(tmp_path)
    relay_id = Identity.generate()
    try:
        live = Archiver(store, relay_id, ipfs_api)
        cid = (await live.round()).archived[space]
        live.ledger.queue_unpin(cid)  # as if pin/rm had failed after a newer archive
        dead = Archiver(store, relay_id, f"http://127.0.0.1:{_dead_port()}")
        report = await dead.round()
        assert report.ipfs_down is not None and dead.ledger.unpins() == [cid]
        retried = await live.round()  # nothing due, but the queued unpin is done
        assert retried.unpinned == [cid] and retried.archived == {}
        assert live.ledger.unpins() == [] and cid not in _pinned(ipfs_api)
        assert (await live.round()).unpinned == []
    finally:
        store.close()


def test_bad_ipfs_api_is_a_one_line_user_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.archive.cli import PASSPHRASE, run

    monkeypatch.setenv("MYCELIUM_PASSPHRASE", PASSPHRASE)
    line = run("relay", "--home", str(tmp_path), "--listen", "127.0.0.1:0",
               "--ipfs-api", "nonsense:5001", ok=False)
    assert "nonsense:5001" in line and "multiaddr" in line
    assert not (tmp_path / "relay" / "relay.db").exists()  # refused before anything started


async def test_rounds_repeat_every_period(tmp_path: Path,
                                          autojump_clock: trio.testing.MockClock) -> None:
    """A round at start, then one per period (virtual time: nothing hosted, so no I/O)."""
    store = RelayStore.open(tmp_path / "relay.db")
    try:
        archiver = Archiver(store, Identity.generate(), "http://127.0.0.1:9")
        async with trio.open_nursery() as nursery:
            await nursery.start(run_archiver, archiver, 600.0)
            await trio.sleep(1700)
            assert archiver.rounds == 3  # t = 0, 600, 1200
            nursery.cancel_scope.cancel()
    finally:
        store.close()


async def test_cli_pull_from_relay_restores_its_latest_archive(
        tmp_path: Path, ipfs_api: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """``mycelium archive pull SPACE --from-relay URL#DID``: the member asks the relay
    (authenticated both ways over REST) for the latest archive it made, and restores it,
    trusting it by the DID pinned in the URL; an unpinned URL or another DID is refused."""
    from tests.archive.cli import run

    home, admin, space, store = _member_home_and_hosted_space(tmp_path, monkeypatch, "quince")

    def pull(*extra: str, ok: bool = True) -> Any:
        return run("archive", "pull", space.hex(), "--ipfs-api", ipfs_api,
                   "--home", str(home), *extra, ok=ok)

    try:
        async with trio.open_nursery() as nursery:
            relay = await _serving(tmp_path, store, ipfs_api, 3600, nursery)
            with trio.fail_after(30):  # the first round runs at start
                while latest_archive(store, space) is None:
                    await trio.sleep(0.05)
            cid = latest_archive(store, space).cid  # type: ignore[union-attr]
            # The CLI blocks (httpx, IPFS): in a thread, so this loop keeps serving.
            unpinned = await trio.to_thread.run_sync(
                lambda: pull("--from-relay", relay.url, ok=False))
            assert "#did:key" in unpinned
            impostor = await trio.to_thread.run_sync(
                lambda: pull("--from-relay", f"{relay.url}#{Identity.generate().did}", ok=False))
            assert "relay_identity_changed" in impostor or "pinned" in impostor, impostor
            pulled = await trio.to_thread.run_sync(
                lambda: pull("--from-relay", f"{relay.url}#{relay.service.did}", "--json"))
            nursery.cancel_scope.cancel()
    finally:
        store.close()
        admin.close()
    assert pulled["cid"] == cid and pulled["from_relay"]["cid"] == cid
    assert pulled["space_id"] == space.hex() and pulled["accepted"] == pulled["envelopes"]
    doc = run("doc", "get", space.hex(), "products", "p1", "--home", str(home), "--json")
    assert "quince" in json.dumps(doc), doc

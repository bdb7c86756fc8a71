"""Archives on a real IPFS node (js-ipfs from tools/ipfs, loopback, offline) via the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from mycelium.archive import car, dagcbor
from mycelium.archive import cid as cids
from mycelium.archive import format as fmt
from mycelium.archive.ipfs import IpfsClient, api_url
from mycelium.identity.didkey import public_key_from_did
from mycelium.identity.keystore import load_keystore
from mycelium.store.soil import Soil

from .cli import PASSPHRASE, run
from .helpers import MARKER

NAME = "riverside-market"


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYCELIUM_INSECURE_FAST_KDF", "1")
    monkeypatch.setenv("MYCELIUM_PASSPHRASE", PASSPHRASE)
    monkeypatch.delenv("MYCELIUM_HOME", raising=False)
    monkeypatch.delenv("MYCELIUM_IPFS_API", raising=False)


def _writer(tmp_path: Path, docs: int = 5) -> tuple[Path, Path, str]:
    """A writer home with a community space shared with a member home (who never joined)."""
    writer, member = tmp_path / "writer", tmp_path / "member"
    run("init", "--home", str(writer), "--json")
    member_did = run("init", "--home", str(member), "--json")["did"]
    run("space", "create", NAME, "--home", str(writer), "--json")
    run("space", "invite", NAME, member_did, "--home", str(writer), "--json")
    for i in range(docs):
        title = f"{MARKER} squash" if i == 0 else f"squash {i}"
        run("doc", "put", NAME, "products", f"p{i}", "--home", str(writer),
            "--data", json.dumps({"title": title, "quantity": i, "unit": "kg"}))
    return writer, member, member_did


def _docs(home: Path) -> list[dict[str, object]]:
    return list(run("doc", "list", NAME, "products", "--home", str(home), "--json")["docs"])


def _repo_blocks(repo: Path) -> list[bytes]:
    return [p.read_bytes() for p in (repo / "blocks").rglob("*.data")]


def test_member_restores_the_space_from_one_cid(tmp_path: Path, ipfs_node: object,
                                                ipfs_api: str) -> None:
    writer, member, _ = _writer(tmp_path)
    pushed = run("archive", "push", NAME, "--ipfs-api", ipfs_api, "--home", str(writer), "--json")
    assert pushed["cid"].startswith("bafyrei") and pushed["ipfs_api"] == ipfs_api
    with IpfsClient(ipfs_api, timeout=10) as ipfs:  # pinned, recursively
        pins = httpx.post(f"{ipfs.url}/api/v0/pin/ls",
                          params={"type": "recursive", "cid-base": "base32"}).json()
    assert pushed["cid"] in json.dumps(pins)

    pulled = run("archive", "pull", pushed["cid"], "--ipfs-api", ipfs_api,
                 "--home", str(member), "--json")
    assert pulled["name"] == NAME and pulled["accepted"] == pulled["envelopes"] > 5
    assert _docs(member) == _docs(writer) and len(_docs(member)) == 5
    again = run("archive", "pull", pushed["cid"], "--ipfs-api", ipfs_api,
                "--home", str(member), "--json")
    assert again["accepted"] == 0 and again["duplicates"] == pulled["envelopes"]

    # The marker written to the space is in no block the IPFS node stores (a control block
    # put on purpose shows the scan finds plaintext when it is there).
    control = b"control-" + MARKER.encode()[::-1]
    httpx.post(f"{ipfs_api}/api/v0/block/put", files={"file": ("b", control)}, timeout=10)
    blocks = _repo_blocks(ipfs_node.repo)  # type: ignore[attr-defined]
    assert any(control in b for b in blocks)
    assert not any(MARKER.encode() in b or NAME.encode() in b for b in blocks)


def test_non_member_with_the_cid_learns_neither_name_nor_members(
        tmp_path: Path, ipfs_api: str) -> None:
    writer, _member, member_did = _writer(tmp_path, docs=1)
    stranger = tmp_path / "stranger"
    run("init", "--home", str(stranger), "--json")
    cid = run("archive", "push", NAME, "--ipfs-api", ipfs_api, "--home", str(writer),
              "--json")["cid"]
    err = run("archive", "pull", cid, "--ipfs-api", ipfs_api, "--home", str(stranger), ok=False)
    assert "not a reader" in err
    assert NAME not in run("space", "list", "--home", str(stranger))
    # Everything the stranger can fetch with the CID:
    with IpfsClient(ipfs_api, timeout=10) as ipfs:
        _, blocks = car.read_car(ipfs.dag_export(cid, max_bytes=10**8), max_blocks=10)
    everything = b"".join(b for _, b in blocks)
    writer_did = run("id", "--home", str(writer), "--json")["did"]
    for secret in (NAME.encode(), writer_did.encode(), member_did.encode(),
                   public_key_from_did(writer_did), public_key_from_did(member_did)):
        assert secret not in everything
    manifest = dagcbor.decode(blocks[0][1])
    assert sorted(manifest) == ["chunks", "keys", "type", "v"]


def test_tampered_block_is_refused_by_name_and_nothing_is_ingested(
        tmp_path: Path, ipfs_api: str) -> None:
    writer, member, _ = _writer(tmp_path, docs=3)
    identity = load_keystore(writer / "keystore.json", PASSPHRASE)
    with Soil.open(writer / "soil.db", identity) as soil:
        space = soil.resolve_space(NAME)
        archive = fmt.build(soil.genesis(space),
                            soil.envelopes_since(space, {}, limit=10**6, max_bytes=10**9),
                            signer=identity, members=sorted(soil.space_state(space).members),
                            created_ms=2)
    chunk_cid, chunk = archive.blocks[1]
    forged = chunk[:100] + bytes([chunk[100] ^ 0xFF]) + chunk[101:]
    tampered = car.write_car(archive.root, [archive.blocks[0], (chunk_cid, forged)])
    with IpfsClient(ipfs_api, timeout=10) as ipfs:
        assert ipfs.dag_import(tampered) == archive.cid  # js-ipfs takes the bad block
        served = httpx.post(f"{ipfs_api}/api/v0/block/get",
                            params={"arg": cids.to_text(chunk_cid), "timeout": "5s"})
        assert served.content == forged

    err = run("archive", "pull", archive.cid, "--ipfs-api", ipfs_api, "--home", str(member),
              ok=False)
    assert f"block {cids.to_text(chunk_cid)} does not match its CID" in err
    assert NAME not in run("space", "list", "--home", str(member))
    spaces = run("space", "list", "--home", str(member), "--json")["spaces"]
    assert [s["kind"] for s in spaces] == ["personal"]


def test_dead_ipfs_api_is_one_line_naming_the_address(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    writer, _member, _ = _writer(tmp_path, docs=1)
    some_cid = "bafyreicikdtyfilwrask6smikgjjwjllnttnets5ddofotqpdhy4kkzgei"
    for args in (("push", NAME), ("pull", some_cid)):
        err = run("archive", *args, "--ipfs-api", f"/ip4/127.0.0.1/tcp/{port}",
                  "--home", str(writer), ok=False)
        assert f"no IPFS API at http://127.0.0.1:{port}" in err
    assert "neither a URL nor" in run("archive", "push", NAME, "--ipfs-api", "localhost:5001",
                                      "--home", str(writer), ok=False)


def test_api_address_forms() -> None:
    assert api_url("/ip4/127.0.0.1/tcp/5001") == "http://127.0.0.1:5001"
    assert api_url("/ip4/127.0.0.1/tcp/5001/http") == "http://127.0.0.1:5001"
    assert api_url("/dns4/ipfs.local/tcp/443/https") == "https://ipfs.local:443"
    assert api_url("/ip6/::1/tcp/5001") == "http://[::1]:5001"
    assert api_url("http://127.0.0.1:5001/") == "http://127.0.0.1:5001"


def test_missing_cid_times_out_with_one_line_and_unpin_works(tmp_path: Path,
                                                             ipfs_api: str) -> None:
    from mycelium.archive.errors import ArchiveError
    from mycelium.archive.service import fetch

    absent = cids.to_text(cids.cid_of(b"\xa1ano block with these bytes was ever imported"))
    with IpfsClient(ipfs_api, timeout=2) as ipfs:
        # js-ipfs ends the export after its timeout (HTTP 200, no block): a missing block
        with pytest.raises(ArchiveError, match=absent) as caught:
            fetch(ipfs, absent)
        assert "\n" not in str(caught.value)
        block = dagcbor.encode({"unpin": "me"})
        root = ipfs.dag_import(car.write_car(cids.cid_of(block), [(cids.cid_of(block), block)]))
        ipfs.pin_rm(root)
        pins = httpx.post(f"{ipfs.url}/api/v0/pin/ls",
                          params={"type": "recursive", "cid-base": "base32"}).json()
        assert root not in json.dumps(pins)

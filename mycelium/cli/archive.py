"""``mycelium archive push SPACE`` / ``mycelium archive pull CID`` (docs/archive.md).

Both are operations of :mod:`mycelium.node.ops` (``archive_push`` / ``archive_pull``), run
by the node when one is running (it then syncs the restored space's tail with its peers)
or on the store opened here (``--peer`` then syncs the tail once: ``archive/tail.py``).
A pull without a running node opens the store *without* creating the personal space
first: on a device rebuilt by guardian recovery that is what lets the personal archive
restore the personal space's own history (creating it first would start a second,
conflicting history of the same identity).
"""

from __future__ import annotations

from typing import Any

import typer

from mycelium.cli.common import HomeOption, JsonOption, emit, node_paths, passphrase, user_errors

archive_app = typer.Typer(help="IPFS archives of spaces: push (pin) and pull (restore).",
                          no_args_is_help=True)

IpfsApiOption = typer.Option(
    None, "--ipfs-api", envvar="MYCELIUM_IPFS_API",
    help="IPFS RPC API: URL or multiaddr (default http://127.0.0.1:5001, Kubo's).")


def register(app: typer.Typer) -> None:
    app.add_typer(archive_app, name="archive")


@archive_app.command("push")
@user_errors
def push(
    space: str = typer.Argument(..., help="Space id or unique name (`personal` for yours)."),
    ipfs_api: str | None = IpfsApiOption,
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Write the space as an encrypted archive to IPFS (pinned); prints its CID."""
    from mycelium.node.client import call_op

    data = call_op(node_paths(home), "archive_push", passphrase, space=space, ipfs_api=ipfs_api)
    emit(data, as_json, f"{data['cid']}\n{data['envelopes']} deltas, {data['blocks']} blocks, "
                        f"{data['stored_bytes']} bytes pinned at {data['ipfs_api']}")


@archive_app.command("pull")
@user_errors
def pull(
    cid: str = typer.Argument(..., help="Root CID of an archive (bafyrei…); with "
                              "--from-relay, the space (id) whose latest archive to restore."),
    ipfs_api: str | None = IpfsApiOption,
    from_relay: str | None = typer.Option(
        None, "--from-relay", help="Ask this relay (URL#DID, the relay's did:key pinned) for the "
        "latest archive it made of the space, and trust that archive by the relay's DID."),
    peers: list[str] = typer.Option(  # noqa: B008 (typer's idiom)
        [], "--peer", help="Then sync the tail once from this peer (/ip4/…/tcp/…/p2p/…); "
                           "repeatable. A running node syncs by itself."),
    trust_relay: list[str] = typer.Option(  # noqa: B008 (typer's idiom)
        [], "--trust-relay", help="DID of a relay whose archives to accept (it signs the "
                                  "archives it makes of the spaces it hosts); repeatable."),
    home: str | None = HomeOption, as_json: bool = JsonOption,
) -> None:
    """Restore a space from an archive: verify every block, decrypt, check, ingest."""
    from mycelium.node.client import running_node

    paths = node_paths(home)
    remote = running_node(paths)
    if remote is not None:
        data = remote.call("archive_pull", cid=cid, ipfs_api=ipfs_api,
                           trust_relays=list(trust_relay), from_relay=from_relay)
    else:
        data = _pull_local(paths, cid, ipfs_api, peers, list(trust_relay), from_relay)
    human = (f"restored {data['kind']} space {data['name']} {data['space_id']}: "
             f"{data['accepted']} new of {data['envelopes']} deltas")
    if data.get("from_relay"):
        human = f"latest archive at {data['from_relay']['url']}: {data['cid']}\n" + human
    for tail in data.get("tail", []):
        human += (f"\ntail from {tail['peer']}: {tail['received']} new"
                  + (f" ({tail['error']})" if tail["error"] else ""))
    emit(data, as_json, human)


def _pull_local(paths: Any, cid: str, ipfs_api: str | None, peers: list[str],
                trust_relays: list[str], from_relay: str | None) -> dict[str, Any]:
    import trio

    from mycelium.archive.tail import sync_tail
    from mycelium.identity.keystore import load_keystore
    from mycelium.node.ops import LocalOps
    from mycelium.spaces.service import ensure_personal_space
    from mycelium.store.soil import Soil

    identity = load_keystore(paths.keystore, passphrase())
    paths.ensure()
    with Soil.open(paths.soil, identity, device_chains=True) as soil:  # delta.md §10
        data = LocalOps(soil).call("archive_pull", cid=cid, ipfs_api=ipfs_api,
                                   trust_relays=trust_relays, from_relay=from_relay)
        ensure_personal_space(soil)
        if peers:
            data["tail"] = trio.run(sync_tail, soil, bytes.fromhex(data["space_id"]), peers)
    return data

"""``mycelium run`` and ``mycelium status``."""

from __future__ import annotations

from typing import Any

import typer

from mycelium.cli.common import (
    HomeOption,
    JsonOption,
    emit,
    node_paths,
    passphrase,
    user_errors,
)


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("run")(run)


@user_errors
def status(home: str | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Peers, spaces, version vectors and sync state (from the running node if any)."""
    from mycelium.node.client import open_ops

    ops = open_ops(node_paths(home), passphrase)
    data = ops.call("status")
    emit(data, as_json, _render_status(data))


@user_errors
def run(
    listen: list[str] = typer.Option(  # noqa: B008
        [], "--listen", help="Multiaddr to listen on (repeatable; default /ip4/0.0.0.0/tcp/0)."
    ),
    peer: list[str] = typer.Option(  # noqa: B008
        [], "--peer", help="Static peer multiaddr with /p2p/<peer id> (repeatable)."
    ),
    no_mdns: bool = typer.Option(False, "--no-mdns", help="Do not use mDNS discovery."),
    relay: list[str] = typer.Option(  # noqa: B008
        [], "--relay", help="Relay URL https://host, with #DID appended to pin it (repeatable)."
    ),
    api: str = typer.Option("127.0.0.1:0", "--api", help="HOST:PORT for the local control API."),
    web: str = typer.Option(
        "127.0.0.1:8737", "--web",
        help="HOST:PORT for the web app (0.0.0.0:PORT for the LAN; devices pair first); off: none.",
    ),
    name: str | None = typer.Option(None, "--name", help="Name for a new identity (first run)."),
    home: str | None = HomeOption,
) -> None:
    """Run the node: sync with neighbours until Ctrl-C (creates an identity on first run)."""
    from mycelium.node.daemon import NodeConfig, run_node
    from mycelium.relay.client import RelayUrl

    for url in relay:
        RelayUrl.parse(url)  # a bad or insecure URL is a user error now, not a retry loop
    web_bind = check_web_bind(web)
    config = NodeConfig(
        listen=listen or ["/ip4/0.0.0.0/tcp/0"], peers=list(peer), mdns=not no_mdns,
        relays=list(relay), api=api, name=name,
        web=web_bind,
    )
    run_node(node_paths(home), config, passphrase)


def check_web_bind(web: str) -> str | None:
    """``--web``: None for off, else HOST:PORT (a malformed value is a one-line error)."""
    from mycelium.cli.common import fail
    from mycelium.web.server import OFF, split_bind

    if web.lower() in OFF:
        return None
    try:
        split_bind(web)
    except ValueError as exc:
        fail(str(exc))
    return web


def _render_status(data: dict[str, Any]) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    # emoji=False: rich would turn the ":key:" of "did:key:" into an emoji.
    console = Console(record=True, width=110, file=io.StringIO(), emoji=False, markup=False)
    state = "running" if data.get("running") else "not running (local store)"
    console.print(f"{data['did']}\npeer id {data['peer_id']}  node {state}")
    if data.get("listen"):
        console.print("listening " + "  ".join(data["listen"]))
    if data.get("mdns"):
        console.print(f"mDNS: {data['mdns']}")
    peers = Table("peer", "address", "state", "last sync", title="peers")
    for p in data.get("peers", []):
        peers.add_row(p.get("peer_id", "?")[:20] + "…", p.get("addr", ""), p.get("state", ""),
                      str(p.get("last_sync", "")))
    spaces = Table("space", "name", "kind", "role", "members", "epoch", "deltas", title="spaces")
    for s in data.get("spaces", []):
        spaces.add_row(s["space_id"][:12], s["name"], s["kind"], str(s.get("role")),
                       str(len(s["members"])), f"{s['epoch']:016x}"[:8], str(s["deltas"]))
    console.print(peers)
    if data.get("relays"):
        relays = Table("relay", "state", "last sync", "backlog", "last error", title="relays")
        for r in data["relays"]:
            relays.add_row(r["url"], r["state"], str(r.get("last_sync") or ""),
                           str(r.get("backlog", "")), str(r.get("last_error") or ""))
        console.print(relays)
    console.print(spaces)
    return console.export_text().rstrip()

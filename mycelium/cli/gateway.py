"""``mycelium gateway``: the omnichannel gateway (docs/gateway.md).

``mycelium gateway [--listen HOST:PORT] [--public-url URL] [--space NAME]`` runs the
server (and the node that syncs the market space); subcommands: ``link`` (take ownership
of what one sent through WhatsApp/Instagram, from one's own node) and ``parse``.
"""

from __future__ import annotations

import typer

from mycelium.cli.common import (
    HomeOption,
    JsonOption,
    emit,
    fail,
    node_paths,
    passphrase,
    user_errors,
)

gateway_app = typer.Typer(help="WhatsApp/Instagram gateway: webhooks, listings, public pages.",
                          invoke_without_command=True, no_args_is_help=False)


def register(app: typer.Typer) -> None:
    app.add_typer(gateway_app, name="gateway")


@gateway_app.callback()
@user_errors
def serve(
    ctx: typer.Context,
    listen: str = typer.Option("127.0.0.1:8080", "--listen", help="HOST:PORT for HTTP."),
    public_url: str | None = typer.Option(
        None, "--public-url",
        help="The URL providers call (scheme://host[:port]); signatures are checked against it."),
    space: str = typer.Option("market", "--space", help="Community space for listings."),
    p2p_listen: list[str] = typer.Option(  # noqa: B008
        [], "--p2p-listen", help="libp2p multiaddr to listen on (repeatable)."),
    peer: list[str] = typer.Option(  # noqa: B008
        [], "--peer", help="Static peer multiaddr with /p2p/<peer id> (repeatable)."),
    no_mdns: bool = typer.Option(False, "--no-mdns", help="Do not use mDNS discovery."),
    relay: list[str] = typer.Option(  # noqa: B008
        [], "--relay",
        help="Edge relay URL, https://host[#DID] (repeatable; DID: the relay's did:key)."),
    home: str | None = HomeOption,
) -> None:
    """Run the gateway until Ctrl-C (webhooks, inbox/outbox, public pages, node sync)."""
    if ctx.invoked_subcommand is not None:
        return
    from mycelium.gateway.server import RunOptions, run_gateway
    from mycelium.relay.client import RelayUrl

    for url_ in relay:
        RelayUrl.parse(url_)  # a bad or insecure URL is a user error now, not a retry loop

    if ":" not in listen:
        fail(f"--listen must be HOST:PORT, not {listen!r}")
    url = (public_url or f"http://{listen}").rstrip("/")
    if not url.startswith(("http://", "https://")):
        fail(f"--public-url must start with http:// or https://, not {url!r}")
    options = RunOptions(listen=listen, public_url=url, space=space,
                         p2p_listen=p2p_listen or ["/ip4/0.0.0.0/tcp/0"], peers=list(peer),
                         mdns=not no_mdns, relays=list(relay))
    run_gateway(node_paths(home), options, passphrase)


@gateway_app.command("link")
@user_errors
def link(
    code: str = typer.Argument(..., help="The code the gateway sent you after \"link\"."),
    gateway: str = typer.Option(..., "--gateway", help="The gateway's public URL."),
    home: str | None = HomeOption,
    as_json: bool = JsonOption,
) -> None:
    """Prove to a gateway that you own this node's DID; re-issue your listings under it."""
    from mycelium.node.client import call_op

    done = call_op(node_paths(home), "gateway_link", passphrase, code=code, gateway=gateway)
    if not done["member"]:
        typer.echo(f"note: this node is not a member of space {done['space_id'][:12]}…; "
                   f"ask an admin to invite {done['did']}, then run link again", err=True)
    emit({k: done[k] for k in ("did", "space_id", "listings", "reissued")}, as_json,
         f"linked {done['did']}; re-issued {done['reissued']} of {done['listings']} listings")


# --- `mycelium gateway parse` (the lead's): registered below this line -----------------


@gateway_app.command("parse")
@user_errors
def parse_cmd(
    text: str = typer.Argument(..., help="A message as a person would send it (quote it)."),
    lang: str | None = typer.Option(
        None, "--lang", help="en, es or pt (default: detected from the message)."),
    as_json: bool = JsonOption,
) -> None:
    """Show how the gateway reads a message: intent, item, quantity, unit, price, language.

    Runs offline and needs no node: the same parser the webhooks use.
    """
    from mycelium.gateway.intent import parse
    from mycelium.gateway.lexicon import LANGS

    if lang is not None and lang not in LANGS:
        fail(f"--lang must be one of {', '.join(LANGS)}, not {lang!r}")
    parsed = parse(text, lang).as_dict()
    emit(parsed, as_json, "\n".join(f"{k}: {'-' if v is None else v}" for k, v in parsed.items()))

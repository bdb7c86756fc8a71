"""``mycelium relay``: run a ciphertext-only store-and-forward relay (docs/relay.md)."""

from __future__ import annotations

import json
import sys

import typer

from mycelium.cli.common import HomeOption, node_paths, passphrase, user_errors


def register(app: typer.Typer) -> None:
    app.command("relay")(relay)


@user_errors
def relay(
    listen: str = typer.Option("127.0.0.1:8470", "--listen", help="HOST:PORT to serve on "
                               "(plain HTTP only on loopback)."),
    tls_cert: str | None = typer.Option(None, "--tls-cert", help="TLS certificate (PEM)."),
    tls_key: str | None = typer.Option(None, "--tls-key", help="TLS private key (PEM)."),
    public_url: list[str] = typer.Option(  # noqa: B008
        [], "--public-url", help="URL clients use (behind a reverse proxy; repeatable); its "
        "origin is the audience clients sign for."),
    trusted_proxy: list[str] = typer.Option(  # noqa: B008
        [], "--trusted-proxy", help="Address or network of a reverse proxy in front of "
        "the relay (repeatable): per-IP limits then key on the client address it forwards "
        "in X-Forwarded-For, not on the proxy's."),
    data: str | None = typer.Option(None, "--data", help="Directory for relay.db "
                                    "(default HOME/relay)."),
    peer: list[str] = typer.Option(  # noqa: B008
        [], "--peer", help="Peer relay to replicate with, as URL#DID (repeatable)."),
    trust: list[str] = typer.Option(  # noqa: B008
        [], "--trust", help="DID of a peer relay that may replicate from this one "
        "(repeatable; --peer relays are trusted already)."),
    space_quota_mb: int = typer.Option(256, "--space-quota-mb", help="Storage per space."),
    identity_quota_mb: int = typer.Option(64, "--identity-quota-mb",
                                          help="Storage per author identity."),
    ipfs_api: str | None = typer.Option(
        None, "--ipfs-api", help="Archive every hosted space to this IPFS RPC API "
        "(URL or multiaddr) on a schedule; see docs/relay.md."),
    archive_every: float = typer.Option(3600.0, "--archive-every", min=1.0,
                                        help="Seconds between archive rounds."),
    home: str | None = HomeOption,
) -> None:
    """Serve the relay until Ctrl-C. Prints one JSON line {"url", "did"} when ready."""
    from mycelium.node.daemon import configure_logging
    from mycelium.relay.run import RelayConfig, run_relay
    from mycelium.relay.store import StoreLimits

    configure_logging()
    config = RelayConfig(
        listen=listen, tls_cert=tls_cert, tls_key=tls_key, public_urls=list(public_url),
        data=data, peers=list(peer), trust=list(trust),
        ipfs_api=ipfs_api, archive_every_s=archive_every,
        trusted_proxies=list(trusted_proxy),
        store_limits=StoreLimits(space_bytes=space_quota_mb << 20,
                                 identity_bytes=identity_quota_mb << 20))

    def ready(url: str, did: str) -> None:
        sys.stdout.write(json.dumps({"url": url, "did": did}) + "\n")
        sys.stdout.flush()

    run_relay(node_paths(home).home, config, passphrase, on_ready=ready)

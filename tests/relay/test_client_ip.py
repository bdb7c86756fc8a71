"""Which address the relay's per-IP limits key on (mycelium/relay/client_ip.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mycelium.relay.client_ip import TrustedProxies

PROXIES = TrustedProxies(["127.0.0.1", "10.0.0.0/8", "::1"])


@pytest.mark.parametrize("peer, forwarded, client", [
    ("198.51.100.1", ["203.0.113.7"], "198.51.100.1"),  # not a proxy: header ignored
    ("127.0.0.1", [], "127.0.0.1"),  # a proxy that forwarded nothing
    ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
    ("127.0.0.1", ["192.0.2.1, 203.0.113.7"], "203.0.113.7"),  # leftmost: the client's claim
    ("127.0.0.1", ["203.0.113.7, 10.1.2.3"], "203.0.113.7"),  # through two of our proxies
    ("127.0.0.1", ["203.0.113.7", "10.1.2.3"], "203.0.113.7"),  # repeated header, in order
    ("127.0.0.1", ["10.1.2.3, 10.4.5.6"], "10.1.2.3"),  # only proxies: the farthest one
    ("127.0.0.1", ["203.0.113.7, garbage"], "127.0.0.1"),  # malformed: the proxy's own
    ("127.0.0.1", ["203.0.113.7:4711"], "127.0.0.1"),  # ports are not allowed
    ("::1", ["[2001:db8::1]"], "2001:db8::1"),
    ("::ffff:127.0.0.1", ["203.0.113.7"], "203.0.113.7"),  # v4-mapped peer
    ("?", ["203.0.113.7"], "?"),
])
def test_client_address(peer: str, forwarded: list[str], client: str) -> None:
    assert PROXIES.client(peer, forwarded) == client


def test_no_trusted_proxy_means_the_header_is_never_read() -> None:
    none = TrustedProxies()
    assert not none
    assert none.client("127.0.0.1", ["203.0.113.7"]) == "127.0.0.1"


def test_a_bad_network_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not an IP address or network"):
        TrustedProxies(["proxy.example.org"])


def test_cli_refuses_a_bad_trusted_proxy_before_starting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.archive.cli import PASSPHRASE, run

    monkeypatch.setenv("MYCELIUM_PASSPHRASE", PASSPHRASE)
    line = run("relay", "--home", str(tmp_path), "--listen", "127.0.0.1:0",
               "--trusted-proxy", "proxy.example.org", ok=False)
    assert "proxy.example.org" in line and "not an IP address or network" in line
    assert not (tmp_path / "relay" / "relay.db").exists()

"""The client address the relay's per-IP limits key on, also behind a reverse proxy.

Behind a proxy every connection comes from the proxy, so per-IP limits keyed on the
socket's peer put all clients in one bucket: one client's handshake flood (2 per second
by default) would lock everyone out. Proxies append the address they saw to
``X-Forwarded-For``; that header is trusted only when the connection comes from a proxy
named with ``--trusted-proxy`` (anyone else could write any address into it). The client
is then the rightmost address that is not itself a trusted proxy (entries to its left
were written by whoever sent the request, so are not believed). Pure: the caller passes
the peer address and the header values (protocols/relay.md §6).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxies:
    """Addresses or networks (``127.0.0.1``, ``10.0.0.0/8``, ``::1``) of reverse proxies
    whose ``X-Forwarded-For`` the relay believes. Empty: the header is ignored."""

    def __init__(self, specs: Iterable[str] = ()) -> None:
        nets: list[Network] = []
        for spec in specs:
            try:
                nets.append(ipaddress.ip_network(spec.strip(), strict=False))
            except ValueError as exc:
                raise ValueError(f"--trusted-proxy {spec!r} is not an IP address or "
                                 "network (e.g. 127.0.0.1 or 10.0.0.0/8)") from exc
        self.networks: tuple[Network, ...] = tuple(nets)

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __contains__(self, address: str) -> bool:
        ip = _parse(address)
        return ip is not None and any(ip in net for net in self.networks)

    def client(self, peer: str, forwarded_for: Sequence[str]) -> str:
        """The client's address: ``peer`` (the socket's), unless ``peer`` is a trusted
        proxy, then the rightmost address of ``forwarded_for`` (every header value, in
        order) that is not a trusted proxy. A malformed entry ends the walk: nothing to
        its left is believed, and the address is the proxy's (so an unparsable header
        costs only the proxy's shared bucket, never someone else's)."""
        if not self.networks or peer not in self:
            return peer
        hops = [h.strip() for value in forwarded_for for h in value.split(",")]
        client = peer
        for hop in reversed(hops):
            ip = _parse(hop)
            if ip is None:
                return client
            client = str(ip)
            if not any(ip in net for net in self.networks):
                return client
        return client


def _parse(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address, also as nginx/Caddy may write it (``[::1]``); ports are not
    allowed in X-Forwarded-For and make the entry malformed."""
    text = address.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


__all__ = ["TrustedProxies"]

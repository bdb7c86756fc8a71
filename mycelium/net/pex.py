"""Which peer-exchange addresses a node may dial (``protocols/sync.md`` §9a).

An announcement on a space's peers topic is signed by its sender, but what it says is
the sender's choice: before this filter, 2 000 announcement rounds from one peer id gave
16 000 dial targets (``/ip4/10.x.y.z/tcp/22``, ``/dns4/intranet-N.corp/tcp/80``), each
dialled forever. The rules here keep peer exchange to what it is for, meeting the other
members on the networks we already share:

- only ``/ip4|ip6/<address>/tcp/<port>/p2p/<sender>`` (no DNS names, no other
  transports unless configured), with a real port;
- only addresses in a scope we are connected over (:func:`address_scope`: a LAN peer
  announces LAN addresses; a node connected only over loopback accepts only loopback);
- at most one address per address family and announcement.

Caps on known peers and addresses per peer are :class:`~mycelium.net.peers.PeerManager`'s
(the daemon routes every learned address through it); only members of the space whose
topic it is are heard at all (the daemon checks the control log).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

#: Scopes, narrowest first.
LOOPBACK, PRIVATE, PUBLIC = "loopback", "private", "public"


def ip_scope(ip: str) -> str | None:
    """``loopback``, ``private`` (RFC 1918, link-local, ULA, CGNAT) or ``public``; None
    for what is not a unicast address (multicast, unspecified, garbage)."""
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return None
    if addr.is_loopback:  # before is_reserved: ::1 lies in the reserved ::/8
        return LOOPBACK
    if addr.is_multicast or addr.is_unspecified or addr.is_reserved:
        return None
    if addr.is_private or addr.is_link_local or addr in ipaddress.ip_network("100.64.0.0/10"):
        return PRIVATE
    return PUBLIC


def address_scope(maddr: str) -> tuple[str, str] | None:
    """(address family ``ip4``/``ip6``, scope) of a dialable TCP multiaddr, or None if
    it is not ``/ip4|ip6/<addr>/tcp/<port>/p2p/<id>`` with a port in 1..65535."""
    parts = maddr.split("/")
    # ["", "ip4", addr, "tcp", port, "p2p", id]
    if len(parts) != 7 or parts[0] or parts[1] not in ("ip4", "ip6") or parts[3] != "tcp" \
            or parts[5] != "p2p":
        return None
    if not parts[4].isdigit() or not 0 < int(parts[4]) < 65536:
        return None
    scope = ip_scope(parts[2])
    if scope is None:
        return None
    family_ok = (":" in parts[2]) == (parts[1] == "ip6")
    return (parts[1], scope) if family_ok else None


def accept_addresses(addrs: Iterable[str], scopes: set[str]) -> list[str]:
    """The announced addresses worth dialling: well-formed TCP, in one of ``scopes``
    (those of our current connections), at most one per address family."""
    out: list[str] = []
    families: set[str] = set()
    for addr in addrs:
        found = address_scope(addr)
        if found is None:
            continue
        family, scope = found
        if scope in scopes and family not in families:
            families.add(family)
            out.append(addr)
    return out


__all__ = ["LOOPBACK", "PRIVATE", "PUBLIC", "accept_addresses", "address_scope", "ip_scope"]

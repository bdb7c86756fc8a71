"""Typed failures of the libp2p adapter.

Each carries a short ``reason`` (a metric label and log key, see :mod:`mycelium.errors`);
the daemon catches :class:`NetError` and keeps serving other peers.
"""

from __future__ import annotations

from mycelium.errors import MyceliumError


class NetError(MyceliumError):
    """Something went wrong talking to one peer; the host itself is fine."""

    reason = "net_error"


class ConnectError(NetError):
    """Dialling a peer failed (``bad_address``, ``no_peer_id``, ``self_dial``, ``timeout``,
    ``dial_failed``)."""

    reason = "dial_failed"


class StreamOpenError(NetError):
    """Opening a protocol stream to a peer failed (``timeout``, ``not_connected``,
    ``protocol_refused``, ``open_failed``)."""

    reason = "open_failed"


class StreamClosedError(NetError):
    """The stream broke under us (``reset``, ``read_timeout``, ``write_timeout``,
    ``write_failed``, ``truncated_frame``)."""

    reason = "stream_closed"


class RateLimited(NetError):
    """The peer sent more bytes than its token bucket allows; the stream is cut off."""

    reason = "rate_limited"

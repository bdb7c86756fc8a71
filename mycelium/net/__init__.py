"""The libp2p adapter: thin drivers between py-libp2p and the sans-IO sync core.

``host`` (the configured py-libp2p host), ``framing`` (bounded stream I/O), ``sync_driver``
(runs a ``SyncSession`` on a stream), ``gossip`` (GossipSub as a hint), ``mdns`` (LAN
discovery with zeroconf). py-libp2p's quirks and our workarounds: ``docs/py-libp2p-notes.md``.
"""

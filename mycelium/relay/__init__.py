"""``mycelium relay``: a ciphertext-only store-and-forward server, and its client (DESIGN §6).

Read in this order: ``store`` (keyless SQLite store implementing the sync port),
``handshake`` (mutual auth, sans-IO), ``driver`` (the unchanged SyncSession over one
WebSocket message per frame), ``service`` (policy: limits, sessions, who may read),
``server`` (Starlette routes), ``run`` (process entry point), ``client`` and ``link`` (the
node's side, also used by a relay to replicate with its peer relays). Wire protocol:
``protocols/relay.md``.
"""

"""IPFS archives: a space's envelopes as an encrypted CARv1 behind a manifest.

``format`` builds and opens archives (pure: bytes in, bytes out; protocols/archive.md),
``keyslots`` seals the archive key to its readers, ``dagcbor`` / ``cid`` / ``car`` are the
IPLD encodings it needs, ``ipfs`` is the thin RPC client, ``service`` ties them to a store
(push a space, pull a CID into Soil; ``push_envelopes`` for the relay) and ``tail`` syncs
what was written after the archive from given peers.
"""

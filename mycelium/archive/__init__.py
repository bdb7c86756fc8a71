"""IPFS archives: a space's envelopes as an encrypted CARv1 behind a signed manifest.

``format`` builds and opens archives (pure: bytes in, bytes out; protocols/archive.md),
``dagcbor`` / ``cid`` / ``car`` are the IPLD encodings it needs, ``ipfs`` is the thin RPC
client, and ``service`` ties them to a store (push a space, pull a CID into Soil).
"""

"""Device keys: every store writes with its own key, delegated by the identity
(protocols/delta.md §8 "Device chains", protocols/identity.md §7).

Why: a chain (one author's ``seq``/``prev`` run in a space) must have exactly one writer.
Two devices holding the same seed that both signed as the identity would sign two
envelopes with the same ``(author, seq)``: a fork, and every node refuses the second
chain and everything after it. So the identity key signs no envelopes any more; each
store picks a random 16-byte *device id* the first time it writes, and derives

    device_seed = HKDF-SHA256(ikm=seed, salt=empty, info="mycelium/device-key/v1/" || device_id)

The device key opens its chain in each space with a ``device`` delegation certificate
signed by the identity (protocols/delegation.md), so members and relays attribute its
writes to the identity. A new store (a second device, a recovered device, a store
rebuilt from scratch) gets a new device id, hence a new chain: it can never fork an
older one. Only copying a store file to a second machine would (docs/recovery.md).

Deriving instead of generating keeps the keystore's one secret the seed: the store holds
only the device id, which is not secret.
"""

from __future__ import annotations

import os

from mycelium.crypto.kdf import derive_key
from mycelium.identity.identity import Identity

DEVICE_KEY_LABEL = b"mycelium/device-key/v1/"
DEVICE_ID_BYTES = 16


def new_device_id() -> bytes:
    """A fresh random device id (one per store)."""
    return os.urandom(DEVICE_ID_BYTES)


def device_identity(identity: Identity, device_id: bytes) -> Identity:
    """The key pair this device writes with (deterministic from seed and device id)."""
    if not isinstance(device_id, bytes) or len(device_id) != DEVICE_ID_BYTES:
        raise ValueError(f"device id must be {DEVICE_ID_BYTES} bytes")
    return Identity.from_seed(derive_key(identity.seed, DEVICE_KEY_LABEL + device_id))


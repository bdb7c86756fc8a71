"""Custodial identities: one Ed25519 key per phone/Instagram sender, held by the gateway
(protocols/gateway.md §4, trust model in docs/gateway.md).

A sender's seed is random (not derived), so retiring one key reveals nothing about others;
it is stored sealed with XChaCha20-Poly1305 under a key derived from the gateway's own
identity seed (HKDF label :data:`CUSTODY_LABEL`), with the sender key as associated data so
a sealed seed cannot be swapped to another sender's row. Whoever holds the gateway's
keystore passphrase can act for every custodial sender: that is the custody.
"""

from __future__ import annotations

from mycelium.crypto import aead
from mycelium.crypto.kdf import derive_key
from mycelium.errors import MyceliumError
from mycelium.identity.identity import Identity

CUSTODY_LABEL = b"mycelium/gateway-custody/v1"
AAD_PREFIX = b"mycelium-custody-v1|"


class CustodyError(MyceliumError):
    reason = "custody_error"


class Custody:
    """Seals and opens custodial seeds with a key only the gateway's identity derives."""

    def __init__(self, gateway: Identity) -> None:
        self._key = derive_key(gateway.seed, CUSTODY_LABEL)

    def new(self, sender: str) -> tuple[Identity, bytes]:
        """A fresh identity for ``sender`` and its sealed seed (``nonce || ciphertext``)."""
        ident = Identity.generate()
        return ident, self.seal(sender, ident.seed)

    def seal(self, sender: str, seed: bytes) -> bytes:
        nonce = aead.new_nonce()
        return nonce + aead.encrypt(self._key, nonce, seed, AAD_PREFIX + sender.encode())

    def open(self, sender: str, sealed: bytes) -> Identity:
        """The identity sealed for ``sender``; :class:`CustodyError` if it does not open."""
        try:
            seed = aead.decrypt(self._key, sealed[:24], sealed[24:], AAD_PREFIX + sender.encode())
        except (aead.DecryptError, ValueError) as exc:  # wrong gateway key, swapped row
            raise CustodyError(f"custodial seed of {sender!r} does not open") from exc
        return Identity.from_seed(seed)

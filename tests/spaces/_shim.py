"""Stand-ins for the identity helper's modules while they have not landed yet.

Installed into ``sys.modules`` only when the real modules cannot be imported, so the
tests run against the real ``Identity`` / ``seal_to`` as soon as they exist.
"""

from __future__ import annotations

import importlib
import sys
import types

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl import bindings


class _Identity:
    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.signing_key = Ed25519PrivateKey.from_private_bytes(seed)
        self.public_key = self.signing_key.public_key().public_bytes_raw()

    @classmethod
    def from_seed(cls, seed: bytes) -> _Identity:
        return cls(seed)


def _seal_to(pub: bytes, plaintext: bytes) -> bytes:
    return bindings.crypto_box_seal(plaintext, bindings.crypto_sign_ed25519_pk_to_curve25519(pub))


def _open_sealed(identity: _Identity, ct: bytes) -> bytes:
    pk, sk = bindings.crypto_sign_seed_keypair(identity.seed)
    return bindings.crypto_box_seal_open(ct, bindings.crypto_sign_ed25519_pk_to_curve25519(pk),
                                         bindings.crypto_sign_ed25519_sk_to_curve25519(sk))


def install() -> None:
    try:
        importlib.import_module("mycelium.identity.identity")
    except ModuleNotFoundError:
        mod = types.ModuleType("mycelium.identity.identity")
        mod.Identity = _Identity  # type: ignore[attr-defined]
        sys.modules[mod.__name__] = mod
    try:
        importlib.import_module("mycelium.crypto.sealed")
    except ModuleNotFoundError:
        mod = types.ModuleType("mycelium.crypto.sealed")
        mod.seal_to = _seal_to  # type: ignore[attr-defined]
        mod.open_sealed = _open_sealed  # type: ignore[attr-defined]
        sys.modules[mod.__name__] = mod


install()

"""Domain-separated key derivation from the identity seed (protocols/identity.md §2).

Why: one 32-byte seed is the only secret a person backs up (keystore, guardians), yet
several independent keys are needed (Soil storage encryption, …). HKDF-SHA256 (RFC 5869)
with a distinct ``info`` label per purpose gives keys that are independent of each other
and of the Ed25519 signing key, so leaking one derived key reveals neither the seed nor
its siblings. The salt is empty (RFC 5869 §3.1: the seed is already uniformly random).

Labels are versioned; changing what a key is used for means a new label, never reuse.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mycelium.errors import MyceliumError

SEED_BYTES = 32
#: RFC 5869 limit for HKDF-SHA256 output (255 * 32).
MAX_OUTPUT_BYTES = 255 * 32
MAX_LABEL_BYTES = 128

#: Key that encrypts personal-space content at rest in Soil.
STORAGE_KEY_LABEL = b"mycelium/soil-storage/v1"

#: Every label in use, for the spec and a uniqueness test.
LABELS: tuple[bytes, ...] = (STORAGE_KEY_LABEL,)


class KdfError(MyceliumError):
    """Bad derivation input (seed size, label, output length)."""

    reason = "bad_kdf_input"


def derive_key(seed: bytes, label: bytes, length: int = 32) -> bytes:
    """HKDF-SHA256(ikm=seed, salt=empty, info=label) truncated to ``length`` bytes."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise KdfError("seed must be 32 bytes")
    if not isinstance(label, bytes) or not 0 < len(label) <= MAX_LABEL_BYTES:
        raise KdfError(f"label must be 1..{MAX_LABEL_BYTES} bytes")
    if not 1 <= length <= MAX_OUTPUT_BYTES:
        raise KdfError(f"length must be 1..{MAX_OUTPUT_BYTES}")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=label).derive(seed)

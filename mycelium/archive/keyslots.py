"""Key slots: the archive key, sealed so that only its readers can open it
(protocols/archive.md §5).

A manifest carries a list of equally sized, shuffled slots and nothing that says whom a
slot is for. A reader tries each slot with what it holds:

* community archives: one anonymous sealed box (``crypto.sealed``) per current member;
* personal archives: one slot wrapped with a key derived from the identity seed (HKDF
  label :data:`PERSONAL_KEY_LABEL`), so only that identity — on any device, including one
  rebuilt by guardian recovery — opens it, and nobody else is named or needed;
* padding: slots of random bytes up to a power of two (at least :data:`MIN_SLOTS`), so
  the list reveals the number of readers only to within a factor of two.

Every slot is ``X25519 public key (32) || ciphertext of DOMAIN + key (55) || tag (16)``:
a sealed box has that shape by construction; the personal slot uses a fresh X25519
public key as its first 32 bytes (its first 24 bytes are the XChaCha20 nonce), and a
padding slot a fresh X25519 public key followed by random bytes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from nacl import bindings

from mycelium.archive.errors import BadArchive, NotARecipient
from mycelium.crypto import aead
from mycelium.crypto.kdf import derive_key
from mycelium.crypto.sealed import SealedBoxError, open_sealed, seal_to
from mycelium.spaces.keys import KeyHolder

#: HKDF-SHA256 info label of the personal archive wrapping key (crypto/kdf.py style;
#: distinct from every label in ``mycelium.crypto.kdf.LABELS``, a test checks it).
PERSONAL_KEY_LABEL = b"mycelium/archive-personal/v1"
#: Prefix of every slot's plaintext: a slot opens to exactly DOMAIN + 32-byte key.
KEY_DOMAIN = b"mycelium-archive-key-v1"
PLAINTEXT_BYTES = len(KEY_DOMAIN) + aead.KEY_BYTES
SLOT_BYTES = 32 + PLAINTEXT_BYTES + aead.TAG_BYTES
MIN_SLOTS = 4
MAX_SLOTS = 1 << 14

Random = Callable[[int], bytes]


def personal_wrap_key(identity: KeyHolder) -> bytes:
    """The 32-byte key that wraps personal archive keys, derived from the seed."""
    return derive_key(identity.seed, PERSONAL_KEY_LABEL)


def padded_count(real: int) -> int:
    """Slots written for ``real`` readers: the next power of two, at least MIN_SLOTS."""
    count = MIN_SLOTS
    while count < real:
        count *= 2
    return count


def make_slots(archive_key: bytes, *, members: Sequence[bytes] = (),
               wrap_key: bytes | None = None, rand: Random = os.urandom) -> list[bytes]:
    """Slots for ``members`` (Ed25519 public keys) and/or the personal ``wrap_key``."""
    plain = KEY_DOMAIN + archive_key
    slots = [seal_to(pub, plain) for pub in sorted(set(members))]
    if wrap_key is not None:
        eph = _x25519_public(rand)
        slots.append(eph + aead.encrypt(wrap_key, eph[:aead.NONCE_BYTES], plain, b""))
    if not slots:
        raise BadArchive("an archive needs at least one reader")
    if len(slots) > MAX_SLOTS:
        raise BadArchive(f"more than {MAX_SLOTS} readers")
    while len(slots) < padded_count(len(slots)):
        slots.append(_x25519_public(rand) + rand(SLOT_BYTES - 32))
    # Shuffle: order by a fresh 16-byte random sort key per slot (spec'd, so vectors hold).
    order = [(rand(16), slot) for slot in slots]
    return [slot for _, slot in sorted(order)]


def open_slots(slots: Sequence[bytes], identity: KeyHolder) -> bytes:
    """The archive key from the first slot this identity opens; :class:`NotARecipient`."""
    wrap = personal_wrap_key(identity)
    for slot in slots:
        try:
            plain = aead.decrypt(wrap, slot[:aead.NONCE_BYTES], slot[32:], b"")
        except aead.DecryptError:
            try:
                plain = open_sealed(identity, slot)
            except SealedBoxError:
                continue
        if len(plain) == PLAINTEXT_BYTES and plain.startswith(KEY_DOMAIN):
            return plain[len(KEY_DOMAIN):]
    raise NotARecipient("this identity is not a reader of the archive (no key slot opens)")


def _x25519_public(rand: Random) -> bytes:
    """A genuine X25519 public key, so a slot's first 32 bytes always look like one."""
    return bindings.crypto_scalarmult_base(rand(32))

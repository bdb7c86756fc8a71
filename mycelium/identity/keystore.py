"""Passphrase-encrypted keystore for the identity seed (protocols/identity.md §3).

Why this shape:

* The only secret is the 32-byte seed; it is encrypted with XChaCha20-Poly1305 under a
  key stretched from the passphrase with argon2id (memory-hard, so a stolen file resists
  GPU guessing). Parameters and salt live in the file so they can be raised later.
* The DID, PeerID and a display name are readable without the passphrase (``mycelium id``
  must not prompt), but they are the AEAD associated data, so editing them makes loading
  fail instead of showing a wrong identity.
* argon2id yields 64 bytes: the first 32 are the AEAD key, the last 32 are stored as a
  ``check`` value. A mismatch means "wrong passphrase"; a match followed by an AEAD
  failure means the file was tampered with. The check reveals nothing an attacker could
  not learn by trial decryption anyway.
* Writes are atomic (temp file in the same directory, fsync, ``os.replace``, fsync of
  the directory) and the file is mode 0600: a crash never leaves half a keystore.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import os
import secrets
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from argon2.low_level import Type, hash_secret_raw

from mycelium.codec import cbor
from mycelium.crypto import aead
from mycelium.errors import MyceliumError
from mycelium.identity.didkey import DidError, did_to_peer_id
from mycelium.identity.identity import Identity

FORMAT = "mycelium-keystore"
VERSION = 1
AAD_DOMAIN = b"mycelium-keystore-v1"
SALT_BYTES = 16
MAX_FILE_BYTES = 64 * 1024
MAX_NAME_CHARS = 128
FAST_KDF_ENV = "MYCELIUM_INSECURE_FAST_KDF"


class KeystoreError(MyceliumError):
    """Base class for keystore failures."""

    reason = "keystore"


class KeystoreExists(KeystoreError):
    """Refusing to overwrite an existing keystore (it may hold the only copy of a seed)."""

    reason = "keystore_exists"


class KeystoreNotFound(KeystoreError):
    """No keystore at the given path."""

    reason = "no_keystore"


class WrongPassphrase(KeystoreError):
    """The passphrase (or the stored KDF parameters) do not produce the stored check value."""

    reason = "wrong_passphrase"


class KeystoreCorrupt(KeystoreError):
    """Truncated, malformed or tampered keystore."""

    reason = "keystore_corrupt"


class UnsupportedKeystore(KeystoreError):
    """A keystore format, version, algorithm or KDF cost this build does not accept."""

    reason = "unsupported_keystore"


@dataclass(frozen=True)
class KdfParams:
    """argon2id cost parameters (RFC 9106)."""

    time_cost: int = 3
    memory_kib: int = 64 * 1024
    parallelism: int = 1

    #: Bounds accepted when *loading*: a crafted file must not make us allocate 100 GiB.
    LIMITS: ClassVar[dict[str, tuple[int, int]]] = {
        "time_cost": (1, 16), "memory_kib": (8, 1024 * 1024), "parallelism": (1, 8),
    }

    @classmethod
    def default(cls) -> KdfParams:
        """t=3, 64 MiB, p=1 (≈0.5 s on a Raspberry Pi 4), or tiny params for tests.

        ``MYCELIUM_INSECURE_FAST_KDF=1`` selects t=1, 8 KiB: for test suites only, never
        for real keystores (it makes passphrase guessing nearly free).
        """
        if os.environ.get(FAST_KDF_ENV) == "1":
            return cls.insecure_fast()
        return cls()

    @classmethod
    def insecure_fast(cls) -> KdfParams:
        return cls(time_cost=1, memory_kib=8, parallelism=1)

    def check(self) -> None:
        for field, (low, high) in self.LIMITS.items():
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise UnsupportedKeystore(f"argon2id {field}={value!r} outside {low}..{high}")
        if self.memory_kib < 8 * self.parallelism:
            raise UnsupportedKeystore("argon2id memory must be at least 8 KiB per lane")


@dataclass(frozen=True)
class KeystorePublic:
    """What anyone with read access learns from a keystore (no passphrase needed)."""

    did: str
    peer_id: str
    name: str | None


def create_keystore(
    path: str | os.PathLike[str],
    passphrase: str,
    *,
    seed: bytes | None = None,
    name: str | None = None,
    kdf: KdfParams | None = None,
) -> Identity:
    """Write a new keystore for ``seed`` (fresh if None) and return the identity.

    Raises :class:`KeystoreExists` if ``path`` exists. ``kdf`` defaults to
    :meth:`KdfParams.default` evaluated now (so the test switch is honoured).
    """
    target = Path(path)
    if target.exists():
        raise KeystoreExists(f"a keystore already exists at {target}")
    identity = Identity.from_seed(seed) if seed is not None else Identity.generate()
    params = kdf or KdfParams.default()
    params.check()
    data = _seal(identity, _normalize(passphrase), _check_name(name), params)
    write_atomic(target, data, overwrite=False)
    return identity


def load_keystore(path: str | os.PathLike[str], passphrase: str) -> Identity:
    """Decrypt the keystore; see the module docstring for which error means what."""
    doc = _read(Path(path))
    public = _public(doc)
    params, salt = _kdf(doc)
    nonce, ciphertext, check = _cipher(doc)
    okm = _stretch(_normalize(passphrase), salt, params)
    if not hmac.compare_digest(okm[32:], check):
        raise WrongPassphrase("wrong passphrase")
    try:
        seed = aead.decrypt(okm[:32], nonce, ciphertext, _aad(public, params, salt))
    except aead.DecryptError as exc:
        raise KeystoreCorrupt("keystore was modified (authentication failed)") from exc
    identity = Identity.from_seed(seed)
    if identity.did != public.did:
        raise KeystoreCorrupt("keystore seed does not match its DID")
    return identity


def change_passphrase(
    path: str | os.PathLike[str],
    old: str,
    new: str,
    *,
    kdf: KdfParams | None = None,
) -> Identity:
    """Re-encrypt the keystore under ``new`` (fresh salt and nonce, current KDF
    parameters, same identity and name). Raises like :func:`load_keystore` if ``old`` is
    wrong; the file is replaced atomically, so a crash leaves the old or the new one.

    Only the keystore changes: the storage key of the local database is derived from the
    seed, not from the passphrase, so nothing else needs re-encrypting.
    """
    target = Path(path)
    identity = load_keystore(target, old)
    params = kdf or KdfParams.default()
    params.check()
    data = _seal(identity, _normalize(new), read_public(target).name, params)
    write_atomic(target, data, overwrite=True)
    return identity


def read_public(path: str | os.PathLike[str]) -> KeystorePublic:
    """DID, PeerID and name, without the passphrase (authenticated only at load)."""
    return _public(_read(Path(path)))


def write_atomic(path: Path, data: bytes, mode: int = 0o600, *, overwrite: bool = True) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half.

    The temp file is created with ``mode`` from the start (no window where the secret is
    world-readable), fsynced, renamed over ``path``, and the directory is fsynced so the
    rename itself survives a power cut. With ``overwrite=False`` the final step is a hard
    link, which fails atomically if ``path`` appeared meanwhile (two ``init`` racing).
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _fsync_dir(path.parent)


def _publish_new(tmp: Path, path: Path) -> None:
    """Move ``tmp`` to ``path`` unless ``path`` exists (then :class:`KeystoreExists`)."""
    try:
        os.link(tmp, path)
    except FileExistsError as exc:
        raise KeystoreExists(f"a keystore already exists at {path}") from exc
    except OSError:
        # Filesystems without hard links (FAT, some Android storage): check, then rename.
        if path.exists():
            raise KeystoreExists(f"a keystore already exists at {path}") from None
        os.replace(tmp, path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seal(identity: Identity, passphrase: bytes, name: str | None, params: KdfParams) -> bytes:
    salt = secrets.token_bytes(SALT_BYTES)
    okm = _stretch(passphrase, salt, params)
    public = KeystorePublic(identity.did, identity.peer_id, name)
    nonce = aead.new_nonce()
    ciphertext = aead.encrypt(okm[:32], nonce, identity.seed, _aad(public, params, salt))
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "public": {"did": public.did, "peer_id": public.peer_id, "name": public.name},
        "kdf": {
            "alg": "argon2id", "time_cost": params.time_cost, "memory_kib": params.memory_kib,
            "parallelism": params.parallelism, "salt": salt.hex(),
        },
        "cipher": {
            "alg": "xchacha20poly1305", "nonce": nonce.hex(), "ciphertext": ciphertext.hex(),
        },
        "check": okm[32:].hex(),
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _stretch(passphrase: bytes, salt: bytes, params: KdfParams) -> bytes:
    return hash_secret_raw(
        secret=passphrase, salt=salt, time_cost=params.time_cost,
        memory_cost=params.memory_kib, parallelism=params.parallelism, hash_len=64, type=Type.ID,
    )


def _aad(public: KeystorePublic, params: KdfParams, salt: bytes) -> bytes:
    """Everything outside the ciphertext that must not change without detection."""
    return AAD_DOMAIN + cbor.encode({
        "v": VERSION, "did": public.did, "peer_id": public.peer_id, "name": public.name,
        "kdf": [params.time_cost, params.memory_kib, params.parallelism], "salt": salt,
    })


def _normalize(passphrase: str) -> bytes:
    """NFC so the same passphrase typed on another keyboard/OS gives the same bytes."""
    if not isinstance(passphrase, str) or not passphrase:
        raise KeystoreError("passphrase must be a non-empty string", reason="empty_passphrase")
    return unicodedata.normalize("NFC", passphrase).encode("utf-8")


def _check_name(name: str | None) -> str | None:
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_CHARS):
        raise KeystoreError(f"name must be at most {MAX_NAME_CHARS} characters", reason="bad_name")
    return name


def _read(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError as exc:
        raise KeystoreNotFound(f"no keystore at {path} (run `mycelium init`)") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise KeystoreCorrupt(f"keystore larger than {MAX_FILE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise KeystoreCorrupt(f"keystore is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise KeystoreCorrupt("not a mycelium keystore")
    if doc.get("version") != VERSION:
        raise UnsupportedKeystore(f"keystore version {doc.get('version')!r} (supported: {VERSION})")
    return doc


def _section(doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key)
    if not isinstance(value, dict):
        raise KeystoreCorrupt(f"keystore field {key!r} missing or not an object")
    return value


def _hex(section: dict[str, Any], key: str, size: int | None = None) -> bytes:
    try:
        value = bytes.fromhex(section[key])
    except (KeyError, TypeError, ValueError) as exc:
        raise KeystoreCorrupt(f"keystore field {key!r} missing or not hex") from exc
    if size is not None and len(value) != size:
        raise KeystoreCorrupt(f"keystore field {key!r} must be {size} bytes")
    return value


def _public(doc: dict[str, Any]) -> KeystorePublic:
    pub = _section(doc, "public")
    did, peer_id, name = pub.get("did"), pub.get("peer_id"), pub.get("name")
    if not isinstance(did, str) or not isinstance(peer_id, str):
        raise KeystoreCorrupt("keystore public part lacks did/peer_id")
    if name is not None and not isinstance(name, str):
        raise KeystoreCorrupt("keystore name is not a string")
    try:
        consistent = did_to_peer_id(did) == peer_id
    except DidError as exc:
        raise KeystoreCorrupt(f"keystore DID is invalid: {exc}") from exc
    if not consistent:
        raise KeystoreCorrupt("keystore DID and PeerID disagree")
    return KeystorePublic(did, peer_id, name)


def _kdf(doc: dict[str, Any]) -> tuple[KdfParams, bytes]:
    kdf = _section(doc, "kdf")
    if kdf.get("alg") != "argon2id":
        raise UnsupportedKeystore(f"keystore KDF {kdf.get('alg')!r} (supported: argon2id)")
    params = KdfParams(kdf.get("time_cost", 0), kdf.get("memory_kib", 0), kdf.get("parallelism", 0))
    params.check()
    return params, _hex(kdf, "salt", SALT_BYTES)


def _cipher(doc: dict[str, Any]) -> tuple[bytes, bytes, bytes]:
    cipher = _section(doc, "cipher")
    if cipher.get("alg") != "xchacha20poly1305":
        raise UnsupportedKeystore(f"keystore cipher {cipher.get('alg')!r} unsupported")
    nonce = _hex(cipher, "nonce", aead.NONCE_BYTES)
    ciphertext = _hex(cipher, "ciphertext", 32 + aead.TAG_BYTES)
    return nonce, ciphertext, _hex(doc, "check", 32)

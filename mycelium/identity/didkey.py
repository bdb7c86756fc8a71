"""did:key <-> Ed25519 public key <-> libp2p PeerID (protocols/identity.md §1).

Why both: members are named by their ``did:key`` in spaces and on the relay, while the
libp2p host key *is* the identity key, so the PeerID a peer authenticates with in the
Noise handshake must map back to the same DID without any lookup. For Ed25519 the two
are a bijection over the 32 raw key bytes:

* ``did:key:z…`` = ``"did:key:"`` + multibase base58btc(varint(0xed) + key)
* PeerID (legacy form, ``12D3KooW…``) = base58btc(identity multihash of the protobuf
  ``PublicKey{Type=Ed25519, Data=key}``) = base58btc(``00 24 08 01 12 20`` + key)

Parsing is strict: only the canonical encoding of an Ed25519 key is accepted, so one key
has exactly one DID string and one legacy PeerID string. As the libp2p peer-id spec
requires, the CIDv1 form of a PeerID (multicodec ``libp2p-key``, any multibase, e.g.
``bafz…``) is accepted on input; output is always the legacy base58btc form.

The key bytes are not checked to be a valid curve point: this module maps encodings; a
bogus key simply never verifies a signature, and ``seal_to`` refuses it.
"""

from __future__ import annotations

from multiformats import CID, multibase, multicodec, multihash

from mycelium.errors import MyceliumError

DID_KEY_PREFIX = "did:key:"
ED25519_PUBLIC_BYTES = 32
#: libp2p-key protobuf of an Ed25519 key is 36 bytes; wrapped in an identity multihash.
PEER_ID_PREFIX = bytes.fromhex("002408011220")
#: Longest string either parser looks at (a did:key of a 32-byte key is 56 characters).
MAX_INPUT_CHARS = 256

_ED25519_CODEC = multicodec.get("ed25519-pub")
_LIBP2P_KEY_CODEC = multicodec.get("libp2p-key")
_IDENTITY_MULTIHASH = 0x00
_BASE58BTC = multibase.get("base58btc")
#: What the multiformats parsers raise on malformed input (found by property tests).
_PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError)


class DidError(MyceliumError):
    """A string is not a usable Ed25519 did:key or PeerID."""

    reason = "bad_did"


class NotADidKey(DidError):
    """Not a ``did:key:`` string at all (other DID method, or no DID)."""

    reason = "not_did_key"


class BadMultibase(DidError):
    """The method-specific id or PeerID is not valid base58btc / multibase text."""

    reason = "bad_multibase"


class UnsupportedKeyType(DidError):
    """Well-formed, but for a key type other than Ed25519 (secp256k1, RSA, P-256, …)."""

    reason = "unsupported_key_type"


class BadKeyLength(DidError):
    """The key or multihash has the wrong length."""

    reason = "bad_length"


class NotIdentityMultihash(DidError):
    """A PeerID that hashes its key (``Qm…``, sha2-256): the key cannot be recovered."""

    reason = "not_identity_multihash"


class BadPeerId(DidError):
    """A PeerID that is not a well-formed multihash / CID / key protobuf."""

    reason = "bad_peer_id"


class NonCanonical(DidError):
    """Decodes to a key, but is not the one canonical encoding of that key."""

    reason = "non_canonical"


def did_from_public_key(public_key: bytes) -> str:
    """``did:key:z6Mk…`` for a raw 32-byte Ed25519 public key."""
    _check_key(public_key)
    wrapped = multicodec.wrap(_ED25519_CODEC, bytes(public_key))
    return DID_KEY_PREFIX + multibase.encode(wrapped, "base58btc")


def public_key_from_did(did: str) -> bytes:
    """The raw 32-byte Ed25519 public key named by a ``did:key``; raises a :class:`DidError`."""
    _check_text(did)
    if not did.startswith(DID_KEY_PREFIX):
        method = did.split(":")[1] if did.startswith("did:") and did.count(":") >= 2 else None
        what = f"DID method {method!r}" if method else "not a DID"
        raise NotADidKey(f"expected did:key:…, got {what}")
    ident = did[len(DID_KEY_PREFIX):]
    if not ident.startswith("z"):
        raise BadMultibase("did:key must use multibase base58btc (prefix 'z')")
    try:
        raw = multibase.decode(ident)
    except _PARSE_ERRORS as exc:
        raise BadMultibase(f"bad base58btc in did:key: {exc}") from exc
    try:
        codec, key = multicodec.unwrap(raw)
    except _PARSE_ERRORS as exc:
        raise UnsupportedKeyType(f"did:key has an unknown multicodec prefix: {exc}") from exc
    if codec != _ED25519_CODEC:
        raise UnsupportedKeyType(f"did:key is a {codec.name} key, only ed25519-pub is supported")
    if len(key) != ED25519_PUBLIC_BYTES:
        raise BadKeyLength(f"ed25519 key in did:key has {len(key)} bytes, expected 32")
    if did_from_public_key(key) != did:
        raise NonCanonical("did:key is not the canonical encoding of its key")
    return key


def peer_id_from_public_key(public_key: bytes) -> str:
    """The libp2p PeerID (``12D3KooW…``) of a raw Ed25519 public key, as py-libp2p computes it.

    Built by hand (protocols/identity.md §1: base58btc of the identity multihash of the
    key protobuf, which for Ed25519 is a fixed prefix plus the key): importing py-libp2p
    costs ~1 s, and ``mycelium id`` reads this for every call. tests/identity/test_didkey.py
    checks the result against py-libp2p's ``ID.from_pubkey``."""
    _check_key(public_key)
    encoded: str = _BASE58BTC.raw_encoder(PEER_ID_PREFIX + bytes(public_key))
    return encoded


def public_key_from_peer_id(peer_id: str) -> bytes:
    """The raw Ed25519 key inside a PeerID (legacy base58btc or CIDv1 ``libp2p-key``)."""
    _check_text(peer_id)
    legacy = peer_id.startswith(("1", "Qm"))
    mh = _legacy_multihash(peer_id) if legacy else _cid_multihash(peer_id)
    key = _key_from_multihash(mh)
    if legacy and peer_id_from_public_key(key) != peer_id:
        raise NonCanonical("PeerID is not the canonical base58btc encoding of its key")
    return key


def did_to_peer_id(did: str) -> str:
    """``did:key:z6Mk…`` -> ``12D3KooW…``."""
    return peer_id_from_public_key(public_key_from_did(did))


def peer_id_to_did(peer_id: str) -> str:
    """``12D3KooW…`` (or its CID form) -> ``did:key:z6Mk…``."""
    return did_from_public_key(public_key_from_peer_id(peer_id))


def convert(value: str) -> str:
    """A did:key becomes its PeerID; anything else is parsed as a PeerID and becomes its DID."""
    value = value.strip() if isinstance(value, str) else value
    if isinstance(value, str) and value.startswith("did:"):
        return did_to_peer_id(value)
    return peer_id_to_did(value)


def _check_key(public_key: bytes) -> None:
    if not isinstance(public_key, bytes | bytearray) or len(public_key) != ED25519_PUBLIC_BYTES:
        size = len(public_key) if isinstance(public_key, bytes | bytearray) else "?"
        raise BadKeyLength(f"Ed25519 public key must be 32 bytes, got {size}")


def _check_text(value: str) -> None:
    if not isinstance(value, str):
        raise DidError(f"expected a string, got {type(value).__name__}")
    if not value or len(value) > MAX_INPUT_CHARS:
        raise DidError(f"identifier must be 1..{MAX_INPUT_CHARS} characters", reason="bad_length")


def _legacy_multihash(peer_id: str) -> bytes:
    try:
        return bytes(_BASE58BTC.raw_decoder(peer_id))
    except _PARSE_ERRORS as exc:
        raise BadMultibase(f"bad base58btc in PeerID: {exc}") from exc


def _cid_multihash(peer_id: str) -> bytes:
    try:
        cid = CID.decode(peer_id)
    except _PARSE_ERRORS as exc:
        raise BadPeerId(f"not a PeerID (neither base58 multihash nor CID): {exc}") from exc
    if cid.version != 1 or cid.codec != _LIBP2P_KEY_CODEC:
        raise BadPeerId(f"CID is not a CIDv1 libp2p-key (codec {cid.codec.name})")
    return bytes(cid.digest)


def _key_from_multihash(mh: bytes) -> bytes:
    try:
        code, digest = multihash.unwrap_raw(mh)
    except _PARSE_ERRORS as exc:
        raise BadPeerId(f"PeerID is not a multihash: {exc}") from exc
    if code != _IDENTITY_MULTIHASH:
        raise NotIdentityMultihash(
            "PeerID hashes its public key (not an identity multihash); the key cannot be recovered"
        )
    raw = bytes(digest)
    if bytes(mh) == PEER_ID_PREFIX + raw[4:] and len(raw) == 4 + ED25519_PUBLIC_BYTES:
        return raw[4:]  # the canonical Ed25519 form, read without py-libp2p (~1 s to import)
    from libp2p.crypto.keys import KeyType
    from libp2p.crypto.keys import PublicKey as Libp2pPublicKey

    try:
        proto = Libp2pPublicKey.deserialize_from_protobuf(bytes(digest))
    except Exception as exc:  # protobuf raises its own DecodeError family
        raise BadPeerId(f"PeerID does not hold a libp2p PublicKey protobuf: {exc}") from exc
    if proto.key_type != KeyType.Ed25519.value:
        name = _key_type_name(proto.key_type)
        raise UnsupportedKeyType(f"PeerID holds a {name} key, only Ed25519 is supported")
    key = bytes(proto.data)
    if len(key) != ED25519_PUBLIC_BYTES:
        raise BadKeyLength(f"Ed25519 key in PeerID has {len(key)} bytes, expected 32")
    if bytes(mh) != PEER_ID_PREFIX + key:
        raise NonCanonical("PeerID key protobuf is not canonically encoded")
    return key


def _key_type_name(value: int) -> str:
    from libp2p.crypto.keys import KeyType

    try:
        return KeyType(value).name
    except ValueError:
        return f"unknown key type {value}"

"""Errors of the archive area; each carries a ``reason`` a test or a log can match."""

from __future__ import annotations

from mycelium.errors import MyceliumError


class ArchiveError(MyceliumError):
    """Any archive that cannot be written or read."""

    reason = "archive_error"


class BadCid(ArchiveError):
    """Not a CIDv1 of a DAG-CBOR block hashed with sha2-256."""

    reason = "bad_cid"


class TamperedBlock(ArchiveError):
    """A block's bytes do not hash to its CID (the IPFS node returned other bytes)."""

    reason = "tampered_block"


class MissingBlock(ArchiveError):
    """A block the manifest links to is not in what the node returned."""

    reason = "missing_block"


class BadArchive(ArchiveError):
    """Malformed CAR, manifest, chunk or stream (the message says which field)."""

    reason = "bad_archive"


class NotARecipient(ArchiveError):
    """No key slot of the manifest opens with this identity."""

    reason = "not_a_recipient"


class BadSignature(ArchiveError):
    """The archive header's signature does not verify or its signer is not trusted."""

    reason = "bad_archive_signature"


class ArchiveConflict(ArchiveError):
    """The archive's envelopes conflict with what this store already holds."""

    reason = "archive_conflict"


class IpfsUnavailable(ArchiveError):
    """The IPFS RPC API did not answer (message names the address tried)."""

    reason = "ipfs_unavailable"


class IpfsRefused(ArchiveError):
    """The IPFS RPC API answered with an error."""

    reason = "ipfs_error"

"""Archives of a store's spaces: push a space to IPFS, pull a CID into Soil.

``push_envelopes`` is the store-agnostic entry point (any :class:`DeltaStore` port, a
genesis and the readers' public keys): the relay can call it on a schedule for the spaces
it hosts, signing with its own identity. ``push_space`` / ``pull`` are what the CLI and
the node's operations use.

Pull order (protocols/archive.md §7): export the CAR, check every block against its CID,
open the key slot, decrypt, check the signed header and the genesis, resolve the archived
control log in memory to check the signer and the space's membership, and only then add
the space and ingest. Any failure before the ingest leaves the store untouched.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from mycelium.archive import car, keyslots
from mycelium.archive import cid as cids
from mycelium.archive import format as fmt
from mycelium.archive.errors import (
    ArchiveConflict,
    ArchiveError,
    BadArchive,
    BadSignature,
    MissingBlock,
)
from mycelium.archive.ipfs import IpfsClient
from mycelium.errors import MyceliumError
from mycelium.log.envelope import Envelope, Kind
from mycelium.log.envelope import decode as decode_envelope
from mycelium.log.validate import CHAIN_CONFLICTS, authentic_ids
from mycelium.spaces.genesis import parse_genesis
from mycelium.spaces.keys import KeyHolder
from mycelium.spaces.state import SpaceState
from mycelium.sync.ports import DeltaStore

log = logging.getLogger(__name__)

#: Largest CAR accepted from an IPFS node: the largest archive plus its manifest.
MAX_CAR_BYTES = fmt.MAX_CHUNKS * (fmt.BLOCK_LIMIT + 64) + fmt.MAX_MANIFEST_BYTES


@dataclass(frozen=True)
class Pushed:
    """What a push wrote: root CID, blocks and bytes stored, envelopes archived."""

    cid: str
    blocks: int
    stored_bytes: int
    envelopes: int

    def as_dict(self) -> dict[str, Any]:
        return {"cid": self.cid, "blocks": self.blocks, "stored_bytes": self.stored_bytes,
                "envelopes": self.envelopes}


def push_envelopes(store: DeltaStore, space_id: bytes, genesis: bytes, *, signer: KeyHolder,
                   ipfs: IpfsClient, members: Sequence[bytes] = (),
                   wrap_key: bytes | None = None, now_ms: int | None = None) -> Pushed:
    """Archive every envelope ``store`` holds for ``space_id``, readable by ``members``
    (Ed25519 public keys) and/or the personal ``wrap_key``; import and pin it on ``ipfs``.

    For the relay (issue 12): ``store`` is its keyless store, ``signer`` its identity,
    ``members`` the space's current members from the control log; pullers must then trust
    the relay's key (``pull(..., trusted_signers=...)``).
    """
    envelopes = store.envelopes_since(space_id, {}, limit=1 << 62, max_bytes=1 << 62)
    return push_snapshot(SpaceSnapshot(space_id, genesis, tuple(envelopes), tuple(members),
                                       wrap_key), signer=signer, ipfs=ipfs, now_ms=now_ms)


@dataclass(frozen=True, slots=True)
class SpaceSnapshot:
    """What an archive of one space is built from, read from a store at one moment: the
    node reads it on its event loop, the slow build and import run elsewhere
    (:mod:`mycelium.node.phased`)."""

    space_id: bytes
    genesis: bytes
    envelopes: tuple[bytes, ...]
    members: tuple[bytes, ...] = ()
    wrap_key: bytes | None = None


def snapshot_space(soil: Any, space_id: bytes) -> SpaceSnapshot:
    """One of this node's spaces, ready to archive: a personal space for this identity
    alone (key derived from the seed), a community space for its current members."""
    state: SpaceState = soil.space_state(space_id)
    identity = soil.identity
    if not state.is_member(identity.public_key):
        raise ArchiveError("only a member of a space can archive it", reason="not_member")
    envelopes = tuple(soil.envelopes_since(space_id, {}, limit=1 << 62, max_bytes=1 << 62))
    if state.kind == "personal":
        return SpaceSnapshot(space_id, soil.genesis(space_id), envelopes,
                             wrap_key=keyslots.personal_wrap_key(identity))
    return SpaceSnapshot(space_id, soil.genesis(space_id), envelopes,
                         members=tuple(sorted(state.members)))


def push_snapshot(snapshot: SpaceSnapshot, *, signer: KeyHolder, ipfs: IpfsClient,
                  now_ms: int | None = None) -> Pushed:
    """Build, encrypt, import and pin the archive of ``snapshot`` (no store involved)."""
    archive = fmt.build(snapshot.genesis, snapshot.envelopes, signer=signer,
                        members=snapshot.members, wrap_key=snapshot.wrap_key,
                        created_ms=_now_ms() if now_ms is None else now_ms)
    reported = ipfs.dag_import(archive.car())
    if reported != archive.cid:
        raise ArchiveError(f"IPFS node at {ipfs.url} reports root {reported}, expected "
                           f"{archive.cid}", reason="ipfs_root_mismatch")
    return Pushed(cid=archive.cid, blocks=len(archive.blocks),
                  stored_bytes=archive.stored_bytes, envelopes=len(snapshot.envelopes))


def push_space(soil: Any, space_id: bytes, ipfs: IpfsClient, *,
               now_ms: int | None = None) -> Pushed:
    """Archive one of this node's spaces (:func:`snapshot_space`, :func:`push_snapshot`)."""
    return push_snapshot(snapshot_space(soil, space_id), signer=soil.identity, ipfs=ipfs,
                         now_ms=now_ms)


def fetch(ipfs: IpfsClient, cid_text: str) -> tuple[bytes, dict[bytes, bytes]]:
    """``(root, blocks)`` as exported by the node. Not yet checked against their CIDs:
    :func:`format.open_archive` checks every block the manifest reaches before use."""
    root = cids.from_text(cid_text)
    data = ipfs.dag_export(cids.to_text(root), max_bytes=MAX_CAR_BYTES)
    roots, blocks = car.read_car(data, max_blocks=fmt.MAX_CHUNKS + 1)
    if roots != [root]:
        raise BadArchive(f"IPFS node exported a CAR for other roots than {cid_text}")
    held = dict(blocks)
    if root not in held:
        raise MissingBlock(f"manifest block {cid_text} missing from the export")
    return root, held


def open_verified(root: bytes, blocks: dict[bytes, bytes], identity: KeyHolder, *,
                  trusted_signers: Collection[bytes] = ()) -> tuple[fmt.Contents, SpaceState]:
    """Open an archive and check it as a whole before anything is stored: genesis,
    envelope space ids and signatures of control ops, the control log resolved in memory,
    and a signer that is a member of the archived space (or in ``trusted_signers``)."""
    contents = fmt.open_archive(root, blocks, identity)
    try:
        genesis = parse_genesis(contents.genesis)
    except MyceliumError as exc:
        raise BadArchive(f"archive genesis is invalid: {exc}") from exc
    envs: list[Envelope] = []
    for raw in contents.envelopes:
        try:
            env = decode_envelope(raw)
        except MyceliumError as exc:
            raise BadArchive(f"archive holds an undecodable envelope: {exc}") from exc
        if env.space != contents.space_id:
            raise BadArchive("archive holds an envelope of another space")
        envs.append(env)
    controls = [e for e in envs if e.kind is Kind.CONTROL]
    if controls:  # authentic as stores judge it: per chain (protocols/delta.md §6)
        ok = authentic_ids(envs)
        for env in controls:
            if env.delta_id not in ok:
                raise BadSignature("archive holds a control op whose signature is invalid")
    preview = SpaceState(genesis)
    try:
        preview.apply_many(controls)
    except MyceliumError as exc:
        raise BadArchive(f"archive's control log does not resolve: {exc}") from exc
    if not (preview.is_member(contents.signer) or contents.signer in trusted_signers):
        raise BadSignature("archive signed by a key that is neither a member of the space "
                           "nor trusted")
    return contents, preview


def pull(soil: Any, ipfs: IpfsClient, cid_text: str, *,
         trusted_signers: Collection[bytes] = ()) -> dict[str, Any]:
    """Restore an archive into ``soil``; returns a JSON-ready summary.

    Raises (store untouched) on any bad block, key, signature or genesis; raises
    :class:`ArchiveConflict` when the store already holds a different history of the same
    authors (e.g. a device that wrote to its personal space before restoring it).
    """
    with refusal_logged(cid_text):
        root, blocks = fetch(ipfs, cid_text)
        contents, preview = open_verified(root, blocks, soil.identity,
                                          trusted_signers=trusted_signers)
        return restore(soil, root, contents, preview)


@contextmanager
def refusal_logged(cid_text: str) -> Iterator[None]:
    """Log why the pull of ``cid_text`` was refused (any step: fetch, checks, restore),
    then let the error go on: one line per refused archive, whoever drives the pull."""
    try:
        yield
    except MyceliumError as exc:
        log.warning("archive %s refused (%s): %s", cid_text[:80], exc.reason, exc)
        raise


def restore(soil: Any, root: bytes, contents: fmt.Contents, preview: SpaceState) -> dict[str, Any]:
    """The last step of :func:`pull`: add the (verified) space and ingest its envelopes;
    logged, and summed up as a JSON-ready dict."""
    space_id = soil.add_space(contents.genesis)
    result = soil.ingest(space_id, contents.envelopes)
    conflicts = [reason for _, reason in result.rejected if reason in CHAIN_CONFLICTS]
    if conflicts:
        raise ArchiveConflict(
            f"{len(conflicts)} archived envelopes conflict with this store's own history "
            f"({conflicts[0]}); restore into a fresh home (for a personal archive: right "
            f"after `recover finish`, before anything else opens the store)")
    summary = {"cid": cids.to_text(root), "space_id": space_id.hex(), "name": preview.name,
               "kind": preview.kind, "envelopes": len(contents.envelopes),
               "accepted": len(result.accepted), "duplicates": result.duplicates,
               "pending": result.pending, "rejected": len(result.rejected),
               "signer": contents.signer.hex()}
    log.info("archive %s restored into space %s: %d new, %d duplicates, %d rejected",
             summary["cid"], summary["space_id"][:12], summary["accepted"],
             summary["duplicates"], summary["rejected"])
    return summary


def _now_ms() -> int:
    return int(time.time() * 1000)

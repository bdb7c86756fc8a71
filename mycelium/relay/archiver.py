"""The relay archives the spaces it hosts to IPFS on a schedule (issue 13, protocols/relay.md).

Why at the relay: it is the one always-on holder of every hosted space's ciphertext, so a
member who lost every device (or a new member) can start from one CID even when no peer is
online. The relay cannot read a space, and does not need to: an archive
(:func:`mycelium.archive.service.push_envelopes`) wraps the envelopes exactly as stored,
under a fresh archive key sealed to the space's current members by its control log (a
personal space: to its owner), signed by the relay's identity. Pullers trust that key
explicitly (``mycelium archive pull CID --trust-relay DID``).

Three parts:

* :func:`due` — the sans-IO decision: which spaces need a new archive now. A space whose
  envelope count or key epoch moved since its last archive does; an unchanged one does not.
* :class:`ArchiveLedger` — per space the latest CID, in the relay's SQLite (survives a
  restart; served by ``GET /v1/spaces/{id}/archive``).
* :class:`Archiver` — the driver: one :meth:`~Archiver.round` snapshots the due spaces in
  the trio thread (the store is single-threaded), builds and imports each archive in a
  worker thread, and only after the new root is pinned unpins the superseded one. A dead
  IPFS API ends the round with one log line; the relay keeps serving.
  :func:`run_archiver` repeats rounds every ``every_s`` seconds in the relay's nursery.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import httpx
import trio

from mycelium.archive.errors import IpfsUnavailable
from mycelium.archive.ipfs import IpfsClient, api_url
from mycelium.archive.service import Pushed, push_envelopes
from mycelium.errors import MyceliumError
from mycelium.identity.identity import Identity
from mycelium.relay.store import RelayStore
from mycelium.sync.ports import DeltaStore, VersionVector

log = logging.getLogger("mycelium.relay.archiver")

#: Default seconds between rounds (``mycelium relay --archive-every``).
DEFAULT_EVERY_S = 3600.0

DDL = """
CREATE TABLE IF NOT EXISTS archives (
  space BLOB PRIMARY KEY, cid TEXT NOT NULL, created_ms INTEGER NOT NULL,
  envelopes INTEGER NOT NULL, epoch TEXT NOT NULL  -- uint64 epoch id, as decimal text
) WITHOUT ROWID;
-- superseded roots whose pin/rm failed (IPFS down): retried at the start of each round
CREATE TABLE IF NOT EXISTS archive_unpins (cid TEXT PRIMARY KEY) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class SpaceMark:
    """What an archive of a space covers: its envelope count and its current key epoch."""

    envelopes: int
    epoch: int


@dataclass(frozen=True, slots=True)
class ArchiveRecord:
    """The latest archive of one space (what the relay advertises)."""

    cid: str
    created_ms: int
    envelopes: int
    epoch: int

    @property
    def mark(self) -> SpaceMark:
        return SpaceMark(self.envelopes, self.epoch)

    def as_dict(self) -> dict[str, Any]:
        return {"cid": self.cid, "created_ms": self.created_ms, "envelopes": self.envelopes}


def due(current: Mapping[bytes, SpaceMark], archived: Mapping[bytes, ArchiveRecord]
        ) -> list[bytes]:
    """Spaces needing a new archive: never archived (and not empty), new envelopes since
    the last archive, or a new key epoch. Unchanged spaces: none. Sorted, deterministic."""
    out = []
    for space, mark in sorted(current.items()):
        last = archived.get(space)
        if last is None:
            if mark.envelopes > 0:
                out.append(space)
        elif last.mark != mark:
            out.append(space)
    return out


def envelope_count(vector: VersionVector) -> int:
    """Envelopes held, from the version vector (chains are contiguous from seq 1)."""
    return sum(vector.values())


class ArchiveLedger:
    """Per space the latest archive, in the relay's own database (table ``archives``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        conn.executescript(DDL)

    def get(self, space: bytes) -> ArchiveRecord | None:
        row = self.conn.execute("SELECT cid, created_ms, envelopes, epoch FROM archives "
                                "WHERE space=?", (space,)).fetchone()
        return _record(row) if row is not None else None

    def all(self) -> dict[bytes, ArchiveRecord]:
        return {bytes(row[0]): _record(row[1:]) for row in self.conn.execute(
            "SELECT space, cid, created_ms, envelopes, epoch FROM archives")}

    def unpins(self) -> list[str]:
        return [c for (c,) in self.conn.execute("SELECT cid FROM archive_unpins ORDER BY cid")]

    def queue_unpin(self, cid: str) -> None:
        self.conn.execute("INSERT OR IGNORE INTO archive_unpins VALUES (?)", (cid,))

    def unpinned(self, cid: str) -> None:
        self.conn.execute("DELETE FROM archive_unpins WHERE cid=?", (cid,))

    def put(self, space: bytes, record: ArchiveRecord) -> None:
        self.conn.execute("INSERT OR REPLACE INTO archives VALUES (?, ?, ?, ?, ?)",
                          (space, record.cid, record.created_ms, record.envelopes,
                           str(record.epoch)))


def _record(row: Any) -> ArchiveRecord:
    cid, created_ms, envelopes, epoch = row
    return ArchiveRecord(str(cid), int(created_ms), int(envelopes), int(epoch))


def latest_archive(store: RelayStore, space: bytes) -> ArchiveRecord | None:
    """The advertised archive of ``space`` (None if never archived). Read-only: a relay
    that never ran the archiver has no ``archives`` table, which means "none"."""
    try:
        row = store.conn.execute("SELECT cid, created_ms, envelopes, epoch FROM archives "
                                 "WHERE space=?", (space,)).fetchone()
    except sqlite3.OperationalError:  # no such table
        return None
    return _record(row) if row is not None else None


class _Snapshot:
    """A :class:`~mycelium.sync.ports.DeltaStore` face over envelopes read beforehand, so
    the archive is built in a worker thread without touching the single-threaded store."""

    def __init__(self, envelopes: list[bytes]) -> None:
        self._envelopes = envelopes

    def envelopes_since(self, space: bytes, remote: VersionVector, *, limit: int,
                        max_bytes: int) -> list[bytes]:
        return self._envelopes


@dataclass
class RoundReport:
    """What one round did (logged; tests read it)."""

    archived: dict[bytes, str]
    unpinned: list[str]
    failed: dict[bytes, str]
    ipfs_down: str | None = None


class Archiver:
    """Driver of the relay's archives over one store, identity and IPFS API."""

    def __init__(self, store: RelayStore, identity: Identity, ipfs_api: str, *,
                 wall_ms: Callable[[], int] | None = None, timeout_s: float = 60.0) -> None:
        self.store = store
        self.identity = identity
        self.ipfs_api = api_url(ipfs_api)  # a bad address is an error at start, not later
        self.timeout_s = timeout_s
        self.ledger = ArchiveLedger(store.conn)
        self._wall_ms = wall_ms if wall_ms is not None else (lambda: int(time.time() * 1000))
        self.rounds = 0

    def marks(self, spaces: list[bytes] | None = None) -> dict[bytes, SpaceMark]:
        """The current mark of every hosted space (or of ``spaces``)."""
        out = {}
        for space in self.store.space_ids() if spaces is None else spaces:
            state = self.store.space_state(space)
            out[space] = SpaceMark(envelope_count(self.store.version_vector(space)),
                                   state.current_epoch)
        return out

    async def round(self) -> RoundReport:
        """Archive every due space; stop at the first sign of a dead IPFS API (logged once)."""
        self.rounds += 1
        report = RoundReport({}, [], {})
        marks = self.marks()
        todo = due(marks, self.ledger.all())
        leftovers = self.ledger.unpins()
        if not todo and not leftovers:
            return report
        ipfs = IpfsClient(self.ipfs_api, timeout=self.timeout_s)
        try:
            for cid in leftovers:
                try:
                    await self._unpin(ipfs, cid, report)
                except IpfsUnavailable as exc:
                    report.ipfs_down = str(exc)
                    log.warning("archive round %d stopped: %s", self.rounds, exc)
                    return report
            for space in todo:
                try:
                    await self._archive(ipfs, space, report)
                except IpfsUnavailable as exc:
                    report.ipfs_down = str(exc)
                    log.warning("archive round %d stopped: %s", self.rounds, exc)
                    break
                except MyceliumError as exc:  # one bad space does not stop the others
                    report.failed[space] = exc.reason
                    log.warning("archive of space %s failed (%s): %s", space.hex()[:12],
                                exc.reason, exc)
        finally:
            ipfs.close()
        if report.archived:
            log.info("archive round %d: %d spaces archived, %d superseded unpinned",
                     self.rounds, len(report.archived), len(report.unpinned))
        return report

    async def _archive(self, ipfs: IpfsClient, space: bytes, report: RoundReport) -> None:
        # Snapshot and mark are read together (no await between): the mark recorded is
        # exactly what the archive holds, even if envelopes arrived since the round began.
        mark = self.marks([space])[space]
        state = self.store.space_state(space)
        members = sorted(state.members)  # personal space: its owner alone
        genesis = self.store.genesis(space)
        envelopes = self.store.envelopes_since(space, {}, limit=1 << 62, max_bytes=1 << 62)
        now = self._wall_ms()

        def push() -> Pushed:
            snapshot = cast(DeltaStore, _Snapshot(envelopes))  # reads envelopes_since only
            return push_envelopes(snapshot, space, genesis, signer=self.identity, ipfs=ipfs,
                                  members=members, now_ms=now)

        pushed = await trio.to_thread.run_sync(push)
        old = self.ledger.get(space)
        self.ledger.put(space, ArchiveRecord(pushed.cid, now, mark.envelopes, mark.epoch))
        report.archived[space] = pushed.cid
        if old is not None and old.cid != pushed.cid:  # only now that the new one is pinned
            self.ledger.queue_unpin(old.cid)  # durable before trying: retried if IPFS dies
            await self._unpin(ipfs, old.cid, report)

    async def _unpin(self, ipfs: IpfsClient, cid: str, report: RoundReport) -> None:
        """Unpin a superseded root. A refusal (e.g. not pinned any more) is final and
        logged; :class:`IpfsUnavailable` propagates and the CID stays queued."""
        try:
            await trio.to_thread.run_sync(ipfs.pin_rm, cid)
            report.unpinned.append(cid)
        except IpfsUnavailable:
            raise
        except MyceliumError as exc:
            log.warning("superseded archive %s not unpinned (%s): %s", cid, exc.reason, exc)
        self.ledger.unpinned(cid)


async def run_archiver(archiver: Archiver, every_s: float, *,
                       task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """A round now, then one every ``every_s`` seconds, until cancelled."""
    task_status.started()
    while True:
        try:
            await archiver.round()
        except MyceliumError as exc:  # e.g. a bad --ipfs-api: logged, the relay serves on
            log.warning("archive round %d failed (%s): %s", archiver.rounds, exc.reason, exc)
        except (OSError, sqlite3.Error, httpx.HTTPError) as exc:  # archives are best effort:
            log.warning("archive round %d failed: %s: %s",  # the relay keeps serving
                        archiver.rounds, type(exc).__name__, exc)
        await trio.sleep(every_s)

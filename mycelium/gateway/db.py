"""The gateway's durable state: inbox, outbox, custodial senders, links (SQLite, WAL, FULL).

Separate from Soil: these rows are the gateway's own bookkeeping (phone numbers, message
texts, delivery state) and never leave this machine; Soil holds only what the community
shares. Every method is one transaction. What is kept and for how long: docs/gateway.md.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mycelium.gateway.core import OutState, Reply
from mycelium.gateway.webhooks import Inbound, StatusUpdate

SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
  provider_id TEXT PRIMARY KEY, channel TEXT NOT NULL, sender TEXT NOT NULL,
  reply_to TEXT NOT NULL, business TEXT NOT NULL, business_number TEXT,
  text TEXT NOT NULL, name TEXT, timestamp_ms INTEGER NOT NULL, received_ms INTEGER NOT NULL,
  state TEXT NOT NULL DEFAULT 'received', intent TEXT, lang TEXT, listing TEXT);
CREATE INDEX IF NOT EXISTS inbox_state ON inbox(state, received_ms);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY, inbound TEXT NOT NULL UNIQUE, channel TEXT NOT NULL,
  business TEXT NOT NULL, recipient TEXT NOT NULL, body TEXT NOT NULL,
  state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_ms INTEGER NOT NULL,
  inbound_ms INTEGER NOT NULL, last_error TEXT, provider_id TEXT, sent_ms INTEGER);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_ms);
CREATE TABLE IF NOT EXISTS statuses (
  provider_id TEXT NOT NULL, status TEXT NOT NULL, recipient TEXT NOT NULL,
  timestamp_ms INTEGER NOT NULL, error TEXT, PRIMARY KEY (provider_id, status));
CREATE TABLE IF NOT EXISTS senders (
  sender TEXT PRIMARY KEY, pub BLOB NOT NULL UNIQUE, sealed BLOB NOT NULL,
  created_ms INTEGER NOT NULL, linked_did TEXT, retired_ms INTEGER);
CREATE TABLE IF NOT EXISTS listings (
  doc TEXT PRIMARY KEY, sender TEXT NOT NULL, inbound TEXT NOT NULL UNIQUE,
  channel TEXT NOT NULL, business_number TEXT, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS links (
  code TEXT PRIMARY KEY, sender TEXT NOT NULL, challenge BLOB NOT NULL,
  expires_ms INTEGER NOT NULL, done_did TEXT);
CREATE TABLE IF NOT EXISTS metrics (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True)
class InboxRow:
    message: Inbound
    received_ms: int
    state: str


@dataclass(frozen=True, slots=True)
class OutboxRow:
    reply: Reply
    inbound: str
    business: str
    recipient: str
    body: str


@dataclass(frozen=True, slots=True)
class SenderRow:
    sender: str
    pub: bytes
    sealed: bytes
    linked_did: str | None
    retired_ms: int | None


class GatewayDB:
    """Inbox, outbox and custody records. Use from one thread (the trio thread)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.executescript(SCHEMA)
        self._counts: Counter[str] = Counter()

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
            if self._counts:
                self.conn.executemany(
                    "INSERT INTO metrics VALUES (?, ?) "
                    "ON CONFLICT(name) DO UPDATE SET value=value+excluded.value",
                    list(self._counts.items()))
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        finally:
            self._counts.clear()

    def count(self, name: str, n: int = 1) -> None:
        """Add to a counter (written with the next transaction, or now if none is open)."""
        self._counts[name] += n
        if not self.conn.in_transaction:
            with self.tx():
                pass

    def metrics(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT name, value FROM metrics").fetchall())

    # -- inbox --------------------------------------------------------------------------
    def accept(self, messages: list[Inbound], statuses: list[StatusUpdate],
               now_ms: int) -> list[str]:
        """Store messages (deduplicated by provider id) and statuses; returns the new ids."""
        fresh = []
        with self.tx() as c:
            for m in messages:
                cur = c.execute(
                    "INSERT OR IGNORE INTO inbox (provider_id, channel, sender, reply_to, "
                    "business, business_number, text, name, timestamp_ms, received_ms) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (m.provider_id, m.channel, m.sender, m.reply_to, m.business,
                     m.business_number, m.text, m.name, m.timestamp_ms, now_ms))
                if cur.rowcount:
                    fresh.append(m.provider_id)
            for s in statuses:
                c.execute("INSERT OR IGNORE INTO statuses VALUES (?,?,?,?,?)",
                          (s.provider_id, s.status, s.recipient, s.timestamp_ms, s.error))
            self._counts["inbox.accepted"] += len(fresh)
            self._counts["inbox.duplicates"] += len(messages) - len(fresh)
            self._counts["statuses"] += len(statuses)
        return fresh

    def received(self, limit: int = 100) -> list[InboxRow]:
        """Messages accepted but not yet processed, oldest first."""
        rows = self.conn.execute(
            "SELECT * FROM inbox WHERE state='received' ORDER BY received_ms, provider_id "
            "LIMIT ?", (limit,)).fetchall()
        return [_inbox_row(r) for r in rows]

    def inbox_row(self, provider_id: str) -> dict[str, Any] | None:
        cur = self.conn.execute("SELECT * FROM inbox WHERE provider_id=?", (provider_id,))
        row = cur.fetchone()
        return None if row is None else dict(zip([d[0] for d in cur.description], row,
                                                 strict=True))

    def finish(self, message: Inbound, *, intent: str, lang: str, listing: str | None,
               reply: str, now_ms: int) -> None:
        """Mark processed, record the listing it made, and queue its one reply, atomically
        (``UNIQUE(inbound)`` in outbox and listings: a second call changes nothing)."""
        with self.tx() as c:
            c.execute("UPDATE inbox SET state='done', intent=?, lang=?, listing=? "
                      "WHERE provider_id=?", (intent, lang, listing, message.provider_id))
            if listing:
                c.execute("INSERT OR IGNORE INTO listings VALUES (?,?,?,?,?,?)",
                          (listing, message.sender, message.provider_id, message.channel,
                           message.business_number, now_ms))
            state = OutState.SENT.value if message.channel == "twilio" else OutState.PENDING.value
            c.execute("INSERT OR IGNORE INTO outbox (inbound, channel, business, recipient, "
                      "body, state, next_ms, inbound_ms, sent_ms) VALUES (?,?,?,?,?,?,?,?,?)",
                      (message.provider_id, message.channel, message.business,
                       message.reply_to, reply, state, now_ms, message.timestamp_ms or now_ms,
                       now_ms if state == "sent" else None))
            self._counts[f"intent.{intent}"] += 1

    def reply_for(self, provider_id: str) -> str | None:
        row = self.conn.execute("SELECT body FROM outbox WHERE inbound=?",
                                (provider_id,)).fetchone()
        return None if row is None else str(row[0])

    # -- outbox -------------------------------------------------------------------------
    def due(self, now_ms: int, limit: int = 50) -> list[OutboxRow]:
        rows = self.conn.execute(
            "SELECT id, channel, state, attempts, next_ms, inbound_ms, last_error, "
            "provider_id, inbound, business, recipient, body FROM outbox "
            "WHERE state='pending' AND next_ms<=? ORDER BY next_ms, id LIMIT ?",
            (now_ms, limit)).fetchall()
        return [OutboxRow(Reply(r[0], r[1], OutState(r[2]), r[3], r[4], r[5], r[6], r[7]),
                          r[8], r[9], r[10], r[11]) for r in rows]

    def next_due_ms(self) -> int | None:
        row = self.conn.execute("SELECT min(next_ms) FROM outbox WHERE state='pending'").fetchone()
        return None if row[0] is None else int(row[0])

    def settle(self, reply: Reply, now_ms: int) -> None:
        with self.tx() as c:
            c.execute("UPDATE outbox SET state=?, attempts=?, next_ms=?, last_error=?, "
                      "provider_id=?, sent_ms=? WHERE id=?",
                      (reply.state.value, reply.attempts, reply.next_ms, reply.last_error,
                       reply.provider_id, now_ms if reply.state is OutState.SENT else None,
                       reply.id))
            self._counts[f"outbox.{reply.state.value}"] += 1

    def outbox(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM outbox ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]

    # -- custody ------------------------------------------------------------------------
    def sender(self, sender: str) -> SenderRow | None:
        row = self.conn.execute("SELECT sender, pub, sealed, linked_did, retired_ms FROM senders "
                                "WHERE sender=?", (sender,)).fetchone()
        return None if row is None else SenderRow(row[0], bytes(row[1]), bytes(row[2]),
                                                  row[3], row[4])

    def add_sender(self, sender: str, pub: bytes, sealed: bytes, now_ms: int) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO senders VALUES (?,?,?,?,NULL,NULL)",
                      (sender, pub, sealed, now_ms))
            self._counts["custody.created"] += 1

    def sender_count(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM senders").fetchone()[0])

    def link_sender(self, sender: str, did: str, now_ms: int) -> None:
        with self.tx() as c:
            c.execute("UPDATE senders SET linked_did=?, retired_ms=? WHERE sender=?",
                      (did, now_ms, sender))

    # -- listings made here ------------------------------------------------------------
    def listing_meta(self, doc: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT sender, channel, business_number, created_ms "
                                "FROM listings WHERE doc=?", (doc,)).fetchone()
        if row is None:
            return None
        return {"sender": row[0], "channel": row[1], "business_number": row[2],
                "created_ms": row[3]}

    def listings_of(self, sender: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT doc FROM listings WHERE sender=? ORDER BY created_ms", (sender,))]

    # -- links --------------------------------------------------------------------------
    def add_link(self, code: str, sender: str, challenge: bytes, expires_ms: int) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO links VALUES (?,?,?,?,NULL)",
                      (code, sender, challenge, expires_ms))

    def link(self, code: str) -> tuple[str, bytes, int, str | None] | None:
        row = self.conn.execute("SELECT sender, challenge, expires_ms, done_did FROM links "
                                "WHERE code=?", (code,)).fetchone()
        return None if row is None else (row[0], bytes(row[1]), row[2], row[3])

    def finish_link(self, code: str, did: str) -> bool:
        """Mark the code used by ``did``; False if it was already used (single use)."""
        with self.tx() as c:
            cur = c.execute("UPDATE links SET done_did=? WHERE code=? AND done_did IS NULL",
                            (did, code))
        return cur.rowcount == 1


def _inbox_row(r: tuple[Any, ...]) -> InboxRow:
    (pid, channel, sender, reply_to, business, number, text, name, ts, received,
     state, *_rest) = r
    msg = Inbound(pid, channel, sender, reply_to, business, text, name, ts, number)
    return InboxRow(msg, received, state)

"""Every size and count limit of delta logs and documents, in one place (protocols/delta.md §8).

A peer that exceeds one of these gets a typed error with a reason (``oversized``,
``too_many_ops``, ``field_too_large`` …), never a crash and never unbounded memory.
"""

from __future__ import annotations

from mycelium.codec.frames import MAX_FRAME_BYTES as _FRAME
from mycelium.log.envelope import MAX_ENVELOPE_BYTES as _ENVELOPE

#: Largest sync frame (codec/frames.py); a frame carries a batch of envelopes.
MAX_FRAME_BYTES = _FRAME
#: Largest envelope (canonical CBOR bytes as received).
MAX_ENVELOPE_BYTES = _ENVELOPE
#: Largest decrypted payload: the envelope minus room for header, nonce, tag and signature.
MAX_PAYLOAD_BYTES = MAX_ENVELOPE_BYTES - 512
#: Operations in one delta payload.
MAX_OPS_PER_DELTA = 256
#: Collection name length (characters).
MAX_COLLECTION_CHARS = 64
#: Document id length (characters).
MAX_DOC_ID_CHARS = 128
#: Field name length (characters).
MAX_FIELD_NAME_CHARS = 64
#: Default upper bound of one text field value (characters); schemas may lower it.
MAX_TEXT_CHARS = 16_000
#: HLC ``node`` component (bytes).
MAX_HLC_NODE_BYTES = 32
#: HLC logical counter (per millisecond) before the clock refuses to tick.
MAX_HLC_COUNTER = 2**32 - 1
#: A remote HLC more than this far ahead of local wall time is refused (crdt/hlc.py).
MAX_CLOCK_DRIFT_MS = 5 * 60 * 1000
#: Envelopes handled in one ingest transaction (larger batches are split).
MAX_INGEST_BATCH = 5_000
#: Envelopes held ahead of a gap (or waiting for membership) per space.
MAX_PENDING_PER_SPACE = 10_000
#: Pending envelopes of one author the control log admits (member, former member, admin).
MAX_PENDING_PER_AUTHOR = 2_000
#: Pending envelopes of authors the control log does not know ("strangers"), per space:
#: a tenth of the space's room, so the rest stays for authors the log admits.
MAX_PENDING_STRANGERS = MAX_PENDING_PER_SPACE // 10
#: Pending envelopes of one stranger.
MAX_PENDING_PER_STRANGER = 64
#: A stranger's pending envelope is dropped after this long (sync brings it again if its
#: author is admitted later; pending rows are a cache, never the only copy).
PENDING_STRANGER_TTL_MS = 60 * 60 * 1000
#: Envelopes of one author whose content waits for the clock (``clock_drift``); beyond,
#: content dated that far ahead is kept in the chain but never applied.
MAX_DEFERRED_PER_AUTHOR = 1_000
#: Deferred rows retried in one transaction (the rest in the next ones).
MAX_RETRY_BATCH = 5_000
#: Highest ``seq`` a store can hold (SQLite integers are signed 64-bit); a chain can never
#: reach it, so larger ones are refused (``seq_too_large``) instead of parked.
MAX_STORED_SEQ = 2**63 - 1

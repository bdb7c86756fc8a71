"""How materialized documents are laid out at rest (protocols/delta.md §9).

Community spaces: plaintext document state, so fields can be indexed and queried (the
same content every member can read anyway). Personal spaces (diary, health): the
collection name and document id are replaced by keyed BLAKE2b hashes under the identity's
storage key, and the state is sealed with XChaCha20-Poly1305 under the same key with
``aad = space || coll_key || doc_key`` (so rows cannot be swapped). Nothing readable about
personal content reaches the database or its WAL.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from mycelium import accel
from mycelium.codec import cbor
from mycelium.crdt.doc import DocState
from mycelium.crypto import aead
from mycelium.errors import MyceliumError


class AtRestError(MyceliumError):
    reason = "bad_stored_doc"


@dataclass(frozen=True, slots=True)
class DocCodec:
    """Row keys and bodies of one space; ``storage_key`` set means encrypted at rest."""

    space: bytes
    storage_key: bytes | None = None

    @property
    def sealed(self) -> bool:
        return self.storage_key is not None

    def coll_key(self, coll: str) -> str:
        return coll if self.storage_key is None else self._hash(b"c", coll)

    def doc_key(self, coll: str, doc: str) -> str:
        return doc if self.storage_key is None else self._hash(b"d", coll + "\0" + doc)

    def row_keys(self, coll: str, doc: str) -> tuple[str, str]:
        """``(coll_key, doc_key)`` of a document's row."""
        if self.storage_key is None:  # the common case, without two calls per row
            return coll, doc
        return self.coll_key(coll), self.doc_key(coll, doc)

    def seal(self, coll: str, doc: str, state: DocState) -> bytes:
        body = state.encode()
        if self.storage_key is None:
            return body
        nonce = aead.new_nonce()
        inner = cbor.encode({"id": doc, "s": body})
        return nonce + aead.encrypt(self.storage_key, nonce, inner, self._aad(coll, doc))

    def row(self, coll: str, doc: str, state: DocState,
            indexed: frozenset[str]) -> tuple[bool, bytes, dict[str, Any] | None]:
        """``(live, body, indexed values)`` of a document row in one pass (values are None
        for sealed spaces, which keep no plaintext index); compiled when it can be."""
        if self.storage_key is None:
            compiled = accel.state_row
            if compiled is not None:
                done = compiled(state.fields, state.tomb, indexed)
                if done is not None:
                    return done
            return state.live, state.encode(), state.values_of(indexed)
        return state.live, self.seal(coll, doc, state), None

    def open_indexed(self, coll: str, doc: str, body: bytes,
                     indexed: frozenset[str]) -> tuple[DocState, dict[str, Any] | None]:
        """:meth:`open` plus the state's indexed values (None for sealed spaces)."""
        if self.storage_key is None:
            compiled = accel.load_state
            if compiled is not None:
                done = compiled(body, indexed)
                if done is not None:
                    return done
            state = DocState.decode(body)
            return state, state.values_of(indexed)
        return self.open(coll, doc, body), None

    def open(self, coll: str, doc: str, body: bytes) -> DocState:
        if self.storage_key is None:
            return DocState.decode(body)
        return DocState.decode(self.open_sealed(coll, doc, body)[1])

    def open_sealed(self, coll: str, doc: str | None, body: bytes,
                    doc_key: str | None = None) -> tuple[str, bytes]:
        """(doc id, state bytes) of a sealed row; ``doc`` may be unknown if ``doc_key`` given."""
        assert self.storage_key is not None
        key = doc_key if doc_key is not None else self.doc_key(coll, doc or "")
        nonce, ct = body[:aead.NONCE_BYTES], body[aead.NONCE_BYTES:]
        aad = self.space + self.coll_key(coll).encode() + key.encode()
        inner = cbor.decode(aead.decrypt(self.storage_key, nonce, ct, aad))
        if not isinstance(inner, dict) or not isinstance(inner.get("id"), str):
            raise AtRestError("sealed document row is malformed")
        return inner["id"], inner["s"]

    def _aad(self, coll: str, doc: str) -> bytes:
        return self.space + self.coll_key(coll).encode() + self.doc_key(coll, doc).encode()

    def _hash(self, tag: bytes, text: str) -> str:
        assert self.storage_key is not None
        h = hashlib.blake2b(tag + self.space + text.encode(), key=self.storage_key, digest_size=16)
        return h.hexdigest()

"""Valid arguments for every compiled function (``accel._NAMES``), built from real
envelopes, payloads and document states, for the out-of-memory sweep and the
differential fuzzer (docs/accel.md). Each factory builds fresh objects on every call,
since some compiled functions write into their arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.crdt.doc import DocState
from mycelium.crdt.hlc import Timestamp
from mycelium.crdt.payload import Payload, set_fields
from mycelium.log.envelope import Envelope, seal
from mycelium.store.subscriptions import Change

SIGNER = Ed25519PrivateKey.from_private_bytes(b"\x07" * 32)
AUTHOR = SIGNER.public_key().public_bytes_raw()
SPACE = b"\x03" * 32
KEY = b"\x42" * 32
EPOCH = 7
MAX_WALL = 10**12
INDEXED = frozenset({"status", "location"})
#: A compiled schema table of our own (the C check reads only this table), with a text
#: field long enough that a payload outgrows open_one's 4 KiB stack buffer.
SCHEMA = {"notes": {"title": (0, 100, None, None, None), "body": (0, 16_000, None, None, None),
                    "status": (0, 20, None, None, frozenset({"open", "done"})),
                    "location": (0, 20, None, None, None), "count": (1, None, 0, 10**6, None)}}


def payload(n: int, *, big: bool = False) -> Payload:
    fields: dict[str, Any] = {"title": f"t{n}", "status": "open" if n % 2 else "done",
                              "location": "north", "count": n}
    if big:
        fields["body"] = "x" * 5000  # plaintext > 4096 bytes: the heap buffer of open_one
    return set_fields("notes", f"d{n % 3}", fields, Timestamp(1_000 + n, 0, b"node"))


def chain(n: int, *, big_at: int | None = None) -> list[Envelope]:
    """One author's linked run of n DATA envelopes (seq 1..n)."""
    out: list[Envelope] = []
    prev = None
    for seq in range(1, n + 1):
        env = seal(signer=SIGNER, space=SPACE, seq=seq, prev=prev, epoch=EPOCH,
                   payload=payload(seq, big=seq == big_at).encode(), group_key=KEY)
        out.append(env)
        prev = env.delta_id
    return out


_RUN = chain(4, big_at=2)
_STATE = DocState({"title": [5, 0, "6e", "01" * 32, False, "tomatoes"],
                   "status": [6, 1, "6e", "01" * 32, False, "open"],
                   "location": [7, 0, "6e", "02" * 32, True, None]}, None)
_BODY = _STATE.encode()


def _state() -> DocState:
    return DocState({k: list(v) for k, v in _STATE.fields.items()}, None)


def _opened() -> list[tuple[Envelope, Payload, tuple[str, str]]]:
    out = []
    for env in _RUN:
        p = payload(env.seq, big=env.seq == 2)
        out.append((env, p, (p.coll, p.doc)))
    return out


def _docs() -> dict[tuple[str, str], DocState]:
    return {("notes", f"d{i}"): _state() for i in range(3)}


def _merge_fallback(docs: dict[tuple[str, str], DocState]) -> Callable[[Envelope, Payload], None]:
    def fallback(env: Envelope, p: Payload) -> None:
        docs[(p.coll, p.doc)]._apply(p, env.author)
    return fallback


def _merge_all_args() -> tuple[Any, ...]:
    docs = _docs()
    return _opened(), docs, {}, _merge_fallback(docs)


def _doc_rows_args() -> tuple[Any, ...]:
    docs = _docs()
    dirty = {key: b"\x09" * 32 for key in docs}
    return SPACE, dirty, docs, {}, {"notes": INDEXED}, Change


def _load_rows_args() -> tuple[Any, ...]:
    wanted = {"d0": ("notes", "d0"), "d1": ("notes", "d1")}
    return [("d0", _BODY), ("d1", b"\xa0")], wanted, INDEXED, {}, {}


#: name -> (factory of fresh arguments, whether the function leaves its arguments alone)
ARGS: dict[str, tuple[Callable[[], tuple[Any, ...]], bool]] = {
    "decode_envelope": (lambda: (_RUN[1].raw,), True),
    "open_payload": (lambda: (_RUN[1].raw, KEY, SCHEMA, MAX_WALL), True),
    "lww_apply": (lambda: (_state().fields, payload(9), AUTHOR), False),
    "load_state": (lambda: (_BODY, INDEXED), True),
    "state_row": (lambda: (_state().fields, None, INDEXED), True),
    "chain_runs": (lambda: ([e.raw for e in _RUN], SPACE, {}), True),
    "doc_rows": (_doc_rows_args, False),
    "open_all": (lambda: (list(_RUN), {EPOCH: KEY}, SCHEMA, MAX_WALL), True),
    "merge_all": (_merge_all_args, False),
    "load_rows": (_load_rows_args, False),
    "fill_empty": (lambda: ({"d0": ("notes", "d0"), "d9": ("notes", "d9")},
                            {("notes", "d0"): _state()}, {}, {}), False),
}

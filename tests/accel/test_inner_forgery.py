"""Forged envelopes inside a linked run, on the Python and the compiled path (issue 17 §4).

A run of one author's envelopes is authenticated by its newest signature plus the prev
chain (protocols/delta.md §6). When that signature fails, every envelope of the run must
be checked on its own: a fallback that let the earlier envelopes through unchecked would
accept an attacker's rewrite of an author's history from any point. The attacker here
is a member who knows the group key (so the ciphertext opens and the payload is valid)
but not the author's signing key: each forged envelope continues the author's real chain
from envelope k, signed with the attacker's key.

Cases: the forgery starts at every position of the run (only the newest was forged in
the older test), with and without the author's genuine continuation (a valid newest
envelope that no longer links) in the same batch; checked on the verdict of
validate_batch and end to end through Soil.ingest (documents, rejections), compiled path
on and off. ``test_a_broken_fallback_is_caught`` runs the same checks against a
deliberately broken fallback and requires them to fail.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium import accel
from mycelium.crdt.hlc import Timestamp
from mycelium.crdt.payload import set_fields
from mycelium.crypto import aead
from mycelium.log import validate
from mycelium.log.envelope import Envelope, Kind
from mycelium.spaces import service
from tests.accel.stores import both_paths, python_path
from tests.store.conftest import A, B, Clock, D, did, open_soil

ATTACKER = Ed25519PrivateKey.from_private_bytes(b"\x66" * 32)
RUN = 5


def forge(genuine: Envelope, prev: bytes | None, key: bytes, title: str) -> Envelope:
    """genuine's position in its author's chain (after ``prev``), with the attacker's
    payload, encrypted under the real group key, signed with the attacker's key."""
    body = set_fields("products", "p1", {"title": title},
                      Timestamp(1_000_400, 0, b"attacker")).encode()  # wins LWW
    draft = replace(genuine, prev=prev, nonce=aead.new_nonce(), ct=b"", sig=b"", raw=b"")
    draft = replace(draft, ct=aead.encrypt(key, draft.nonce, body, draft.aad()))
    signed = replace(draft, sig=ATTACKER.sign(draft.signing_input()))
    return replace(signed, raw=signed.encode())


def forge_from(run: list[Envelope], k: int, key: bytes) -> list[Envelope]:
    """run with envelopes k.. (0-based) replaced by a forged continuation of run[:k]."""
    out = list(run[:k])
    prev = run[k - 1].delta_id if k else run[0].prev
    for genuine in run[k:]:
        env = forge(genuine, prev, key, f"forged-{genuine.seq}")
        out.append(env)
        prev = env.delta_id
    return out


@pytest.fixture(scope="module")
def market() -> Iterator[dict[str, Any]]:
    """A market space in which B wrote RUN products updates; D receives them."""
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        a = open_soil(tmp / "a.db", A, Clock(1_000_000))
        b = open_soil(tmp / "b.db", B, Clock(1_000_000))
        space = service.create_space(a, "market")
        service.join(b, service.invite(a, space, did(B)))
        service.invite(a, space, did(D))
        everything = a.envelopes_since(space, {}, limit=1000, max_bytes=1 << 24)
        b.ingest(space, everything)
        writes = [b.put_doc(space, "products", "p1", {"title": f"honest-{i}"})
                  for i in range(RUN)]
        key = b.space_state(space).epoch_key(writes[0].epoch, B)
        before = [raw for raw in b.envelopes_since(space, {}, limit=1000, max_bytes=1 << 24)
                  if raw not in {w.raw for w in writes}]
        yield {"space": space, "genesis": a.genesis(space), "before": before,
               "run": writes, "key": key}
        a.close()
        b.close()


def _paths() -> list[Any]:
    return [pytest.param(nullcontext, id="compiled"), pytest.param(python_path, id="python")]


def _check_verdict(run: list[Envelope], batch: list[Envelope], k: int,
                   path: Callable[[], AbstractContextManager[Any]]) -> None:
    space = run[0].space
    head = run[0].seq - 1
    prior = run[0].prev
    heads: dict[bytes, Any] = {run[0].author: (head, prior)} if head else {}
    with path():
        verdict = validate.validate_batch(space, [e.raw for e in batch], heads,
                                          lambda a, s: None)
    forged = [e.delta_id for e in batch[k:RUN]]
    assert [e.delta_id for e in verdict.ready] == [e.delta_id for e in run[:k]]
    assert sorted(verdict.rejected) == sorted((f, "bad_signature") for f in forged)
    genuine_tail = {e.delta_id for e in batch[RUN:]}  # ahead of the gap the forgery leaves
    assert {e.delta_id for e in verdict.pending} == genuine_tail


@pytest.mark.parametrize("path", _paths())
@pytest.mark.parametrize("with_genuine_newest", [False, True])
@pytest.mark.parametrize("k", range(RUN))
def test_forged_run_is_refused_envelope_by_envelope(
        market: dict[str, Any], k: int, with_genuine_newest: bool,
        path: Callable[[], AbstractContextManager[Any]]) -> None:
    run: list[Envelope] = market["run"]
    batch = forge_from(run, k, market["key"])
    if with_genuine_newest:  # the author's real envelopes after the forged one's position
        batch += run[k + 1:]
    _check_verdict(run, batch, k, path)


def _check_store(market: dict[str, Any], k: int, with_genuine_newest: bool) -> None:
    run: list[Envelope] = market["run"]
    forged = forge_from(run, k, market["key"])
    genuine_tail = run[k + 1:] if with_genuine_newest else []
    batch = [*market["before"], *(e.raw for e in [*forged, *genuine_tail])]
    with tempfile.TemporaryDirectory() as d:
        compiled, python = both_paths(Path(d), market["genesis"], [batch], 1_000_500)
    assert compiled == python
    tables, _, results = compiled
    accepted, _, _, rejected = results[0]
    bad = {e.delta_id for e in forged[k:]}
    assert sorted(r for r in rejected if r[0] in bad) == sorted((f, "bad_signature") for f in bad)
    assert {e.delta_id for e in run[:k]} <= set(accepted)
    assert not bad & set(accepted)
    assert b"forged-" not in b"".join(bytes(row[-1]) for row in tables["docs"])


@pytest.mark.parametrize("with_genuine_newest", [False, True])
@pytest.mark.parametrize("k", [0, 2, RUN - 2])
def test_forged_inner_envelopes_never_reach_the_documents(
        market: dict[str, Any], k: int, with_genuine_newest: bool) -> None:
    """End to end: Soil.ingest of the forged history (and maybe the genuine envelopes
    behind it) on both paths: identical stores, the honest prefix applied, every forged
    envelope rejected as bad_signature, no forged value in any document row."""
    _check_store(market, k, with_genuine_newest)


def _broken_verify_run(run: Any) -> tuple[list[Envelope], list[Envelope]]:
    """The bug this file exists for: the newest checked, the rest taken unchecked."""
    try:
        run[-1].verify_signature()
        return list(run), []
    except validate.BadSignature:
        return list(run[:-1]), [run[-1]]


@pytest.mark.parametrize("path", _paths())
def test_a_broken_fallback_is_caught(market: dict[str, Any], monkeypatch: pytest.MonkeyPatch,
                                     path: Callable[[], AbstractContextManager[Any]]) -> None:
    monkeypatch.setattr(validate, "verify_run", _broken_verify_run)
    run: list[Envelope] = market["run"]
    for k in range(RUN - 1):  # the forgery starts before the newest: an inner envelope
        with pytest.raises(AssertionError):
            _check_verdict(run, forge_from(run, k, market["key"]), k, path)
        with pytest.raises(AssertionError), path():
            _check_store(market, k, with_genuine_newest=False)
    # forging only the newest (the one case the older tests cover) does not notice it
    _check_verdict(run, forge_from(run, RUN - 1, market["key"]), RUN - 1, path)


def test_the_compiled_path_is_on_for_these_tests() -> None:
    if accel.disabled_reason == "disabled by MYCELIUM_NO_ACCEL":
        pytest.skip("disabled by MYCELIUM_NO_ACCEL: the 'compiled' cases ran on Python")
    assert accel.active(), accel.disabled_reason


def test_forgery_is_made_with_the_real_group_key(market: dict[str, Any]) -> None:
    """The forged envelopes are well-formed DATA envelopes that open: only the signature
    betrays them (so nothing but the signature check can stop them)."""
    from mycelium.crdt.payload import decode_payload

    forged = forge_from(market["run"], 1, market["key"])[1]
    assert forged.kind is Kind.DATA and forged.author == market["run"][1].author
    assert decode_payload(forged.open(market["key"])).ops[0].value == f"forged-{forged.seq}"
    with pytest.raises(validate.BadSignature):
        forged.verify_signature()

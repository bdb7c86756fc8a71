"""Authenticity is per chain (protocols/delta.md §6): an envelope whose own signature is
invalid but that a later, validly signed envelope of its author names through ``prev``
is authentic — the author vouched for its exact bytes. The outcome must not depend on how
the chain is cut into batches, nor on forged junk a third party appends to a batch, on
the Python path and on the compiled one (the relay store and Soil call the same
:func:`validate_batch`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.log.envelope import Envelope, seal
from mycelium.log.validate import Head, validate_batch, verify_run
from tests.accel.stores import python_path
from tests.log.test_validate import KEY, OTHER, SIGNER, SPACE, chain

PATHS = [pytest.param(nullcontext, id="compiled"), pytest.param(python_path, id="python")]


def _unsigned(env: Envelope) -> Envelope:
    """``env`` with its own signature broken (one bit of it flipped)."""
    bad = replace(env, sig=bytes([env.sig[0] ^ 1]) + env.sig[1:], raw=b"")
    return replace(bad, raw=bad.encode())


def vouched_chain() -> list[Envelope]:
    """1, 2 (own signature invalid), 3 (signed by the author over 2's id), 4."""
    one = chain(1)[0]
    two = _unsigned(chain(1, start=2, prev=one.delta_id)[0])
    return [one, two, *chain(2, start=3, prev=two.delta_id)]


def forged_after(env: Envelope) -> Envelope:
    """A third party's continuation of ``env`` (signed with another key)."""
    draft = seal(signer=OTHER, space=SPACE, seq=env.seq + 1, prev=env.delta_id, epoch=1,
                 payload=b"forged", group_key=KEY, nonce=bytes(24))
    forged = replace(draft, author=env.author, raw=b"")
    return replace(forged, raw=forged.encode())


def _signs(env: Envelope) -> bool:
    return verify_run([env])[0] == [env]


def sync(chain_: list[Envelope], cuts: list[int], junk: list[bool]) -> dict[int, bytes]:
    """Rounds of 'send what the receiver lacks after its head', each cut after
    ``cuts[i]`` envelopes, with a forged continuation appended when ``junk[i]``; the
    receiver's chain (seq -> delta id) when a round brings nothing new."""
    held: dict[int, bytes] = {}
    for i in range(40):
        head = max(held, default=0)
        lacking = chain_[head:]
        if not lacking:
            break
        n = cuts[i % len(cuts)]
        while n < len(lacking) and not _signs(lacking[n - 1]):
            n += 1  # the sender rule: a batch never ends on an envelope it cannot vouch for
        batch = lacking[:n]
        if junk[i % len(junk)]:
            batch = [*batch, forged_after(batch[-1])]
        heads: dict[bytes, Head] = {SIGNER.public_key().public_bytes_raw(): (head, held[head])} \
            if head else {}
        verdict = validate_batch(SPACE, [e.raw for e in batch], heads, lambda a, s: None)
        assert all(e.author == chain_[0].author for e in verdict.ready)
        if not verdict.ready:
            continue
        for env in verdict.ready:
            held[env.seq] = env.delta_id
    return held


def test_a_vouched_envelope_is_accepted_with_its_voucher() -> None:
    envs = vouched_chain()
    assert verify_run(envs) == (envs, [])
    good, bad = verify_run([*envs, forged_after(envs[-1])])
    assert good == envs and len(bad) == 1  # junk after the run does not unvouch it


@pytest.mark.parametrize("path", PATHS)
@settings(max_examples=60, deadline=None)
@given(cuts=st.lists(st.integers(1, 4), min_size=1, max_size=6),
       junk=st.lists(st.booleans(), min_size=1, max_size=6))
def test_outcome_does_not_depend_on_batching_or_junk(
        path: Callable[[], AbstractContextManager[Any]], cuts: list[int],
        junk: list[bool]) -> None:
    envs = vouched_chain()
    with path():
        held = sync(envs, cuts, junk)
    assert held == {e.seq: e.delta_id for e in envs}

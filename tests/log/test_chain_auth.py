"""Authenticity is per chain (protocols/delta.md §6): an envelope whose own signature is
invalid but that a later, validly signed envelope of its author names through ``prev``
is authentic — the author vouched for its exact bytes. The outcome must not depend on how
the chain is cut into batches, nor on forged junk a third party appends to a batch, on
the Python path and on the compiled one (the relay store and Soil call the same
:func:`validate_batch`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mycelium.crypto import aead
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Envelope, Kind, decode, seal
from mycelium.log.validate import Head, authentic_ids, validate_batch, verify_run
from mycelium.relay.link import registration_envelopes
from mycelium.relay.store import RelayStore
from mycelium.spaces import delegation, service
from mycelium.store.soil import Soil
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


# -- through real stores: Soil and the relay store, as senders and receivers ------------
LISTING = {"title": "tomatoes", "quantity": 5.0, "unit": "kg", "status": "available"}


@pytest.fixture(scope="module")
def vouched_market(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A space whose custodial key S wrote: certificate, d2, d3 with its own signature
    broken, then d4, d5 re-signed by S over d3's id (S vouches for d3): what a malicious
    author can hand honest nodes."""
    tmp = tmp_path_factory.mktemp("vouched")
    admin, s = Identity.generate(), Identity.generate()
    with Soil.open(tmp / "a.db", admin) as soil_a:
        space = service.create_space(soil_a, "market")
        cert = delegation.issue(admin.signing_key, kind="custodial", space=space,
                                subject=s.public_key, issued_ms=0).payload()
        soil_a.append(space, Kind.CONTROL, cert, signer=s)
        writes = [soil_a.put_doc(space, "products", f"l{i}", LISTING, signer=s)
                  for i in range(4)]
        key = soil_a.space_state(space).epoch_key(writes[0].epoch, admin)
        assert key is not None
        mine = {w.delta_id for w in writes}
        base = [r for r in soil_a.envelopes_since(space, {}, limit=1000, max_bytes=1 << 26)
                if decode(r).delta_id not in mine]
        chain_ = [writes[0], _unsigned(writes[1])]
        for genuine in writes[2:]:  # re-linked and re-signed by S: it vouches for d3
            draft = replace(genuine, prev=chain_[-1].delta_id, ct=b"", sig=b"", raw=b"")
            plain = aead.decrypt(key, genuine.nonce, genuine.ct, genuine.aad())
            draft = replace(draft, ct=aead.encrypt(key, draft.nonce, plain, draft.aad()))
            signed = replace(draft, sig=s.signing_key.sign(draft.signing_input()))
            chain_.append(replace(signed, raw=signed.encode()))
        yield {"space": space, "genesis": soil_a.genesis(space), "base": base,
               "registration": registration_envelopes(soil_a, space),
               "admin": admin.public_key, "s": s.public_key,
               "vouched": [e.raw for e in chain_], "tmp": tmp}


def _soil(m: dict[str, Any], name: str) -> Soil:
    soil = Soil.open(m["tmp"] / f"{name}.db", Identity.generate())
    soil.add_space(m["genesis"])
    assert not soil.ingest(m["space"], m["base"]).rejected
    return soil


def _relay(m: dict[str, Any], name: str) -> RelayStore:
    relay = RelayStore.open(m["tmp"] / f"{name}.relay.db")
    relay.register(m["genesis"], m["registration"], m["admin"])
    assert not relay.ingest(m["space"], m["base"]).rejected
    return relay


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("sender_kind", ["soil", "relay"])
@pytest.mark.parametrize("receiver_kind", ["soil", "relay"])
def test_stores_agree_and_no_batch_ends_on_an_unsigned_envelope(
        vouched_market: dict[str, Any], path: Callable[[], AbstractContextManager[Any]],
        sender_kind: str, receiver_kind: str) -> None:
    m, space = vouched_market, vouched_market["space"]
    make: dict[str, Callable[[dict[str, Any], str], Any]] = {"soil": _soil, "relay": _relay}
    tag = f"{sender_kind}-{receiver_kind}-{path.__name__}"
    with path():
        sender = make[sender_kind](m, f"s-{tag}")
        result = sender.ingest(space, m["vouched"])  # one batch: the voucher comes with it
        assert len(result.accepted) == len(m["vouched"]) and not result.rejected
        for limit in range(1, len(m["vouched"]) + 1):
            receiver = make[receiver_kind](m, f"r-{tag}-{limit}")
            for _ in range(2 * len(m["vouched"])):  # sync rounds, bounded
                raws = sender.envelopes_since(space, receiver.version_vector(space),
                                              limit=limit, max_bytes=1 << 26)
                if not raws:
                    break
                rejected = receiver.ingest(space, raws).rejected
                assert not rejected, (limit, rejected)  # never a fatal bad_signature
            if limit > 1:  # room for the unsigned envelope and its voucher in one batch
                assert receiver.version_vector(space) == sender.version_vector(space)
            else:  # never sent alone: the receiver stays at d2 (delta.md §6, known limit)
                assert receiver.version_vector(space)[m["s"]] == 2
            receiver.close()
        sender.close()


def test_authentic_ids_use_the_same_rule() -> None:
    """For checks that see a whole set at once (an archive's control log): the same
    answer as validate_batch, in any order, with junk and another author mixed in."""
    envs = vouched_chain()
    junk = forged_after(envs[-1])
    other = chain(2, signer=OTHER)
    mixed = [junk, *other, *envs[::-1]]
    assert authentic_ids(mixed) == {e.delta_id for e in [*envs, *other]}
    assert authentic_ids(envs[:2]) == {envs[0].delta_id}  # d2's voucher is absent


def test_an_invite_with_a_forged_envelope_is_refused(tmp_path: Path) -> None:
    from mycelium.spaces.errors import BadInvite
    from mycelium.spaces.invite import decode_invite, encode_invite

    admin, guest = Identity.generate(), Identity.generate()
    with Soil.open(tmp_path / "a.db", admin) as soil_a, \
            Soil.open(tmp_path / "g.db", guest) as soil_g:
        space = service.create_space(soil_a, "market")
        inv = decode_invite(service.invite(soil_a, space, guest.did))
        newest = inv.envelopes[-1]  # the newest of its chain: nothing vouches for it
        forged = newest[:-1] + bytes([newest[-1] ^ 1])
        with pytest.raises(BadInvite):
            service.join(soil_g, encode_invite(inv.genesis, [*inv.envelopes[:-1], forged]))
        assert service.join(soil_g, encode_invite(inv.genesis, inv.envelopes)) == space

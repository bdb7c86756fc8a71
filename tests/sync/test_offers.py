"""Space offer tokens: match only shared spaces, fresh per session, bound to the peers."""

from __future__ import annotations

import os

from mycelium.sync.offers import initiator_token, match_offers, responder_token

INI, R, X = b"i" * 32, b"r" * 32, b"x" * 32
S1, S2, S3 = os.urandom(32), os.urandom(32), os.urandom(32)


def test_responder_matches_exactly_the_shared_spaces() -> None:
    salt = os.urandom(16)
    offers = [initiator_token(s, salt_i=salt, initiator=INI, responder=R) for s in (S1, S2)]
    assert match_offers(offers, [S2, S3], salt_i=salt, initiator=INI, responder=R) == {1: S2}
    assert match_offers(offers, [S3], salt_i=salt, initiator=INI, responder=R) == {}


def test_tokens_change_with_every_salt() -> None:
    tokens = {initiator_token(S1, salt_i=os.urandom(16), initiator=INI, responder=R)
              for _ in range(50)}
    assert len(tokens) == 50


def test_tokens_are_bound_to_both_peers_and_roles() -> None:
    salt, salt_r = os.urandom(16), os.urandom(16)
    t = initiator_token(S1, salt_i=salt, initiator=INI, responder=R)
    assert t != initiator_token(S1, salt_i=salt, initiator=X, responder=R)
    assert t != initiator_token(S1, salt_i=salt, initiator=INI, responder=X)
    assert t != initiator_token(S1, salt_i=salt, initiator=R, responder=INI)
    # a replayed offer aimed at another responder matches nothing there
    assert match_offers([t], [S1], salt_i=salt, initiator=INI, responder=X) == {}
    # an answer is not an echo of the offer and depends on the responder's salt
    answer = responder_token(S1, salt_i=salt, salt_r=salt_r, initiator=INI, responder=R)
    assert answer != t
    assert answer != responder_token(S1, salt_i=salt, salt_r=os.urandom(16), initiator=INI,
                                     responder=R)
    assert len(t) == len(answer) == 16

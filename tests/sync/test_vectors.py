"""The committed protocol vectors match the code, and decode as the spec says."""

from __future__ import annotations

import json

import pytest

from mycelium.codec import cbor
from mycelium.codec.frames import FrameDecoder
from mycelium.sync.gossip import decode_gossip, topic_for_space
from mycelium.sync.messages import Done, Envelopes, Hello, Vector, decode_message, encode_message
from mycelium.sync.offers import initiator_token, responder_token

from . import vectors


@pytest.mark.parametrize("name", sorted(vectors.build()))
def test_committed_vectors_are_current(name: str) -> None:
    committed = json.loads((vectors.OUT / name).read_text())
    assert committed == json.loads(json.dumps(vectors.build()[name]))


def test_frame_vectors_decode() -> None:
    data = json.loads((vectors.OUT / "sync-frames.json").read_text())
    for case in data["cases"]:
        frame = bytes.fromhex(case["frame_hex"])
        [payload] = FrameDecoder().feed(frame)
        assert payload.hex() == case["payload_hex"]
        msg = decode_message(payload)
        assert encode_message(msg) == payload
        assert vectors.jsonable(cbor.decode(payload)) == case["message"]


def test_offer_and_topic_vectors() -> None:
    data = json.loads((vectors.OUT / "sync-offers.json").read_text())
    for c in data["cases"]:
        h = {k: bytes.fromhex(v) for k, v in c.items()}
        assert initiator_token(h["space_id"], salt_i=h["salt_i"], initiator=h["initiator_id"],
                               responder=h["responder_id"]) == h["initiator_token"]
        assert responder_token(h["space_id"], salt_i=h["salt_i"], salt_r=h["salt_r"],
                               initiator=h["initiator_id"],
                               responder=h["responder_id"]) == h["responder_token"]
    topics = json.loads((vectors.OUT / "sync-topics.json").read_text())
    for c in topics["cases"]:
        assert topic_for_space(bytes.fromhex(c["space_id"])) == c["topic"]
    assert len(decode_gossip(bytes.fromhex(topics["gossip_message_hex"]))) == 1


def test_session_transcript_shape() -> None:
    data = json.loads((vectors.OUT / "sync-session.json").read_text())
    flights = [{side: [decode_message(bytes.fromhex(f)) for f in frames]
                for side, frames in fl.items()} for fl in data["flights"]]
    assert [type(m) for m in flights[0]["initiator"]] == [Hello, Vector]
    assert flights[0]["responder"] == []
    assert [type(m) for m in flights[1]["responder"]] == [Hello, Vector, Envelopes, Done]
    sent = flights[1]["responder"][2]
    assert [e.hex() for e in sent.envelopes] == data["responder_envelopes"]


def test_refused_vectors_are_refused_with_their_reason() -> None:
    from mycelium.sync.messages import ProtocolError

    data = json.loads((vectors.OUT / "sync-refused.json").read_text())
    assert data["cases"]
    for case in data["cases"]:
        with pytest.raises(ProtocolError) as info:
            decode_message(bytes.fromhex(case["payload"]))
        assert info.value.reason == case["reason"], case["name"]

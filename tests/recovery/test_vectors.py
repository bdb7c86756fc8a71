"""protocols/vectors/devices.json against the implementation (protocols/identity.md §8)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mycelium.codec import cbor
from mycelium.codec.frames import FrameDecoder
from mycelium.identity import devices
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Kind, seal
from mycelium.node import restore
from mycelium.spaces import delegation
from mycelium.store.soil import Soil

from .vectors_gen import PATH, RESTORE_PATH, build, build_restore

VEC = json.loads(PATH.read_text())


def test_file_is_what_the_generator_writes() -> None:
    assert build() == VEC


def test_device_keys() -> None:
    for case in VEC["device_keys"]:
        owner = Identity.from_seed(bytes.fromhex(case["seed_hex"]))
        dev = devices.device_identity(owner, bytes.fromhex(case["device_id_hex"]))
        assert dev.seed.hex() == case["device_seed_hex"]
        assert dev.public_key.hex() == case["device_pub_hex"] and dev.did == case["device_did"]


def test_certificate_opens_a_device_chain() -> None:
    case = VEC["certificate"]
    payload = bytes.fromhex(case["payload_hex"])
    cert = delegation.decode(payload)
    owner = Identity.from_seed(bytes.fromhex(case["identity_seed_hex"]))
    assert (cert.kind, cert.issuer, cert.subject.hex(), cert.space.hex(), cert.issued_ms) == (
        "device", owner.public_key, case["device_pub_hex"], case["space_hex"], case["issued_ms"])
    device = devices.device_identity(owner, bytes(16))
    space = bytes.fromhex(case["space_hex"])
    env = seal(signer=device.signing_key, space=space, seq=1, prev=None, epoch=0,
               payload=payload, group_key=None, kind=Kind.CONTROL)
    assert delegation.certificate_of(env, space) == cert


def test_pairing_macs() -> None:
    case = VEC["pairing"]
    code = case["code"]
    assert devices.normalize_code(code.lower()) == case["normalized"]
    request = bytes.fromhex(case["request_hex"])
    temp = Identity.from_seed(bytes.fromhex(case["temp_seed_hex"]))
    assert devices.read_request(request, code) == temp.public_key
    mac = devices._mac(code, devices.GRANT_DOMAIN, case["did"].encode(), temp.public_key,
                       bytes.fromhex(case["box_hex"]))
    assert mac.hex() == case["grant_mac_hex"]
    grant = devices.make_grant(Identity.from_seed(bytes(range(32))), request, code)
    assert devices.accept_grant(grant, code, temp.seed).did == case["did"]


RESTORE = json.loads(RESTORE_PATH.read_text())


def test_restore_file_is_what_the_generator_writes() -> None:
    assert build_restore() == RESTORE


def test_restore_answer_vector_decodes_and_adopts(tmp_path: Path) -> None:
    (payload,) = FrameDecoder().feed(bytes.fromhex(RESTORE["frame_hex"]))
    geneses = restore.decode_listing(payload)
    assert [g.hex() for g in geneses] == [RESTORE["genesis_hex"]]
    with Soil.open(tmp_path / "s.db", Identity.generate()) as soil:
        added = restore.adopt(soil, [*geneses, b"\x00junk", *geneses], "test")
        assert [a.hex() for a in added] == [RESTORE["space_id_hex"]]
        assert soil.member_spaces() == added  # offered while restoring


def test_restore_listing_names_only_the_askers_spaces(tmp_path: Path) -> None:
    from mycelium.spaces import service

    admin, member, stranger = Identity.generate(), Identity.generate(), Identity.generate()
    with Soil.open(tmp_path / "a.db", admin) as soil:
        market = service.create_space(soil, "market")
        service.create_space(soil, "other")
        service.invite(soil, market, member.did)
        listed = restore.decode_listing(restore.listing_for(soil, member.public_key))
        assert listed == [soil.genesis(market)]
        assert restore.decode_listing(restore.listing_for(soil, stranger.public_key)) == []
    for bad in (cbor.encode({"v": 1, "spaces": ["text"]}), cbor.encode([1]),
                cbor.encode({"v": 1, "spaces": [b""] * (restore.MAX_SPACES + 1)})):
        with pytest.raises(restore.BadListing):
            restore.decode_listing(bad)

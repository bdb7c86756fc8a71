"""The operations the web app added to ``node.ops`` (shared with CLI and control API),
on real stores: two identities, one community space, envelopes carried by hand."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from mycelium.errors import MyceliumError
from mycelium.identity import recovery
from mycelium.identity.identity import Identity
from mycelium.node.ops import LocalOps
from mycelium.spaces import service
from mycelium.store.soil import Soil


def carry(src: Soil, dst: Soil, space: bytes) -> None:
    """Everything ``src`` has of ``space`` that ``dst`` lacks (bounded)."""
    for _ in range(100):
        batch = src.envelopes_since(space, dst.version_vector(space), limit=500,
                                    max_bytes=1 << 22)
        if not batch or not dst.ingest(space, batch).accepted:
            return


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[LocalOps, LocalOps, bytes]]:
    alice, bob = Identity.from_seed(b"\x01" * 32), Identity.from_seed(b"\x02" * 32)
    a = Soil.open(tmp_path / "a.db", alice)
    b = Soil.open(tmp_path / "b.db", bob)
    for soil in (a, b):
        service.ensure_personal_space(soil)
    ops_a, ops_b = LocalOps(a), LocalOps(b)
    space = bytes.fromhex(ops_a.space_create("market")["space_id"])
    code = ops_a.space_invite("market", bob.did)["invite"]
    ops_b.space_join(code)
    carry(a, b, space)
    try:
        yield ops_a, ops_b, space
    finally:
        a.close()
        b.close()


def test_market_list_searches_and_filters_across_spaces(two: tuple) -> None:
    a, b, space = two
    a.listing_post("market", {"title": "Ripe tomatoes", "location": "Riverside",
                              "unit": "kg", "quantity": 5})
    b_made = b.listing_post("market", {"title": "Honey", "description": "wild flowers",
                                       "unit": "jar"})
    carry(b.soil, a.soil, space)
    every = a.market_list()["listings"]
    assert {d["title"] for d in every} == {"Ripe tomatoes", "Honey"}
    assert all(d["space_name"] == "market" and d["status"] == "available" for d in every)
    assert [d["title"] for d in a.market_list(q="FLOWER")["listings"]] == ["Honey"]
    assert [d["title"] for d in a.market_list(unit="kg")["listings"]] == ["Ripe tomatoes"]
    b.listing_update("market", b_made["doc_id"], {"status": "sold"})
    carry(b.soil, a.soil, space)
    assert [d["title"] for d in a.market_list(status="sold")["listings"]] == ["Honey"]
    assert a.market_list(space="personal")["listings"] == []  # not a community space


def test_listing_update_of_an_unknown_or_foreign_listing_is_refused(two: tuple) -> None:
    a, b, space = two
    with pytest.raises(MyceliumError) as err:
        a.listing_update("market", "nope", {"status": "sold"})
    assert err.value.reason == "unknown_doc"
    made = b.listing_post("market", {"title": "Bob's pears"})
    carry(b.soil, a.soil, space)
    with pytest.raises(MyceliumError) as err:
        a.listing_update("market", made["doc_id"], {"status": "sold"})
    assert err.value.reason == "not_author"


def test_space_show_lists_members_with_roles(two: tuple) -> None:
    a, b, _ = two
    members = a.space_show("market")["members"]
    assert members[0] == {"did": a.soil.identity.did, "role": "admin", "me": True}
    assert {"did": b.soil.identity.did, "role": "member", "me": False} in members


def test_guardians_setup_list_and_recovery_approval(two: tuple) -> None:
    a, b, space = two
    alice, bob = a.soil.identity.did, b.soil.identity.did
    with pytest.raises(MyceliumError):  # only members of the space can guard
        a.guardians_setup("market", 1, ["did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"])
    a.guardians_setup("market", 1, [bob])
    carry(a.soil, b.soil, space)
    (package,) = b.guardians_list()["packages"]
    assert package["owner"] == alice and package["i_guard"] and package["guardians"] == [bob]

    request, temp = recovery.start_recovery(alice)
    request_b64 = base64.b64encode(request).decode()
    checked = b.recovery_check(request_b64)
    assert checked["owner"] == alice
    with pytest.raises(MyceliumError) as err:
        b.recovery_approve("market", request_b64, "AAAA-AAA")
    assert err.value.reason == "code_mismatch"
    approved = b.recovery_approve("market", request_b64, checked["code"].lower())
    identity = recovery.finish(temp, [base64.b64decode(approved["approval_b64"])])
    assert identity.did == alice
    with pytest.raises(MyceliumError):
        b.recovery_check("not base64!")


def test_web_login_link_needs_the_running_web_app(two: tuple) -> None:
    a, _, _ = two
    with pytest.raises(MyceliumError) as err:
        a.web_login_link()
    assert err.value.reason == "web_not_running"

"""The issue's "done when", in real browsers on two real nodes: create a space, invite a
neighbour with a QR code, post a listing that appears live on the neighbour's open page
(both ways), write a private diary entry, set up guardians, and approve a recovery."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.web.conftest import signed_in
from tests.web.nodes import WebNode, artifacts_dir

LIVE_TIMEOUT_MS = 30_000

pytestmark = pytest.mark.slow


def open_live(page: Any, url: str) -> None:
    """Open a page and wait until its live-update stream is connected; mark the document
    so a reload would be noticed."""
    page.goto(url)
    page.wait_for_selector("body[data-live-ready='1']", timeout=LIVE_TIMEOUT_MS)
    page.evaluate("window.__notReloaded = true")


def still_same_document(page: Any) -> bool:
    return bool(page.evaluate("window.__notReloaded === true"))


def post_listing(page: Any, node: WebNode, title: str, **fields: str) -> None:
    page.goto(node.web_url + "/market/new")
    page.fill("#f-title", title)
    for name, value in fields.items():
        page.fill(f"#f-{name}", value)
    page.get_by_role("button", name="Post").click()
    page.wait_for_url("**/market?ok=posted")


def test_done_when_flow(browser: Any, pair: tuple[WebNode, WebNode], tmp_path: Path) -> None:
    alice, bob = pair
    pa, pb = signed_in(browser, alice), signed_in(browser, bob)

    # Alice creates a community space in her browser.
    pa.goto(alice.web_url + "/community")
    pa.fill("#f-name", "Riverside")
    pa.get_by_role("button", name="Create").click()
    pa.wait_for_url("**/community/*?ok=created")
    space_id = pa.url.split("/community/")[1].split("?")[0]

    # Bob reads his DID off his Community page; Alice invites it and gets a QR code.
    pb.goto(bob.web_url + "/community")
    bob_did = pb.locator("#my-did").inner_text().strip()
    assert bob_did == bob.did
    pa.fill("#f-did", bob_did)
    pa.get_by_role("button", name="Invite", exact=True).click()
    expect(pa.locator(".qr-box svg")).to_be_visible()
    code = pa.locator("#invite-code").input_value()
    pa.screenshot(path=str(artifacts_dir() / "flow-invite-qr.png"), full_page=True)

    # Bob joins by pasting the code.
    pb.fill("#f-code", code)
    pb.get_by_role("button", name="Join").click()
    pb.wait_for_url(f"**/community/{space_id}?ok=joined")

    # A listing posted on Alice's page appears on Bob's open market page, no reload.
    open_live(pb, bob.web_url + "/market")
    post_listing(pa, alice, "Tomatoes from Alice", quantity="5", unit="kg", price="3,50",
                 location="Riverside")
    expect(pb.get_by_role("heading", name="Tomatoes from Alice")).to_be_visible(
        timeout=LIVE_TIMEOUT_MS)
    assert still_same_document(pb)
    expect(pb.locator("#live-status")).to_have_text("1 listing")  # said to screen readers
    card = pb.locator("li.card", has=pb.get_by_role("heading", name="Tomatoes from Alice"))
    expect(card.locator(".price")).to_have_text("€3.50")  # "3,50" typed means 3.50
    pb.screenshot(path=str(artifacts_dir() / "flow-live-listing-on-b.png"), full_page=True)

    # And the other way round.
    open_live(pa, alice.web_url + "/market")
    post_listing(pb, bob, "Eggs from Bob", quantity="12")  # no unit: nothing printed for it
    expect(pa.get_by_role("heading", name="Eggs from Bob")).to_be_visible(
        timeout=LIVE_TIMEOUT_MS)
    assert still_same_document(pa)
    eggs = pa.locator("li.card", has=pa.get_by_role("heading", name="Eggs from Bob"))
    expect(eggs.locator(".meta").first).to_have_text("12")

    # Alice marks hers sold; Bob's open page follows.
    open_live(pb, bob.web_url + "/market")
    pa.goto(alice.web_url + "/market")
    card = pa.locator("li.card", has=pa.get_by_role("heading", name="Tomatoes from Alice"))
    card.get_by_role("button", name="Mark sold").click()
    pa.wait_for_url("**/market?ok=sold")
    bob_card = pb.locator("li.card", has=pb.get_by_role("heading", name="Tomatoes from Alice"))
    expect(bob_card.locator(".tag.st")).to_have_text("Sold", timeout=LIVE_TIMEOUT_MS)

    # Bob withdraws his eggs: they leave Alice's open market, and come back only when she
    # asks for withdrawn listings; Bob still sees his own (to make them available again).
    open_live(pa, alice.web_url + "/market")
    card = pb.locator("li.card", has=pb.get_by_role("heading", name="Eggs from Bob"))
    card.get_by_role("button", name="Withdraw").click()
    pb.wait_for_url("**/market?ok=withdrawn")
    expect(pb.get_by_role("heading", name="Eggs from Bob")).to_be_visible()
    expect(pa.get_by_role("heading", name="Eggs from Bob")).to_have_count(
        0, timeout=LIVE_TIMEOUT_MS)
    pa.goto(alice.web_url + "/market?status=withdrawn")
    expect(pa.get_by_role("heading", name="Eggs from Bob")).to_be_visible()

    # A private diary entry: on Alice's node only.
    pa.goto(alice.web_url + "/personal/diary/new")
    pa.fill("#f-title", "Seeds sown")
    pa.fill("#f-body", "Beans and squash in the north bed.")
    pa.get_by_role("button", name="Save").click()
    pa.wait_for_url("**/personal?ok=saved")
    expect(pa.get_by_role("link", name="Seeds sown", exact=True)).to_be_visible()
    assert bob.op("doc_list", space="personal", coll="diary")["docs"] == []

    # Alice sets up Bob as her guardian; Bob's page shows whom he guards.
    open_live(pb, bob.web_url + "/guardians")
    pa.goto(f"{alice.web_url}/guardians?space={space_id}")
    pa.get_by_label(bob.did).check()
    pa.fill("#f-threshold", "1")
    pa.get_by_role("button", name="Set up guardians").click()
    pa.wait_for_url("**/guardians?ok=setup")
    expect(pa.locator("#who")).to_contain_text(bob.did)
    expect(pb.locator("#who")).to_contain_text(alice.did, timeout=LIVE_TIMEOUT_MS)
    pa.screenshot(path=str(artifacts_dir() / "flow-guardians-set-up.png"), full_page=True)

    # A new device asks to recover Alice; Bob checks the short code, then approves.
    device = WebNode(tmp_path, "alice-new")
    device.home.mkdir(parents=True)
    started = device.cli_json("recover", "start", alice.did)
    request_b64 = base64.b64encode(Path(started["request"]).read_bytes()).decode()
    pb.goto(bob.web_url + "/guardians")
    pb.fill("#f-request", request_b64)
    pb.get_by_role("button", name="Check request").click()
    expect(pb.locator("main")).to_contain_text(alice.did)
    pb.fill("#f-code", "AAAA-AAA")
    pb.get_by_role("button", name="Approve").click()
    expect(pb.locator("#e-code")).to_contain_text("The code does not match")
    pb.fill("#f-code", started["code"])
    pb.get_by_role("button", name="Approve").click()
    approval = pb.locator("#approval").input_value()
    pb.screenshot(path=str(artifacts_dir() / "flow-guardian-approval.png"), full_page=True)
    assert pb.evaluate("document.documentElement.scrollWidth") <= 390  # long DIDs wrap
    approval_file = tmp_path / "approval.cbor"
    approval_file.write_bytes(base64.b64decode(approval))
    recovered = json.loads(device.cli("recover", "finish", str(approval_file), "--json"))
    assert recovered["did"] == alice.did
    pa.context.close()
    pb.context.close()

"""Sign-in, pairing, revocation and refusals, in a real Chromium against a real node."""

from __future__ import annotations

from typing import Any

import httpx
from playwright.sync_api import expect

from tests.web.conftest import signed_in
from tests.web.nodes import WebNode


def test_login_link_sets_strict_cookie_and_leaves_the_url(browser: Any, solo: WebNode) -> None:
    link = solo.login_url()
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(link)
    assert response is not None and response.status == 200
    page.wait_for_url("**/market")
    assert "token" not in page.url
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["referrer-policy"] == "same-origin"
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["value"] not in page.content()
    # The same link a second time (another browser) is refused.
    other = browser.new_context()
    again = other.new_page().goto(link)
    assert again is not None and again.status == 403
    context.close()
    other.close()


def test_pairing_and_revocation(browser: Any, solo: WebNode) -> None:
    first = signed_in(browser, solo)
    first.goto(solo.web_url + "/devices")
    first.get_by_role("button", name="Show a pairing code").click()
    assert first.locator(".qr-box svg").count() == 1
    link = first.locator("#pair-link").input_value()
    assert link.startswith(solo.web_url + "/login?token=")

    phone = browser.new_context(viewport={"width": 390, "height": 844})
    second = phone.new_page()
    second.goto(link)
    second.wait_for_url("**/market")
    expect(second.get_by_role("heading", name="Market")).to_be_visible()

    first.goto(solo.web_url + "/devices")
    rows = first.locator("ul.members > li")
    assert rows.count() >= 2
    other = rows.filter(has_not=first.locator("text=this device")).last
    other.get_by_role("button", name="Sign out").click()
    first.wait_for_url("**/devices?ok=revoked")

    response = second.goto(solo.web_url + "/market")
    assert response is not None and response.status == 401
    expect(second.get_by_role("heading", name="Sign in")).to_be_visible()
    first.context.close()
    phone.close()


def test_requests_without_session_or_with_wrong_csrf_are_refused(
    browser: Any, solo: WebNode
) -> None:
    before = solo.op("market_list")["listings"]
    spaces = solo.op("space_list")["spaces"]
    community = next(s for s in spaces if s["kind"] == "community")
    form = {"space": community["space_id"], "title": "Forged"}
    with httpx.Client(base_url=solo.web_url, follow_redirects=False, timeout=10) as client:
        assert client.get("/market").status_code == 401
        assert client.get("/events").status_code == 401
        assert client.post("/market/new", data=form).status_code == 401
        # A DNS-rebinding page would send its own host name.
        assert client.get("/market", headers={"Host": "evil.example:80"}).status_code == 421

    page = signed_in(browser, solo)
    api = page.context.request
    wrong = api.post(solo.web_url + "/market/new", form={**form, "csrf": "0" * 64},
                     max_redirects=0)
    assert wrong.status == 403
    missing = api.post(solo.web_url + "/market/new", form=form, max_redirects=0)
    assert missing.status == 403
    csrf = page.locator("input[name=csrf]").first.input_value()
    foreign = api.post(solo.web_url + "/market/new", form={**form, "csrf": csrf},
                       headers={"Origin": "http://evil.example"}, max_redirects=0)
    assert foreign.status == 403
    assert solo.op("market_list")["listings"] == before
    page.context.close()

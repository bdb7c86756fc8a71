"""Dates are rendered by the node in UTC inside ``<time datetime=…>`` and shown by
static/app.js in the browser's own time zone, in the page's language."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect

from tests.web.conftest import PHONE
from tests.web.nodes import WebNode

#: 2026-01-15 12:00 UTC: 09:00 in São Paulo (UTC-3, no daylight saving time since 2019).
NOON_UTC_MS = 1_768_478_400_000


def test_listing_date_is_shown_in_the_browsers_time_zone(browser: Any, solo: WebNode) -> None:
    solo.op("doc_put", space="market", coll="products", doc_id="tz-check", data={
        "title": "Squash for the time zone", "status": "available", "author": solo.did,
        "created_ms": NOON_UTC_MS})
    context = browser.new_context(viewport=PHONE, timezone_id="America/Sao_Paulo",
                                  locale="pt-BR")
    try:
        context.set_default_timeout(15_000)
        page = context.new_page()
        page.goto(solo.login_url())
        page.wait_for_url("**/market")
        assert page.locator("html").get_attribute("lang") == "pt"
        when = page.locator("li[data-doc='tz-check'] time")
        expect(when).to_have_attribute("datetime", "2026-01-15T12:00:00Z")
        expect(when).to_contain_text("09:00")  # localised by app.js
        assert "12:00" not in when.inner_text()
        title = when.get_attribute("title") or ""
        assert "12:00" in title and "UTC" in title  # the server's UTC rendering
        # Without the script (as the node sends it) the page says UTC explicitly.
        html = page.request.get(solo.web_url + "/market").text()
        assert "12:00" in html.split("tz-check", 1)[1].split("</time>", 1)[0]
    finally:
        context.close()

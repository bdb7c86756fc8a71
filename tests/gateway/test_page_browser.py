"""The public listing page in Debian's Chromium (Playwright 1.64, system executable):
it renders on a phone screen, passes axe-core, previews (Open Graph), and 404s politely."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.browser import PHONE
from tests.gateway.harness import (
    PUBLIC_URL,
    GatewayProcess,
    twilio_params,
    twilio_signature,
)


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """A running gateway process and the id of a listing made through Twilio."""
    home = tmp_path_factory.mktemp("gwpage")
    gw = GatewayProcess(home, "http://127.0.0.1:9")
    try:
        gw.start_sync()
        params = twilio_params("SMPAGE1", "vendo 3 manojos de albahaca a 2 euros")
        sig = twilio_signature(PUBLIC_URL + "/webhooks/twilio", params)
        answer = httpx.post(gw.url + "/webhooks/twilio", data=params,
                            headers={"X-Twilio-Signature": sig}, timeout=10)
        match = re.search(r"/p/([a-z2-7]+)", answer.text)
        assert answer.status_code == 200 and match, answer.text
        yield gw.url, match.group(1)
    finally:
        gw.stop()


def test_listing_page_renders_accessibly_on_a_phone(browser: Any, listed: tuple[str, str],
                                                    tmp_path: Path) -> None:
    from axe_playwright_python.sync_playwright import Axe

    url, doc = listed
    context = browser.new_context(viewport=PHONE, locale="es-ES",
                                  extra_http_headers={"Accept-Language": "es-ES,es;q=0.9"})
    page = context.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda req: failed.append(req.url))
    response = page.goto(f"{url}/p/{doc}")
    assert response is not None and response.status == 200
    assert page.locator("h1").inner_text() == "albahaca"
    assert page.get_attribute("html", "lang") == "es"
    facts = page.locator("dl.facts").inner_text()
    assert "3 manojo" in facts and "2.00 EUR" in facts
    og = page.locator('meta[property="og:title"]').get_attribute("content")
    assert og == "albahaca"
    assert page.locator('meta[property="og:url"]').get_attribute("content") == \
        f"{PUBLIC_URL}/p/{doc}"
    contact = page.get_by_role("link", name="Contactar por WhatsApp")
    href = contact.get_attribute("href") or ""
    assert href.startswith("https://wa.me/14155238886?text=") and "5511999990001" not in href
    # Rendered: the stylesheet applied (no CDN, nothing failed to load), nothing overflows
    # the phone's width, and the screenshot is a real page, not a blank one.
    assert failed == []
    color = page.evaluate("getComputedStyle(document.querySelector('.bar')).backgroundColor")
    assert color == "rgb(30, 107, 58)"
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    shot = page.screenshot(path=str(tmp_path / "listing.png"), full_page=True)
    assert len(shot) > 5_000 and len(set(shot[100:2000])) > 50
    violations = Axe().run(page).response["violations"]
    assert violations == [], [v["id"] for v in violations]
    context.close()


def test_unknown_listing_is_an_accessible_404(browser: Any, listed: tuple[str, str]) -> None:
    from axe_playwright_python.sync_playwright import Axe

    url, _ = listed
    page = browser.new_page(viewport=PHONE)
    response = page.goto(f"{url}/p/doesnotexist")
    assert response is not None and response.status == 404
    assert page.locator("h1").inner_text() == "Listing not found"
    assert Axe().run(page).response["violations"] == []
    page.close()

"""Every page: screenshots at phone and desktop widths, axe-core, keyboard only; forms
refuse bad input next to the field; the language switch and locale formats."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.web.conftest import DESKTOP, PHONE, signed_in
from tests.web.nodes import WebNode, artifacts_dir

SIGNED_IN_PAGES = ["/market", "/market/new", "/market/{space}/{listing}/edit", "/personal",
                   "/personal/diary/new", "/personal/diary/{note}",
                   "/personal/diary/{note}/delete", "/personal/health/new",
                   "/community", "/community/{space}", "/community/{space}/remove?did={did}",
                   "/guardians", "/node", "/devices", "/offline"]
FOCUSABLE = ("a[href], button, input:not([type=hidden]), select, textarea, summary, "
             "[tabindex]:not([tabindex='-1'])")


def community_id(node: WebNode) -> str:
    spaces = node.op("space_list")["spaces"]
    return str(next(s["space_id"] for s in spaces if s["kind"] == "community"))


@pytest.fixture(scope="module")
def page(browser: Any, solo: WebNode) -> Any:
    solo.op("listing_post", space="market", data={
        "title": "Tomatoes, ripe", "quantity": 5, "unit": "kg", "price": 350,
        "currency": "EUR", "location": "Riverside", "description": "From the garden."})
    solo.op("doc_create", space="personal", coll="diary",
            data={"title": "First frost", "body": "Covered the beds.", "date": "2026-12-01"})
    signed = signed_in(browser, solo)
    yield signed
    signed.context.close()


@pytest.mark.slow
def test_screenshots_axe_and_keyboard_on_every_page(page: Any, solo: WebNode) -> None:
    from axe_playwright_python.sync_playwright import Axe

    axe = Axe()
    out = artifacts_dir()
    problems: list[str] = []
    ids = {"space": community_id(solo), "did": solo.did,
           "listing": solo.op("market_list")["listings"][0]["_id"],
           "note": solo.op("doc_list", space="personal", coll="diary")["docs"][0]["_id"]}
    for template in SIGNED_IN_PAGES:
        path = template.format(**ids)
        response = page.goto(solo.web_url + path)
        assert response is not None and response.status == 200, path
        name = re.sub(r"[^a-z_]", "", template.strip("/").replace("/", "_").split("?")[0])
        for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
            page.set_viewport_size(viewport)
            page.screenshot(path=str(out / f"{name}-{label}.png"), full_page=True)
            # Nothing sticks out sideways on a phone (no horizontal scrolling).
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= viewport["width"], f"{path} is {wide}px wide at {label}"
        page.set_viewport_size(PHONE)
        violations = axe.run(page).response["violations"]
        for v in violations:
            if v["impact"] in ("serious", "critical"):
                problems.append(f"{path}: {v['id']} ({v['impact']}): "
                                f"{[n['target'] for n in v['nodes']][:3]}")
        unreached = keyboard_walk(page)
        assert not unreached, f"{path}: not reachable with Tab: {unreached}"
        if page.evaluate("document.querySelectorAll('details:not([open])').length"):
            # Folded sections (search and filters on a phone): their summary was reached
            # above and opens with Enter (native); what they hold must be reachable too.
            page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            unreached = keyboard_walk(page)
            assert not unreached, f"{path} unfolded: not reachable with Tab: {unreached}"
    assert not problems, "\n".join(problems)


def keyboard_walk(page: Any) -> list[str]:
    """Press Tab through the page; return the focusable elements never reached (and
    check each reached element shows a focus indicator)."""
    count = page.evaluate(
        """(sel) => { document.querySelectorAll('[data-kb]').forEach(
                        el => el.removeAttribute('data-kb'));
             let i = 0; for (const el of document.querySelectorAll(sel)) {
             if (el.disabled || !el.checkVisibility()) continue;
             el.setAttribute('data-kb', String(i++)); } return i; }""", FOCUSABLE)
    page.evaluate("document.activeElement && document.activeElement.blur()")
    reached: set[str] = set()
    for _ in range(count + 3):
        page.keyboard.press("Tab")
        info = page.evaluate(
            """() => { const el = document.activeElement; if (!el) return null;
                 const st = getComputedStyle(el);
                 return [el.getAttribute('data-kb'), st.outlineStyle,
                         el.outerHTML.slice(0, 80)]; }""")
        if info and info[0] is not None:
            reached.add(info[0])
            assert info[1] != "none", f"no visible focus on {info[2]}"
    listed = page.evaluate(
        """() => Array.from(document.querySelectorAll('[data-kb]'))
                 .map(el => [el.getAttribute('data-kb'), el.outerHTML.slice(0, 80)])""")
    return [html for key, html in listed if key not in reached]


def test_post_a_listing_with_the_keyboard_only(page: Any, solo: WebNode) -> None:
    page.goto(solo.web_url + "/market/new")
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "f-title":
            break
    page.keyboard.type("Honey, 1 jar")
    page.keyboard.press("Tab")
    page.keyboard.type("1")
    page.keyboard.press("Enter")
    page.wait_for_url("**/market?ok=posted")
    expect(page.get_by_role("heading", name="Honey, 1 jar")).to_be_visible()


@pytest.mark.parametrize(("field", "value", "message"), [
    ("title", "x" * 201, "At most 200 characters."),
    ("quantity", "lots", "Must be a number."),
    ("price", "-3", "Must be at least 0."),
    ("title", "", "Please fill in this field."),
    ("location", "y" * 129, "At most 128 characters."),
])
def test_bad_input_shows_next_to_the_field_and_changes_nothing(
    page: Any, solo: WebNode, field: str, value: str, message: str
) -> None:
    before = solo.op("market_list")["listings"]
    page.goto(solo.web_url + "/market/new")
    page.fill("#f-title", "Eggs")
    page.fill(f"#f-{field}", value)
    page.get_by_role("button", name="Post").click()
    error = page.locator(f"#e-{field}")
    assert error.inner_text() == "⚠ " + message or error.inner_text() == message
    assert page.locator(f"#f-{field}").get_attribute("aria-invalid") == "true"
    described = page.locator(f"#f-{field}").get_attribute("aria-describedby") or ""
    assert f"e-{field}" in described.split()
    assert page.locator(f"#f-{field}").input_value() == value  # what was typed stays
    assert solo.op("market_list")["listings"] == before


def test_unknown_space_is_refused_next_to_the_space_field(page: Any, solo: WebNode) -> None:
    before = solo.op("market_list")["listings"]
    page.goto(solo.web_url + "/market/new")
    page.evaluate("document.querySelector('#f-space option').value = 'ab'.repeat(32)")
    page.fill("#f-title", "Ghost listing")
    page.get_by_role("button", name="Post").click()
    assert "Choose one of your community spaces." in page.locator("#e-space").inner_text()
    assert solo.op("market_list")["listings"] == before


def test_spanish_with_locale_formats_and_translated_errors(page: Any, solo: WebNode) -> None:
    page.goto(solo.web_url + "/market")
    page.select_option("#lang-select", "es")
    page.get_by_role("button", name="Change", exact=True).click()
    expect(page.get_by_role("heading", name="Mercado")).to_be_visible()
    expect(page.locator("html")).to_have_attribute("lang", "es")
    assert "3,50\xa0€" in page.locator(".cards").inner_text()
    page.goto(solo.web_url + "/market/new")
    page.fill("#f-title", "Huevos")
    page.fill("#f-quantity", "muchos")
    page.get_by_role("button", name="Publicar").click()
    assert "Debe ser un número." in page.locator("#e-quantity").inner_text()
    page.select_option("#lang-select", "pt")
    page.get_by_role("button", name="Cambiar", exact=True).click()
    expect(page.get_by_role("heading", name="Publicar um anúncio")).to_be_visible()
    page.select_option("#lang-select", "en")
    page.get_by_role("button", name="Mudar", exact=True).click()
    expect(page.get_by_role("heading", name="Post a listing")).to_be_visible()


def test_pwa_shell_and_offline_page(page: Any, solo: WebNode) -> None:
    manifest = page.context.request.get(solo.web_url + "/manifest.webmanifest").json()
    assert manifest["start_url"] == "/market" and manifest["display"] == "standalone"
    assert {i["sizes"] for i in manifest["icons"]} >= {"192x192", "512x512"}
    page.goto(solo.web_url + "/market")
    ready = page.evaluate("""async () => { const reg = await navigator.serviceWorker.ready;
                              return !!reg.active; }""")
    assert ready
    cached = page.evaluate("""async () => { const c = await caches.open('mycelium-shell-v1');
                               return (await c.keys()).map(r => new URL(r.url).pathname); }""")
    assert "/offline" in cached and "/static/app.css" in cached
    offline = page.goto(solo.web_url + "/offline")
    assert offline is not None and offline.status == 200
    expect(page.get_by_role("heading", name="Node unreachable")).to_be_visible()


def test_signed_out_page_is_accessible_too(browser: Any, solo: WebNode) -> None:
    from axe_playwright_python.sync_playwright import Axe

    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    response = page.goto(solo.web_url + "/market")
    assert response is not None and response.status == 401
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.screenshot(path=str(artifacts_dir() / "signed_out-phone.png"), full_page=True)
    serious = [v["id"] for v in Axe().run(page).response["violations"]
               if v["impact"] in ("serious", "critical")]
    assert not serious
    assert not keyboard_walk(page)
    context.close()


def test_unknown_things_get_a_message_not_a_crash(page: Any, solo: WebNode) -> None:
    for path, status, text in [
        ("/market?space=nosuchspace", 200, "Unknown space."),
        ("/community/nosuchspace", 404, "Unknown space."),
        ("/market/nosuchspace/x/edit", 404, "This listing does not exist."),
        ("/personal/diary/nosuchnote", 404, "This note does not exist."),
        ("/personal/secrets/new", 404, "Page not found."),
        ("/guardians?space=nosuchspace", 200, "Set up your guardians"),
    ]:
        response = page.goto(solo.web_url + path)
        assert response is not None and response.status == status, path
        expect(page.locator("main")).to_contain_text(text)


def test_search_and_filters(page: Any, solo: WebNode) -> None:
    solo.op("listing_post", space="market", data={"title": "Quince jam", "unit": "jar",
                                                  "location": "Hilltop"})
    page.set_viewport_size(DESKTOP)
    page.goto(solo.web_url + "/market")
    page.fill("#q", "TOMAT")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("li.card h3")).to_have_text(["Tomatoes, ripe"])
    page.fill("#q", "")
    page.select_option("#fl", "Hilltop")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("li.card h3")).to_have_text(["Quince jam"])
    page.select_option("#fl", "")
    page.select_option("#fu", "kg")
    page.select_option("#fst", "sold")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("li.empty")).to_be_visible()
    assert "status=sold" in page.url
    page.set_viewport_size(PHONE)


def test_diary_entry_edit_and_delete_with_confirmation(page: Any, solo: WebNode) -> None:
    made = solo.op("doc_create", space="personal", coll="diary", data={"title": "Draft"})
    page.goto(solo.web_url + "/personal")
    page.get_by_role("link", name="Draft", exact=True).click()
    page.fill("#f-title", "Rain at last")
    page.get_by_role("button", name="Save").click()
    page.wait_for_url("**/personal?ok=saved")
    card = page.locator("li.card", has=page.get_by_role("link", name="Rain at last", exact=True))
    card.get_by_role("link", name="Delete").click()
    expect(page.get_by_role("heading", name="Delete a note")).to_be_visible()
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url("**/personal?ok=deleted")
    expect(page.get_by_role("link", name="Rain at last", exact=True)).to_have_count(0)
    assert solo.op("doc_get", space="personal", coll="diary", doc_id=made["doc_id"])["doc"] is None

"""The node page's gateway form (``gateway_link``, the op ``mycelium gateway link`` uses)
against the real ``mycelium gateway`` process: a refused code shows its reason next to the
code field in the page's language and links nothing; the saved gateway address turns the
market's shared listings into links to their public page ``<gateway>/p/<id>``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from simnet.backends.process import free_port
from tests.gateway.harness import GatewayProcess
from tests.web.conftest import signed_in
from tests.web.nodes import WebNode


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    home = tmp_path_factory.mktemp("gw")
    gw = GatewayProcess(Path(home), f"http://127.0.0.1:{free_port()}")  # no replies sent
    try:
        gw.start_sync()
        yield gw
    finally:
        gw.stop()


def test_wrong_code_is_refused_next_to_the_field(browser: Any, solo: WebNode,
                                                 gateway: GatewayProcess) -> None:
    page = signed_in(browser, solo)
    try:
        page.context.add_cookies([{"name": "mycelium_lang", "value": "es",
                                   "url": solo.web_url}])
        page.goto(solo.web_url + "/node")
        page.fill("#f-gateway_url", gateway.url)
        page.fill("#f-code", "AAAAAAAA")  # well formed, never issued
        page.click("button[value=link]")
        expect(page.locator("#e-code")).to_contain_text("Código desconocido")
        expect(page.locator("#f-code")).to_have_attribute("aria-invalid", "true")
        expect(page.locator("#f-gateway_url")).to_have_value(gateway.url)
        assert page.locator("#e-gateway_url").count() == 0
        page.fill("#f-code", "bad")  # refused before any request
        page.click("button[value=link]")
        expect(page.locator("#e-code")).to_contain_text("8 letras")
        page.fill("#f-gateway_url", f"http://127.0.0.1:{free_port()}")  # nothing listens
        page.fill("#f-code", "AAAAAAAA")
        page.click("button[value=link]")
        expect(page.locator("#e-gateway_url")).to_contain_text("No se puede contactar")
        # A POST without the session's CSRF token changes nothing.
        refused = page.request.post(solo.web_url + "/node/gateway",
                                    form={"gateway_url": gateway.url, "action": "save"})
        assert refused.status == 403
    finally:
        page.context.close()


def test_shared_listing_links_to_its_public_page(browser: Any, solo: WebNode,
                                                 gateway: GatewayProcess) -> None:
    shared = solo.op("listing_post", space="market", data={"title": "Shared basil",
                                                           "shared": True})
    solo.op("listing_post", space="market", data={"title": "Private sage"})
    page = signed_in(browser, solo)
    try:
        page.goto(solo.web_url + "/node")
        page.fill("#f-gateway_url", gateway.url + "/")
        page.click("button[value=save]")
        expect(page.locator("#gateway [role=status]")).to_be_visible()
        page.goto(solo.web_url + "/market")
        link = page.locator(f"li[data-doc='{shared['doc_id']}'] a.tag")
        expect(link).to_have_attribute("href", f"{gateway.url}/p/{shared['doc_id']}")
        private = page.locator("li.card", has_text="Private sage")
        assert private.locator("a.tag").count() == 0
    finally:
        page.context.close()

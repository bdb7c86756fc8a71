"""Fixtures of the web tests: Debian's Chromium through Playwright, real nodes on loopback.

Chromium is launched from /usr/bin/chromium (``playwright install`` is never used). A
missing browser fails the tests in CI (CI=true) and skips them elsewhere.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.nodes import WebNode

CHROMIUM = os.environ.get("MYCELIUM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        message = f"no Chromium at {CHROMIUM} (setup.sh installs Debian's chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WebNode, WebNode]]:
    """Two running nodes, B dialling A; A created the community space ``market``."""
    root = tmp_path_factory.mktemp("webnodes")
    a, b = WebNode(root, "alice"), WebNode(root, "bob")
    try:
        a.init()
        b.init()
        a.start()
        b.start(peers=[a.p2p_addr()])
        yield a, b
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def solo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebNode]:
    """One running node with a community space ``market``."""
    root = tmp_path_factory.mktemp("websolo")
    node = WebNode(root, "carol")
    try:
        node.init()
        node.cli("space", "create", "market")
        node.start()
        yield node
    finally:
        node.stop()


def signed_in(browser: Any, node: WebNode, viewport: dict[str, int] = PHONE) -> Any:
    """A fresh browser context signed in to ``node`` through a one-time login link."""
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.goto(node.login_url())
    page.wait_for_url("**/market")
    return page

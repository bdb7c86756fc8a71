"""Fixtures of the web tests: Debian's Chromium through Playwright, real nodes on loopback.

The browser is the session's shared Chromium (``tests/browser.py``, fixture in
``tests/conftest.py``): a missing browser fails the tests in CI and skips them elsewhere.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser import DESKTOP, PHONE
from tests.web.nodes import WebNode

__all__ = ["DESKTOP", "PHONE", "signed_in"]

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

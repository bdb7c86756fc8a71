"""How ``mycelium run`` serves the app: the default address, a second node on the same
computer, ``--web off``, and ``mycelium open`` when there is nothing to open."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from simnet.backends.process import mycelium_command, node_env
from tests.web.nodes import WebNode, wait_until


@pytest.mark.slow
def test_two_nodes_on_the_default_address_both_serve(tmp_path: Path) -> None:
    one, two = WebNode(tmp_path, "one"), WebNode(tmp_path, "two")
    try:
        for node in (one, two):
            node.init()
        one.start(web=None)
        two.start(web=None)  # 127.0.0.1:8737 is taken by now (or by someone else): falls back
        assert one.web_url != two.web_url
        for node in (one, two):
            assert httpx.get(node.web_url + "/offline", timeout=10).status_code == 200
            assert "web app http://127.0.0.1:" in node.log_path.read_text()
    finally:
        one.stop()
        two.stop()


def test_two_sockets_claiming_one_port_at_once_never_share_it() -> None:
    """Two nodes starting together both try the default address: the second must fall
    back at once, not bind it too (SO_REUSEADDR lets two sockets bind a port nobody
    listens on yet) and crash when hypercorn calls listen (seen in CI)."""
    from mycelium.web.server import _listening_socket
    from simnet.backends.process import free_port

    port = free_port()
    first = _listening_socket("127.0.0.1", port, fallback=True)
    second = _listening_socket("127.0.0.1", port, fallback=True)
    try:
        assert first.getsockname()[1] == port
        assert second.getsockname()[1] != port
        with socket.create_connection(("127.0.0.1", second.getsockname()[1]), timeout=5):
            pass  # already listening: nothing between the claim and hypercorn can take it
        with pytest.raises(OSError):
            _listening_socket("127.0.0.1", port, fallback=False).close()
    finally:
        first.close()
        second.close()


def test_web_off_and_open_without_a_node(tmp_path: Path) -> None:
    node = WebNode(tmp_path, "quiet")
    node.init()
    argv = [*mycelium_command(), "open", "--json", "--home", str(node.home)]
    idle = subprocess.run(argv, env=node_env(), capture_output=True, text=True, timeout=60)
    assert idle.returncode != 0 and idle.stdout == ""
    assert idle.stderr.strip().splitlines() == [
        "error: no node is running here: start it with `mycelium run`, then `mycelium open`"]
    try:
        node.start(web="off")
        off = subprocess.run(argv, env=node_env(), capture_output=True, text=True, timeout=60)
        assert off.returncode != 0 and "web app runs only" in off.stderr
        assert len(off.stderr.strip().splitlines()) == 1
    finally:
        node.stop()


@pytest.mark.slow
def test_signed_in_devices_survive_a_restart_and_revocation_sticks(tmp_path: Path) -> None:
    node = WebNode(tmp_path, "restart")
    node.init()
    try:
        node.start()
        login = httpx.get(node.login_url(), timeout=10)
        cookie = login.cookies["mycelium_session"]
        other = httpx.get(node.login_url(), timeout=10).cookies["mycelium_session"]
        node.stop()
        node.start()
        jar = {"mycelium_session": cookie}
        devices = httpx.get(node.web_url + "/devices", cookies=jar, timeout=10)
        assert devices.status_code == 200
        csrf = devices.text.split('name="csrf" value="')[1].split('"')[0]
        keys = [part.split('"')[0] for part in devices.text.split('name="session" value="')[1:]]
        assert len(keys) == 2
        for key in keys:  # sign out the other device
            if "this device" not in devices.text.split(key)[0].rsplit("<li>", 1)[-1]:
                revoked = httpx.post(node.web_url + "/devices/revoke", cookies=jar,
                                     data={"csrf": csrf, "session": key}, timeout=10)
                assert revoked.status_code == 303
        node.stop()
        node.start()
        assert httpx.get(node.web_url + "/market", cookies=jar, timeout=10).status_code == 200
        assert httpx.get(node.web_url + "/market", timeout=10,
                         cookies={"mycelium_session": other}).status_code == 401
        assert (node.home / "web-sessions.json").stat().st_mode & 0o077 == 0
        assert cookie not in (node.home / "web-sessions.json").read_text()
    finally:
        node.stop()


def test_lan_mode_pairs_phones_through_a_lan_address(browser: Any, tmp_path: Path) -> None:
    from mycelium.web.server import _lan_origin
    from tests.web.conftest import signed_in

    node = WebNode(tmp_path, "lan")
    node.init()
    try:
        node.start(web="0.0.0.0:0")
        assert node.web_url.startswith("http://127.0.0.1:")  # what this computer opens
        page = signed_in(browser, node)
        page.goto(node.web_url + "/devices")
        page.get_by_role("button", name="Show a pairing code").click()
        link = page.locator("#pair-link").input_value()
        port = node.web_url.rsplit(":", 1)[1]
        lan = _lan_origin(port)
        if lan is None:  # a machine with loopback only: the page says so
            assert link.startswith(node.web_url)
            expect(page.locator("main")).to_contain_text("a phone cannot use it")
        else:
            assert link.startswith(lan + "/login?token=")
        page.context.close()
    finally:
        node.stop()


@pytest.mark.slow
def test_node_unreachable_is_said_clearly(browser: Any, tmp_path: Path) -> None:
    from tests.web.conftest import signed_in

    node = WebNode(tmp_path, "away")
    node.init()
    try:
        node.start()
        page = signed_in(browser, node)
        page.wait_for_selector("body[data-live-ready='1']")
        # (polled from here: wait_for_function evaluates strings, which the CSP forbids)
        wait_until(lambda: page.evaluate("""async () => {
            const c = await caches.open('mycelium-shell-v1');
            return (await c.keys()).some(r => new URL(r.url).pathname === '/offline'); }"""),
            15, "the shell in the service worker's cache")
        # The worker controls this page (it claims open pages when it activates).
        wait_until(lambda: page.evaluate("navigator.serviceWorker.controller !== null"), 15,
                   "the service worker to control the page")
        market = node.web_url + "/market"
        node.stop()
        # The open page notices (its live stream breaks) and says so.
        expect(page.locator("#offline")).to_be_visible(timeout=15_000)
        expect(page.locator("#offline")).to_contain_text("The node is unreachable")
        # Opening the app again: the service worker answers with the shell's own page.
        page.goto(market)
        expect(page.get_by_role("heading", name="Node unreachable")).to_be_visible()
        page.context.close()
    finally:
        node.stop()


def test_a_malformed_web_address_is_a_one_line_error(tmp_path: Path) -> None:
    argv = [*mycelium_command(), "run", "--web", "localhost", "--home", str(tmp_path / "h")]
    done = subprocess.run(argv, env=node_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        "error: --web expects HOST:PORT, got 'localhost'"]

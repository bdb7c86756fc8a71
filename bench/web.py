"""The web app (issue 14): first page load, time to interactive, page weight, and how long a
neighbour's write takes to show on an open page next to how long it takes to reach the store.

Two real ``mycelium run`` nodes on loopback (B dials A; both in one community space), each
serving its web app; Debian's Chromium driven by Playwright (never ``playwright install``).

* **load**: Chromium's Navigation Timing for the market page of a signed-in browser, cold
  (first visit of a fresh browser context) and warm (service worker and cache in place):
  ``responseEnd`` (HTML received), ``domInteractive`` and ``domContentLoadedEventEnd``
  (scripts run: the page is interactive), ``loadEventEnd``, plus the time until the live
  stream is connected (``data-live-ready``).
* **weight**: uncompressed bytes of the market page and every asset it loads
  (``decodedBodySize``), the live stream excluded; target under 150 KB.
* **live**: a listing written on A (``doc_put`` through A's control API, the same operation
  the web form calls); the time until it is in B's store (B's SQLite read beside it) and the
  time until B's open market page shows it (a MutationObserver stamps the moment the card
  appears) — both measured in the same run for each write, reported side by side.

Numbers are reported, never asserted.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WEIGHT_TARGET_KB = 150
NAV_FIELDS = ("responseEnd", "domInteractive", "domContentLoadedEventEnd", "loadEventEnd")

_OBSERVE = """(docId) => { window.__benchSeen = new Promise((resolve) => {
  const seen = () => document.querySelector(`[data-doc="${docId}"]`);
  if (seen()) { resolve(performance.timeOrigin + performance.now()); return; }
  const obs = new MutationObserver(() => {
    if (seen()) { obs.disconnect(); resolve(performance.timeOrigin + performance.now()); }
  });
  obs.observe(document.body, {childList: true, subtree: true});
}); }"""


class _Node:
    """A node home, its process and its control API (kept small: the tests' helper lives
    in tests/web/nodes.py and bench modules do not import tests)."""

    def __init__(self, root: Path, name: str) -> None:
        from simnet.backends.process import mycelium_command, node_env

        self.home = root / name
        self.cmd = mycelium_command()
        self.env = node_env()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / f"{name}.log"

    def cli(self, *args: str) -> str:
        done = subprocess.run([*self.cmd, *args, "--home", str(self.home)], env=self.env,
                              capture_output=True, timeout=120, check=False,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise RuntimeError(f"mycelium {' '.join(args)}: {done.stderr.decode()[-300:]}")
        return done.stdout.decode()

    def start(self, peers: list[str]) -> None:
        args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--web", "127.0.0.1:0"]
        for peer in peers:
            args += ["--peer", peer]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([*self.cmd, *args, "--home", str(self.home)],
                                         env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.op("status").get("running"):
                    return
            except (OSError, ValueError, KeyError, httpx.HTTPError, RuntimeError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"node {self.home.name} did not start")

    def op(self, name: str, **args: Any) -> dict[str, Any]:
        info = json.loads((self.home / "api.json").read_text())
        resp = httpx.post(f"{info['url']}/v1/ops/{name}", json=args, timeout=10,
                          headers={"Authorization": f"Bearer {info['token']}"})
        if resp.status_code != 200:
            raise RuntimeError(resp.text)
        return dict(resp.json())

    def login_url(self) -> str:
        return str(json.loads(self.cli("open", "--json"))["url"])

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _navigation(page: Any) -> dict[str, float]:
    entry = page.evaluate("JSON.parse(JSON.stringify("
                          "performance.getEntriesByType('navigation')[0]))")
    return {k: round(float(entry[k]), 1) for k in NAV_FIELDS}


def _weight(page: Any) -> dict[str, Any]:
    entries = page.evaluate("""() => {
        const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource')
            .filter(r => !r.name.endsWith('/events'))
            .map(r => [new URL(r.name).pathname, r.decodedBodySize]);
        return [[new URL(nav.name).pathname, nav.decodedBodySize], ...res]; }""")
    files = {name: int(size) for name, size in entries}
    total = sum(files.values())
    return {"bytes": total, "kb": round(total / 1024, 1), "files": files,
            "target_kb": WEIGHT_TARGET_KB, "meets_target": total < WEIGHT_TARGET_KB * 1024}


def _load(browser: Any, node: _Node) -> dict[str, Any]:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    link = node.login_url()
    started = time.perf_counter()
    page.goto(link)
    page.wait_for_url("**/market")
    page.wait_for_selector("body[data-live-ready='1']", timeout=30_000)
    cold = {**_navigation(page), "live_ready_ms": round((time.perf_counter() - started) * 1000, 1)}
    weight = _weight(page)
    page.evaluate("navigator.serviceWorker.ready.then(() => true)")
    started = time.perf_counter()
    page.goto(page.url)
    page.wait_for_selector("body[data-live-ready='1']", timeout=30_000)
    warm = {**_navigation(page), "live_ready_ms": round((time.perf_counter() - started) * 1000, 1)}
    context.close()
    return {"cold": cold, "warm": warm, "weight": weight}


def _live(browser: Any, a: _Node, b: _Node, space: str, rounds: int) -> dict[str, Any]:
    context = browser.new_context()
    page = context.new_page()
    page.goto(b.login_url())
    page.wait_for_url("**/market")
    page.wait_for_selector("body[data-live-ready='1']", timeout=30_000)
    # B's store, read directly (SQLite WAL allows a reader beside the node): the moment
    # A's envelope is committed there, independent of the web app and of the control API.
    reader = sqlite3.connect(f"file:{b.home / 'soil.db'}?mode=ro", uri=True,
                             check_same_thread=False)

    def count() -> int:
        row = reader.execute("SELECT count(*) FROM envelopes WHERE space=?",
                             (bytes.fromhex(space),)).fetchone()
        return int(row[0])

    store_ms: list[float] = []
    render_ms: list[float] = []
    for i in range(rounds):
        doc_id = f"bench{i:03d}{int(time.time() * 1000) % 100000:05d}"
        page.evaluate(_OBSERVE, doc_id)  # a promise kept in the page, resolved on sight
        arrived: list[float] = []

        def poll_store(before: int, out: list[float] = arrived) -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if count() > before:
                    out.append(time.time() * 1000)
                    return
                time.sleep(0.0005)

        poller = threading.Thread(target=poll_store, args=(count(),))
        poller.start()
        written = time.time() * 1000
        a.op("doc_put", space=space, coll="products", doc_id=doc_id,
             data={"title": f"Bench listing {i}", "quantity": 1, "unit": "kg",
                   "status": "available"})
        shown = float(page.evaluate("window.__benchSeen"))
        poller.join(timeout=35)
        if arrived:
            store_ms.append(round(arrived[0] - written, 1))
        render_ms.append(round(shown - written, 1))
        time.sleep(0.3)  # let the page settle before the next write
    context.close()
    reader.close()

    def summary(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        return {"median": round(statistics.median(values), 1), "min": min(values),
                "max": max(values)}

    store, render = summary(store_ms), summary(render_ms)
    ratio = (round(render["median"] / store["median"], 2)
             if store.get("median") and render.get("median") else None)
    return {"rounds": rounds, "write_to_store_ms": store_ms, "write_to_render_ms": render_ms,
            "store": store, "render": render, "render_over_store": ratio}


def run(quick: bool) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    rounds = 3 if quick else 10
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        root = Path(tmp)
        a, b = _Node(root, "a"), _Node(root, "b")
        try:
            for node in (a, b):
                node.home.mkdir()
                node.cli("init", "--name", node.home.name)
            space = json.loads(a.cli("space", "create", "market", "--json"))["space_id"]
            b_did = json.loads(b.cli("id", "--json"))["did"]
            code = json.loads(a.cli("space", "invite", "market", b_did, "--json"))["invite"]
            b.cli("space", "join", code)
            a.start([])
            b.start([str(a.op("status")["listen"][0])])
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    load = _load(browser, a)
                    live = _live(browser, a, b, space, rounds)
                finally:
                    browser.close()
        finally:
            a.stop()
            b.stop()
    return {"name": "web", "quick": quick, **load, "live": live}


def markdown(result: dict[str, Any]) -> str:
    cold, warm, weight, live = result["cold"], result["warm"], result["weight"], result["live"]
    rows = "\n".join(
        f"| {k} | {cold[k]} | {warm[k]} |" for k in (*NAV_FIELDS, "live_ready_ms"))
    files = ", ".join(f"{name} {size / 1024:.1f}" for name, size in weight["files"].items())
    return (
        "### web (issue 14)\n\n"
        "Market page of a signed-in browser on loopback, Chromium's Navigation Timing (ms):\n\n"
        "| timing | cold | warm |\n|---|---|---|\n" + rows + "\n\n"
        f"Page weight (uncompressed): **{weight['kb']} KB** "
        f"(target < {weight['target_kb']} KB: {'met' if weight['meets_target'] else 'NOT met'})"
        f" — {files} KB\n\n"
        f"A write on node A, {live['rounds']} rounds (ms): in B's store median "
        f"{live['store'].get('median')} (min {live['store'].get('min')}, max "
        f"{live['store'].get('max')}); rendered on B's open page median "
        f"{live['render'].get('median')} (min {live['render'].get('min')}, max "
        f"{live['render'].get('max')}); render / store = {live['render_over_store']}\n"
    )

"""Debian's Chromium driven by Playwright (1.64, the system executable), for every suite.

One browser per test session, shared by the web app's and the gateway's tests: Playwright's
sync API refuses to start while another sync instance still runs its event loop, so two
fixtures of their own would depend on the order pytest runs the directories in.
``playwright install`` is never used (it downloads browsers from a host not reached here).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.ci import unavailable

CHROMIUM = os.environ.get("MYCELIUM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}


def launch_chromium() -> Iterator[Any]:
    """Yield a launched Chromium; skip locally and fail in CI when it is not installed."""
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (setup.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()

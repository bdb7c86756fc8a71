"""Real ``mycelium run`` processes for the browser tests (synchronous, bounded waits).

Playwright's sync API runs its own event loop, so these tests drive nodes with plain
subprocesses instead of trio (tests/integration/cluster.py is the trio twin).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from simnet.backends.process import mycelium_command, node_env

START_TIMEOUT_S = 60.0


class WebNode:
    """One node home, its ``mycelium run`` process (with the web app) and its CLI."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = name
        self.home = root / name
        self.log_path = root / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.did = ""
        self.web_url = ""

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        argv = [*mycelium_command(), *args, "--home", str(self.home)]
        done = subprocess.run(argv, env=node_env(), capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise AssertionError(f"{self.name}: mycelium {' '.join(args)} failed: "
                                 f"{done.stderr.decode(errors='replace')[-500:]}")
        return done.stdout.decode()

    def cli_json(self, *args: str) -> dict[str, Any]:
        data = json.loads(self.cli(*args, "--json"))
        assert isinstance(data, dict)
        return data

    def init(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.cli("init", "--name", self.name)
        self.did = self.cli_json("id")["did"]

    def start(self, peers: list[str] = (), web: str | None = "127.0.0.1:0") -> None:  # type: ignore[assignment]
        """Run the node (``web=None``: the default address) and wait until it answers."""
        args = ["run", "--listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns", "--api", "127.0.0.1:0"]
        if web is not None:
            args += ["--web", web]
        for peer in peers:
            args += ["--peer", peer]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen([*mycelium_command(), *args, "--home", str(self.home)],
                                     env=node_env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.log_tail()}")
            status = self._status()
            if status is not None and status.get("running"):
                if web != "off":
                    self.web_url = self.login_url().split("/login")[0]
                return
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not start: {self.log_tail()}")

    def _status(self) -> dict[str, Any] | None:
        try:
            info = json.loads((self.home / "api.json").read_text())
            resp = httpx.post(f"{info['url']}/v1/ops/status", json={}, timeout=5.0,
                              headers={"Authorization": f"Bearer {info['token']}"})
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return None
        return resp.json() if resp.status_code == 200 else None

    def op(self, name: str, **args: Any) -> dict[str, Any]:
        """One operation through the running node's control API."""
        info = json.loads((self.home / "api.json").read_text())
        resp = httpx.post(f"{info['url']}/v1/ops/{name}", json=args, timeout=15.0,
                          headers={"Authorization": f"Bearer {info['token']}"})
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    def status(self) -> dict[str, Any]:
        found = self._status()
        assert found is not None, self.log_tail()
        return found

    def p2p_addr(self) -> str:
        return str(self.status()["listen"][0])

    def login_url(self) -> str:
        return str(self.cli_json("open")["url"])

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def artifacts_dir() -> Path:
    """Where screenshots go (gitignored): test-artifacts/web/ at the repository root."""
    root = Path(__file__).resolve().parents[2]
    path = Path(os.environ.get("MYCELIUM_TEST_ARTIFACTS", root / "test-artifacts")) / "web"
    path.mkdir(parents=True, exist_ok=True)
    return path

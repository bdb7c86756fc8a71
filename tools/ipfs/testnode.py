"""Start and stop a real IPFS node (js-ipfs 0.66.1) on loopback, for tests and benchmarks.

Not shipped with Mycelium: users run Kubo (docs/archive.md). js-ipfs serves the same
Kubo RPC API (``/api/v0/...``) and runs from ``tools/ipfs/node_modules`` (``npm install``
in this folder; setup.sh does it). The node is isolated: a fresh repo in a temporary
``IPFS_PATH``, every address on 127.0.0.1 on free ports, no bootstrap peers, no mDNS, no
WebRTC star, no delegates, ``--offline`` and no preload, so it never talks to the
internet.

Usage::

    with JsIpfsNode.start(workdir) as node:
        node.api_url   # "http://127.0.0.1:PORT"
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

HERE = Path(__file__).resolve().parent
CLI = HERE / "node_modules" / "ipfs" / "src" / "cli.js"
#: Upper bounds for each step (measured: init ~3 s, daemon ready ~1.5 s on these machines).
INIT_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0


class IpfsNodeMissing(RuntimeError):
    """``tools/ipfs/node_modules`` (or ``node``) is not installed."""


class IpfsNodeFailed(RuntimeError):
    """The node did not initialise or become ready in time; the message holds its log."""


def installed() -> str | None:
    """None if the node can run here, else why not (one line)."""
    if shutil.which("node") is None:
        return "`node` (Node.js) is not on PATH"
    if not CLI.exists():
        return f"{CLI} is missing: run `npm install` in {HERE} (setup.sh does it)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class JsIpfsNode:
    """A running js-ipfs daemon; :meth:`stop` (or leaving the ``with`` block) ends it."""

    repo: Path
    api_port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def api_multiaddr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.api_port}"

    @classmethod
    def start(cls, workdir: Path) -> JsIpfsNode:
        """Init a repo under ``workdir`` and run the daemon until its API answers."""
        missing = installed()
        if missing is not None:
            raise IpfsNodeMissing(missing)
        repo = workdir / "ipfs-repo"
        log_path = workdir / "ipfs.log"
        env = {**os.environ, "IPFS_PATH": str(repo)}
        init = subprocess.run(["node", str(CLI), "init", "--empty-repo"], env=env,
                              capture_output=True, timeout=INIT_TIMEOUT_S, check=False)
        if init.returncode != 0:
            raise IpfsNodeFailed(f"ipfs init failed: {init.stderr.decode(errors='replace')}")
        api_port = free_port()
        _configure(repo / "config", api_port, free_port(), free_port())
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                ["node", str(CLI), "daemon", "--offline", "--enable-preload=false"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node = cls(repo=repo, api_port=api_port, process=process, log_path=log_path)
        try:
            node._wait_ready()
        except BaseException:
            node.stop()
            raise
        return node

    def _wait_ready(self) -> None:
        """Poll ``/api/v0/version`` (bounded) until it answers 200."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise IpfsNodeFailed(f"ipfs daemon exited ({self.process.returncode}):\n"
                                     f"{self.log_tail()}")
            try:
                req = urllib.request.Request(f"{self.api_url}/api/v0/version", method="POST")
                with urllib.request.urlopen(req, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)  # polling a positive signal (the API answering), bounded above
        raise IpfsNodeFailed(f"ipfs daemon not ready after {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Terminate the daemon (its own process group), kill it if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> JsIpfsNode:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _configure(config_path: Path, api_port: int, swarm_port: int, gateway_port: int) -> None:
    """Loopback only, nothing that reaches out (NOTES.md, "A real IPFS node")."""
    config = json.loads(config_path.read_text())
    addresses = config.setdefault("Addresses", {})
    addresses["Swarm"] = [f"/ip4/127.0.0.1/tcp/{swarm_port}"]
    addresses["API"] = f"/ip4/127.0.0.1/tcp/{api_port}"
    addresses["Gateway"] = f"/ip4/127.0.0.1/tcp/{gateway_port}"
    addresses["RPC"] = f"/ip4/127.0.0.1/tcp/{free_port()}"  # js-ipfs gRPC: its own port
    addresses["Delegates"] = []
    addresses["Announce"] = []
    config["Bootstrap"] = []
    discovery = config.setdefault("Discovery", {})
    discovery["MDNS"] = {"Enabled": False, "Interval": 10}
    discovery["webRTCStar"] = {"Enabled": False}
    config_path.write_text(json.dumps(config, indent=2))

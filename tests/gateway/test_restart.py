"""kill -9 between the webhook's acknowledgement and the reply: after a restart the reply
is sent exactly once and the listing exists once (the real ``mycelium gateway`` process)."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.gateway.harness import (
    APP_SECRET,
    PUBLIC_URL,
    GraphFake,
    meta_headers,
    serve_app,
    wait_for,
    whatsapp_body,
)

READY_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def outbox(home: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(home / "gateway.db") as conn:
        return conn.execute("SELECT state, attempts FROM outbox").fetchall()


class GatewayProcess:
    def __init__(self, home: Path, graph_url: str) -> None:
        self.home = home
        self.env = {**os.environ, "MYCELIUM_HOME": str(home), "MYCELIUM_PASSPHRASE": "pw",
                    "MYCELIUM_INSECURE_FAST_KDF": "1", "META_APP_SECRET": APP_SECRET,
                    "META_ACCESS_TOKEN": "tok", "META_GRAPH_URL": graph_url,
                    "MYCELIUM_LOG": "INFO"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> None:
        cmd = [str(Path(sys.executable).parent / "mycelium"), "gateway",
               "--listen", "127.0.0.1:0", "--public-url", PUBLIC_URL, "--no-mdns",
               "--p2p-listen", "/ip4/127.0.0.1/tcp/0"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=open(self.home / "stderr.log", "ab"))  # noqa: SIM115
        assert self.proc.stdout is not None
        line = await trio.to_thread.run_sync(self.proc.stdout.readline)
        assert line.startswith(b"gateway ready "), (self.home / "stderr.log").read_text()
        self.url = line.split()[2].decode()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


async def test_kill_9_before_the_reply_then_exactly_one_reply(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet: the Graph API is "down"
    graph_url = f"http://127.0.0.1:{port}"
    gw = GatewayProcess(tmp_path, graph_url)
    try:
        with trio.fail_after(READY_TIMEOUT_S):
            await gw.start()
        raw = whatsapp_body("wamid.KILL1", "I have 5kg of tomatoes")
        async with httpx.AsyncClient(timeout=10) as client:
            ack = await client.post(gw.url + "/webhooks/meta", content=raw,
                                    headers=meta_headers(raw))
        assert ack.status_code == 200
        # Acknowledged, processed, reply attempted and not delivered: kill it now.
        await wait_for(lambda: any(a >= 1 for _, a in outbox(tmp_path)), timeout=20)
        gw.kill9()
        assert [s for s, _ in outbox(tmp_path)] == ["pending"]
        graph = GraphFake()
        async with trio.open_nursery() as nursery:
            await serve_app(nursery, graph.app(), bind=f"127.0.0.1:{port}")
            with trio.fail_after(READY_TIMEOUT_S):
                await gw.start()
            await wait_for(lambda: outbox(tmp_path) == [("sent", 2)], timeout=20)
            assert len(graph.requests) == 1
            assert graph.requests[0]["body"]["to"] == "5511988887777"
            assert "/p/" in graph.requests[0]["body"]["text"]["body"]
            # Meta retries the same wamid after the restart: still one reply, one listing.
            async with httpx.AsyncClient(timeout=10) as client:
                again = await client.post(gw.url + "/webhooks/meta", content=raw,
                                          headers=meta_headers(raw))
                health = (await client.get(gw.url + "/healthz")).json()
            assert again.status_code == 200
            assert health["metrics"]["inbox.duplicates"] == 1
            assert health["metrics"]["inbox.accepted"] == 1
            assert len(graph.requests) == 1
            nursery.cancel_scope.cancel()
    finally:
        gw.stop()
    with sqlite3.connect(tmp_path / "gateway.db") as conn:
        assert conn.execute("SELECT count(*) FROM listings").fetchone()[0] == 1

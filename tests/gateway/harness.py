"""A gateway on loopback with a fake Graph API that records what it is sent.

Signatures in tests come from the official ``twilio`` library (RequestValidator) and from
Meta's published algorithm (HMAC-SHA256 of the raw body), never from the code under test.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from twilio.request_validator import RequestValidator

from mycelium.gateway.db import GatewayDB
from mycelium.gateway.market import Market, ensure_market
from mycelium.gateway.server import GatewayServer
from mycelium.gateway.service import Gateway, GatewayConfig
from mycelium.identity.identity import Identity
from mycelium.store.soil import Soil

PUBLIC_URL = "https://market.example.org"
TWILIO_TOKEN = "twilio-test-token"
APP_SECRET = "meta-app-secret"
VERIFY_TOKEN = "verify-me"
ACCESS_TOKEN = "EAAG-test"
READY_TIMEOUT_S = 60.0


@dataclass
class GraphFake:
    """Records every POST; answers with ``script`` (status, body) in turn, then 200."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    script: list[tuple[int, Any]] = field(default_factory=list)
    url: str = ""

    def app(self) -> Starlette:
        async def messages(request: Request) -> Response:
            body = json.loads(await request.body())
            self.requests.append({"path": request.url.path, "body": body,
                                  "auth": request.headers.get("authorization")})
            if self.script:
                status, answer = self.script.pop(0)
                return JSONResponse(answer, status_code=status)
            n = len(self.requests)
            return JSONResponse({"messaging_product": "whatsapp",
                                 "messages": [{"id": f"wamid.out{n}"}]})

        return Starlette(routes=[Route("/{version}/{business}/messages", messages,
                                       methods=["POST"])])


async def serve_app(nursery: trio.Nursery, app: Any, bind: str = "127.0.0.1:0") -> str:
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = logging.getLogger("tests.hypercorn")
    binds = await nursery.start(serve, app, config)
    return str(binds[0])


def twilio_signature(url: str, params: dict[str, str]) -> str:
    sig: str = RequestValidator(TWILIO_TOKEN).compute_signature(url, params)
    return sig


def meta_headers(raw: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    return {"X-Hub-Signature-256": "sha256=" + digest, "Content-Type": "application/json"}


def twilio_params(sid: str, body: str, phone: str = "+5511999990001") -> dict[str, str]:
    return {"MessageSid": sid, "AccountSid": "AC123", "From": f"whatsapp:{phone}",
            "To": "whatsapp:+14155238886", "Body": body, "ProfileName": "Ana",
            "WaId": phone.lstrip("+"), "NumMedia": "0"}


def whatsapp_body(wamid: str, text: str, phone: str = "5511988887777",
                  user_id: str | None = None) -> bytes:
    contact: dict[str, Any] = {"profile": {"name": "Bia"}, "wa_id": phone}
    if user_id:
        contact["user_id"] = user_id
    return json.dumps({"object": "whatsapp_business_account", "entry": [{
        "id": "WABA1", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550001111", "phone_number_id": "PN1"},
            "contacts": [contact],
            "messages": [{"from": phone, "id": wamid, "timestamp": str(int(time.time())),
                          "type": "text", "text": {"body": text}}]}}]}]}).encode()


def instagram_body(mid: str, text: str, sender: str = "IGSID42", echo: bool = False) -> bytes:
    message: dict[str, Any] = {"mid": mid, "text": text}
    if echo:
        message["is_echo"] = True
    return json.dumps({"object": "instagram", "entry": [{
        "id": "IG1", "time": 1764979200000, "messaging": [{
            "sender": {"id": sender}, "recipient": {"id": "IGBIZ1"},
            "timestamp": int(time.time() * 1000), "message": message}]}]}).encode()


class GatewayProcess:
    def __init__(self, home: Path, graph_url: str) -> None:
        self.home = home
        self.env = {**os.environ, "MYCELIUM_HOME": str(home), "MYCELIUM_PASSPHRASE": "pw",
                    "MYCELIUM_INSECURE_FAST_KDF": "1", "META_APP_SECRET": APP_SECRET,
                    "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
                    "META_ACCESS_TOKEN": "tok", "META_GRAPH_URL": graph_url,
                    "MYCELIUM_LOG": "INFO"}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    async def start(self) -> None:
        await trio.to_thread.run_sync(self.start_sync)

    def start_sync(self) -> None:
        """Start and wait for the ready line (the process exits on its own if it fails)."""
        cmd = [str(Path(sys.executable).parent / "mycelium"), "gateway",
               "--listen", "127.0.0.1:0", "--public-url", PUBLIC_URL, "--no-mdns",
               "--p2p-listen", "/ip4/127.0.0.1/tcp/0"]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE,
                                     stderr=open(self.home / "stderr.log", "ab"))  # noqa: SIM115
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], READY_TIMEOUT_S)
        line = self.proc.stdout.readline() if ready else b""
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


@dataclass
class Running:
    gateway: Gateway
    server: GatewayServer
    graph: GraphFake
    client: httpx.AsyncClient
    soil: Soil
    space: bytes

    def listings(self) -> list[dict[str, Any]]:
        return self.soil.list_docs(self.space, "products")


async def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``cond`` until true (bounded); fails the test on timeout."""
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


@asynccontextmanager
async def running_gateway(tmp: Path, clock: Callable[[], int] | None = None
                          ) -> AsyncIterator[Running]:
    identity = Identity.generate()
    soil = Soil.open(tmp / "soil.db", identity)
    db = GatewayDB(tmp / "gateway.db")
    graph = GraphFake()
    try:
        async with trio.open_nursery() as nursery:
            graph.url = await serve_app(nursery, graph.app())
            config = GatewayConfig(public_url=PUBLIC_URL, twilio_auth_token=TWILIO_TOKEN,
                                   meta_app_secret=APP_SECRET, meta_verify_token=VERIFY_TOKEN,
                                   meta_access_token=ACCESS_TOKEN, graph_url=graph.url)
            space = ensure_market(soil, "market")
            gateway = Gateway(config, db, Market(soil, space))
            server = GatewayServer(gateway, listen="127.0.0.1:0")
            if clock is not None:
                server.clock = clock
            await nursery.start(server.serve)
            async with httpx.AsyncClient(base_url=str(server.url), timeout=10) as client:
                yield Running(gateway, server, graph, client, soil, space)
            nursery.cancel_scope.cancel()
    finally:
        db.close()
        soil.close()

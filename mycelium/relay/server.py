"""``mycelium relay``'s HTTP face: Starlette on hypercorn (trio). protocols/relay.md §2–§4.

Routes:

* ``GET  /v1/relay``                     public: the relay's DID and origin.
* ``POST /v1/auth/challenge``            a challenge for the client (and, if the body
  carries the client's challenge, the relay's proof of its own DID).
* ``GET  /v1/spaces``                    the hosted spaces the caller is a member of.
* ``POST /v1/spaces``                    register a space (genesis + control log).
* ``GET|POST /v1/spaces/{id}/deltas``    the stateless fallback: envelopes by version
  vector (paginated) / upload a batch. Calls the store port directly.
* ``GET  /v1/spaces/{id}/archive``      the latest IPFS archive of the space
  (relay/archiver.py), JSON ``{cid, created_ms, envelopes}``; 404 ``no_archive``.
* ``WS   /v1/sync``                      the handshake of :mod:`mycelium.relay.handshake`,
  then the unchanged :class:`~mycelium.sync.session.SyncSession`, one frame per message.

Every refusal is a :class:`~mycelium.relay.errors.RelayError`: JSON ``{"error", "reason"}``
with its status (and ``Retry-After`` for 429/503) over REST, an ``err`` message before the
session, an ``err`` frame inside it.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from mycelium.codec import cbor
from mycelium.errors import CodecError, MyceliumError
from mycelium.identity.auth import AuthError
from mycelium.relay import handshake
from mycelium.relay.driver import MessageSessionDriver, TransportClosed
from mycelium.relay.errors import (
    BadRequest,
    Limited,
    NotFound,
    RelayError,
    TooLarge,
    Unauthenticated,
)
from mycelium.relay.service import RelayService
from mycelium.sync.ports import VersionVector

log = logging.getLogger("mycelium.relay.http")

CBOR = "application/cbor"


def make_app(service: RelayService) -> Starlette:
    """The relay's ASGI app over one :class:`RelayService`."""

    def guarded(handler: Callable[[Request], Awaitable[Response]]
                ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapper(request: Request) -> Response:
            try:
                return await handler(request)
            except RelayError as exc:
                return _refusal(exc)
        return wrapper

    async def info(request: Request) -> Response:
        return JSONResponse(service.info())

    async def challenge(request: Request) -> Response:
        service.admit_handshake(_ip(service, request))
        origin = service.origin_for(request.headers.get("host"))
        body = await _body(request, service.limits.max_body_bytes)
        issuer = service.issuer_for(origin)
        out: dict[str, Any] = {"did": service.did,
                               "challenge": issuer.issue(service.clock()).to_cbor()}
        if body:
            msg = _cbor_map(body)
            theirs = msg.get("challenge")
            if not isinstance(theirs, bytes):
                raise BadRequest("body must be {challenge: bytes}")
            try:
                out["proof"] = service.relay_for(origin).prove(theirs)
            except AuthError as exc:
                raise BadRequest(str(exc), reason=exc.reason) from exc
        return Response(cbor.encode(out), media_type=CBOR)

    def client(request: Request) -> bytes:
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        origin = service.origin_for(request.headers.get("host"))
        pub = service.authenticate(token.strip() if scheme.lower() == "mycelium" else None,
                                   origin)
        wait = service.charge_frames(pub, _ip(service, request))
        if wait:
            raise Limited("too many requests", retry_after=wait)
        return pub

    async def list_spaces(request: Request) -> Response:
        pub = client(request)
        return Response(cbor.encode({"spaces": service.list_spaces(pub)}), media_type=CBOR)

    async def register(request: Request) -> Response:
        pub = client(request)
        msg = _cbor_map(await _body(request, service.limits.max_body_bytes))
        space, new = _register(service, pub, msg)
        return Response(cbor.encode({"space": space, "new": new}), media_type=CBOR,
                        status_code=201 if new else 200)

    async def get_deltas(request: Request) -> Response:
        pub = client(request)
        space = _space_id(request)
        service.store.check_access(space, pub)
        remote = _vector_param(request.query_params.get("vv"))
        lim = service.limits
        try:
            limit = min(int(request.query_params.get("limit", lim.page_envelopes)),
                        lim.page_envelopes)
        except ValueError as exc:
            raise BadRequest("limit must be an integer") from exc
        page = service.store.envelopes_since(space, remote, limit=max(1, limit),
                                             max_bytes=lim.page_bytes)
        after = dict(remote)
        for raw in page:
            info = service.cache.info(raw)
            after[info.author] = max(after.get(info.author, 0), info.seq)
        vector = service.store.version_vector(space)
        more = any(seq > after.get(a, 0) for a, seq in vector.items())
        body = {"envelopes": page, "more": more, "vector": vector}
        return Response(cbor.encode(body), media_type=CBOR)

    async def post_deltas(request: Request) -> Response:
        pub = client(request)
        space = _space_id(request)
        service.store.check_access(space, pub)
        msg = _cbor_map(await _body(request, service.limits.max_body_bytes))
        envelopes = msg.get("envelopes")
        if not isinstance(envelopes, list) or not all(isinstance(e, bytes) for e in envelopes):
            raise BadRequest("body must be {envelopes: [bytes]}")
        result = service.store.ingest(space, envelopes)
        if result.accepted:
            service.changed(space)
        body = {"accepted": len(result.accepted), "duplicates": result.duplicates,
                "pending": result.pending,
                "rejected": [[i, r] for i, r in result.rejected]}
        if any(r == "over_quota" for _, r in result.rejected):
            service.metrics.refuse("over_quota")
            return _refusal(Limited("storage quota exceeded; nothing beyond it was stored",
                                    reason="over_quota", retry_after=3600),
                            extra={"accepted": body["accepted"]})
        return Response(cbor.encode(body), media_type=CBOR)

    async def get_archive(request: Request) -> Response:
        from mycelium.relay.archiver import latest_archive

        pub = client(request)
        space = _space_id(request)
        service.store.check_access(space, pub)
        record = latest_archive(service.store, space)
        if record is None:
            raise NotFound("this relay has not archived that space (yet)", reason="no_archive")
        return JSONResponse(record.as_dict())

    async def sync(websocket: WebSocket) -> None:
        await _serve_websocket(service, websocket)

    return Starlette(routes=[
        Route("/v1/relay", info, methods=["GET"]),
        Route("/v1/auth/challenge", guarded(challenge), methods=["POST"]),
        Route("/v1/spaces", guarded(list_spaces), methods=["GET"]),
        Route("/v1/spaces", guarded(register), methods=["POST"]),
        Route("/v1/spaces/{space}/deltas", guarded(get_deltas), methods=["GET"]),
        Route("/v1/spaces/{space}/deltas", guarded(post_deltas), methods=["POST"]),
        Route("/v1/spaces/{space}/archive", guarded(get_archive), methods=["GET"]),
        WebSocketRoute("/v1/sync", sync),
    ])


# -- WebSocket --------------------------------------------------------------------------
class _StarletteTransport:
    """:class:`~mycelium.relay.driver.MessageTransport` over a Starlette WebSocket."""

    def __init__(self, websocket: WebSocket) -> None:
        self.ws = websocket

    async def receive(self) -> bytes | None:
        try:
            message = await self.ws.receive()
        except (WebSocketDisconnect, RuntimeError):
            return None
        if message["type"] == "websocket.disconnect":
            return None
        data = message.get("bytes")
        if data is None:
            raise TransportClosed("text message on a binary channel")
        return bytes(data)

    async def send(self, data: bytes) -> None:
        try:
            await self.ws.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            raise TransportClosed(str(exc)) from exc


async def _serve_websocket(service: RelayService, websocket: WebSocket) -> None:
    ip = _ip(service, websocket)
    await websocket.accept()
    transport = _StarletteTransport(websocket)
    pub: bytes | None = None
    try:
        with trio.fail_after(service.limits.handshake_timeout_s):
            service.admit_handshake(ip)
            origin = service.origin_for(websocket.headers.get("host"))
            pub = await _handshake(service, transport, origin)
            service.admit_session(pub)
            await transport.send(handshake.encode({"t": "ok", "did": _did(pub)}))
            started = await _pre_session(service, transport, pub)
        if started:
            await _run_session(service, transport, pub, ip)
    except RelayError as exc:
        await _send_quietly(transport, handshake.error_message(exc.reason, str(exc),
                                                               exc.retry_after))
        await _close_quietly(websocket, 4000 + exc.status, exc.reason)
        return
    except handshake.HandshakeError as exc:
        await _send_quietly(transport, handshake.error_message(exc.reason, str(exc)))
        await _close_quietly(websocket, 4400, exc.reason)
        return
    except (trio.TooSlowError, TransportClosed):
        await _close_quietly(websocket, 4408, "handshake_timeout")
        return
    await _close_quietly(websocket, 1000, "bye")


async def _handshake(service: RelayService, transport: _StarletteTransport, origin: str
                     ) -> bytes:
    hello = handshake.decode(await _recv(transport))
    issuer = service.issuer_for(origin)
    try:
        await transport.send(handshake.challenge_message(service.relay_for(origin), issuer,
                                                         hello, service.clock()))
    except AuthError as exc:
        raise BadRequest(str(exc), reason=exc.reason) from exc
    msg = handshake.decode(await _recv(transport))
    try:
        return handshake.verify_auth(issuer, msg, service.clock())
    except AuthError as exc:
        service.metrics.refuse(exc.reason)
        raise Unauthenticated(str(exc), reason=exc.reason) from exc


async def _pre_session(service: RelayService, transport: _StarletteTransport, pub: bytes
                       ) -> bool:
    """Register / list until the client asks for ``sync`` (True) or leaves (False)."""
    for _ in range(1000):
        data = await transport.receive()
        if data is None:
            return False
        msg = handshake.decode(data)
        kind = msg["t"]
        if kind == "sync":
            return True
        if kind == "list":
            await transport.send(handshake.encode({"t": "spaces",
                                                   "spaces": service.list_spaces(pub)}))
        elif kind == "register":
            try:
                space, new = _register(service, pub, msg)
                reply = {"t": "registered", "space": space, "new": new}
            except RelayError as exc:
                reply = {"t": "refused", "reason": exc.reason, "message": str(exc)[:200]}
            await transport.send(handshake.encode(reply))
        else:
            raise BadRequest(f"unexpected message {kind!r}", reason="unexpected_message")
    raise BadRequest("too many messages before sync", reason="unexpected_message")


async def _run_session(service: RelayService, transport: _StarletteTransport, pub: bytes,
                       ip: str) -> None:
    session = service.new_session(pub)

    def admit(size: int) -> str | None:
        if service.charge_frames(pub, ip):
            service.metrics.refuse("rate_limited")
            return "rate_limited"
        return None

    driver: MessageSessionDriver | None = None

    def on_event(event: object) -> None:
        assert driver is not None
        service.on_session_event(pub, driver, event)

    driver = MessageSessionDriver(session, transport, on_event=on_event, admit=admit,
                                  label=_did(pub)[-8:])
    service.attach(pub, driver)
    try:
        await driver.run()
    finally:
        service.detach(pub, driver)


async def _recv(transport: _StarletteTransport) -> bytes:
    data = await transport.receive()
    if data is None:
        raise TransportClosed("client left during the handshake")
    return data


async def _send_quietly(transport: _StarletteTransport, data: bytes) -> None:
    with contextlib.suppress(TransportClosed):
        await transport.send(data)


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
        await websocket.close(code=code, reason=reason)


# -- helpers ----------------------------------------------------------------------------
def _register(service: RelayService, pub: bytes, msg: dict[str, Any]) -> tuple[bytes, bool]:
    genesis, envelopes = msg.get("genesis"), msg.get("envelopes", [])
    if not isinstance(genesis, bytes) or not isinstance(envelopes, list) or not all(
            isinstance(e, bytes) for e in envelopes):
        raise BadRequest("register needs {genesis: bytes, envelopes: [bytes]}")
    space, new = service.register(pub, genesis, envelopes)
    if new:
        log.info("registered space %s for %s", space.hex()[:12], _did(pub)[-8:])
    return space, new


def _refusal(exc: RelayError, extra: dict[str, Any] | None = None) -> Response:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    body = {"error": str(exc), "reason": exc.reason, **(extra or {})}
    return JSONResponse(body, status_code=exc.status, headers=headers)


async def _body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise TooLarge(f"request body over {cap} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise TooLarge(f"request body over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _cbor_map(body: bytes) -> dict[str, Any]:
    try:
        msg = cbor.decode(body, max_bytes=max(len(body), 1))
    except CodecError as exc:
        raise BadRequest(f"body is not CBOR: {exc}", reason="bad_cbor") from exc
    if not isinstance(msg, dict):
        raise BadRequest("body must be a CBOR map", reason="bad_cbor")
    return msg


def _space_id(request: Request) -> bytes:
    text = request.path_params["space"]
    try:
        space = bytes.fromhex(text)
    except ValueError as exc:
        raise BadRequest("space id must be 64 hex digits", reason="bad_space_id") from exc
    if len(space) != 32:
        raise BadRequest("space id must be 64 hex digits", reason="bad_space_id")
    return space


def _vector_param(value: str | None) -> VersionVector:
    """``vv``: base64url of the canonical CBOR map author(32 bytes) -> seq."""
    if not value:
        return {}
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        vv = cbor.decode(raw, max_bytes=256 * 1024)
    except (ValueError, MyceliumError) as exc:
        raise BadRequest("vv must be base64url CBOR", reason="bad_vector") from exc
    if not isinstance(vv, dict) or not all(
            isinstance(a, bytes) and len(a) == 32 and isinstance(s, int)
            and not isinstance(s, bool) and 0 <= s < 2**63 for a, s in vv.items()):
        raise BadRequest("vv must map 32-byte authors to seqs", reason="bad_vector")
    return vv


def _ip(service: RelayService, conn: HTTPConnection) -> str:
    """The client address per-IP limits key on: the socket's peer, or behind a trusted
    reverse proxy the address it forwarded (relay/client_ip.py)."""
    peer = conn.client.host if conn.client else "?"
    if not service.proxies:
        return peer
    return service.proxies.client(peer, conn.headers.getlist("x-forwarded-for"))


def _did(pub: bytes) -> str:
    from mycelium.identity.didkey import did_from_public_key

    return did_from_public_key(pub)

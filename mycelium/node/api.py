"""The local control API: the CLI's way into a running node.

Bound to 127.0.0.1 only; every request needs ``Authorization: Bearer <token>`` where the
token lives in ``api.json`` (mode 0600) in the node's home, so only the node's user can
drive it. One RPC-style endpoint per operation keeps the API and the CLI in lockstep with
:class:`~mycelium.node.ops.LocalOps`.
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mycelium.errors import MyceliumError

log = logging.getLogger("mycelium.api")

MAX_BODY = 1 << 20


def make_api(ops: Any, token: str) -> Starlette:
    """ASGI app exposing ``ops.acall`` behind bearer-token auth (awaited: an operation's
    slow network steps run off the node's trio thread, see mycelium/node/phased.py)."""

    def authorized(request: Request) -> bool:
        header = request.headers.get("authorization", "")
        return hmac.compare_digest(header.encode(), f"Bearer {token}".encode())

    async def health(request: Request) -> JSONResponse:
        if not authorized(request):
            return _error(401, "missing or wrong API token", "unauthorized")
        return JSONResponse({"ok": True})

    async def op(request: Request) -> JSONResponse:
        if not authorized(request):
            return _error(401, "missing or wrong API token", "unauthorized")
        name = request.path_params["name"]
        body = await _read_capped(request, MAX_BODY)
        if body is None:
            return _error(413, f"request body over {MAX_BODY} bytes", "oversized")
        try:
            args = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "request body is not JSON", "bad_json")
        if not isinstance(args, dict):
            return _error(400, "request body must be a JSON object", "bad_json")
        try:
            return JSONResponse(await ops.acall(name, **args))
        except MyceliumError as exc:
            log.info("api %s refused: %s (%s)", name, exc, exc.reason)
            return _error(400, str(exc), exc.reason)
        except TypeError as exc:
            return _error(400, f"bad arguments for {name}: {exc}", "bad_arguments")

    return Starlette(routes=[
        Route("/v1/health", health, methods=["GET"]),
        Route("/v1/ops/{name}", op, methods=["POST"]),
    ])


async def _read_capped(request: Request, cap: int) -> bytes | None:
    """The request body, or None once it is known to exceed ``cap``: from a declared
    ``Content-Length`` before reading anything, else while streaming (a chunked body
    is never held beyond ``cap`` plus one chunk)."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > cap):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _error(status: int, message: str, reason: str) -> JSONResponse:
    return JSONResponse({"error": message, "reason": reason}, status_code=status)

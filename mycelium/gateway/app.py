"""The gateway's HTTP surface: a thin Starlette driver around :class:`Gateway`.

Routes: ``POST /webhooks/twilio``, ``GET|POST /webhooks/meta``, ``GET /p/{id}`` (public
listing page), ``GET|POST /link/{code}`` (taking ownership with one's own DID),
``GET /healthz``, ``/static/*``. Every refusal is logged with its reason and counted;
nothing from a refused webhook is stored.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Callable
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mycelium.errors import MyceliumError
from mycelium.gateway import pages, webhooks
from mycelium.gateway.service import Gateway

log = logging.getLogger("mycelium.gateway.http")

_DOC_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
                               "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def make_app(gateway: Gateway, clock: Callable[[], int] = wall_ms) -> Starlette:
    """The ASGI app; ``clock`` gives milliseconds (tests pass their own)."""

    def refused(exc: webhooks.WebhookError, route: str) -> Response:
        log.warning("%s refused: %s (%s)", route, exc.reason, exc)
        gateway.db.count(f"refused.{exc.reason}")
        return PlainTextResponse(exc.reason, status_code=exc.status)

    async def twilio(request: Request) -> Response:
        try:
            raw = await _body(request)
            answer = gateway.accept_twilio(raw, request.headers.get("x-twilio-signature"),
                                           clock())
        except webhooks.WebhookError as exc:
            return refused(exc, "twilio")
        return Response(answer, media_type="application/xml")

    async def meta_verify(request: Request) -> Response:
        try:
            return PlainTextResponse(gateway.verify_subscription(dict(request.query_params)))
        except webhooks.WebhookError as exc:
            return refused(exc, "meta verify")

    async def meta(request: Request) -> Response:
        try:
            raw = await _body(request)
            gateway.accept_meta(raw, request.headers.get("x-hub-signature-256"), clock())
        except webhooks.WebhookError as exc:
            return refused(exc, "meta")
        return PlainTextResponse("ok")

    async def listing_page(request: Request) -> Response:
        doc = request.path_params["doc"]
        lang = pages.pick_lang(request.headers.get("accept-language"))
        listing = gateway.market.public(doc) if _DOC_ID.match(doc) else None
        if listing is None:
            return HTMLResponse(pages.render_not_found(lang), status_code=404,
                                headers=_SECURITY_HEADERS)
        meta_row = gateway.db.listing_meta(doc) or {}
        html = pages.render_listing(listing, doc=doc, url=gateway.link_for(doc), lang=lang,
                                    business_number=meta_row.get("business_number"))
        return HTMLResponse(html, headers={**_SECURITY_HEADERS, "Cache-Control": "max-age=60"})

    async def link_get(request: Request) -> Response:
        try:
            challenge = gateway.link_challenge(request.path_params["code"], clock())
        except MyceliumError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        return JSONResponse({"challenge": base64.b64encode(challenge).decode()})

    async def link_post(request: Request) -> Response:
        try:
            raw = await _body(request, limit=4096)
            response = base64.b64decode(raw, validate=True)
            result = gateway.finish_link(request.path_params["code"], response, clock())
        except (MyceliumError, ValueError) as exc:
            reason = getattr(exc, "reason", "malformed")
            log.warning("link refused: %s (%s)", reason, exc)
            return JSONResponse({"error": str(exc), "reason": reason}, status_code=403)
        return JSONResponse(result)

    async def health(request: Request) -> Response:
        return JSONResponse({"ok": True, "metrics": gateway.db.metrics()})

    static = StaticFiles(directory=str(resources.files("mycelium.gateway") / "static"))
    return Starlette(routes=[
        Route("/webhooks/twilio", twilio, methods=["POST"]),
        Route("/webhooks/meta", meta_verify, methods=["GET"]),
        Route("/webhooks/meta", meta, methods=["POST"]),
        Route("/p/{doc}", listing_page, methods=["GET"]),
        Route("/link/{code}", link_get, methods=["GET"]),
        Route("/link/{code}", link_post, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Mount("/static", static, name="static"),
    ])


async def _body(request: Request, limit: int = webhooks.MAX_BODY_BYTES) -> bytes:
    """The raw body; :class:`MalformedBody` past ``limit`` bytes, without reading it all."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise webhooks.MalformedBody(f"body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)

"""The web app's routes: a thin Starlette driver around :class:`WebAuth` and ``node.ops``.

Pages are rendered on the server (Jinja2, autoescaped); the only script is
``static/app.js`` (live updates over server-sent events, the language switch, the
service worker). Every read and write goes through ``ops.call`` — the same operations the
CLI and the control API use — so the app has no data path of its own (DESIGN.md §8a).

Security, in the order a request meets it (issue 14): the Host header must be an IP
address or ``localhost`` (DNS rebinding); a session cookie (HttpOnly, SameSite=Strict)
is required on every page but the sign-in link and the static shell; every POST carries
the session's CSRF token; every answer carries a strict Content-Security-Policy without
inline script, and is not cached.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import trio
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from mycelium.crdt.schema import Collection
from mycelium.errors import MyceliumError
from mycelium.market.collections import DIARY, HEALTH, PRODUCTS, STATUSES
from mycelium.node.ops import GATEWAY_URL
from mycelium.web import forms, qr
from mycelium.web.auth import BadLink, Session, WebAuth
from mycelium.web.forms import Input
from mycelium.web.i18n import LANGUAGES, Formats, pick_language, translator

log = logging.getLogger("mycelium.web")

COOKIE = "mycelium_session"
LANG_COOKIE = "mycelium_lang"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; manifest-src 'self'; worker-src 'self'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
#: Server-sent events: a comment this often keeps proxies and the browser from timing out.
SSE_KEEPALIVE_S = 15.0
#: Live pages (event streams) open at once; each holds a store subscription.
MAX_STREAMS = 32
EXPIRED_FORM = "This form has expired. Reload the page and try again."
CURRENCIES = ("EUR", "USD", "BRL", "MXN", "ARS", "COP", "CLP", "PEN", "GBP")
LISTING_INPUTS = {
    "title": Input("text", required=True), "quantity": Input("number"),
    "unit": Input("text"), "price": Input("money"), "currency": Input("text"),
    "location": Input("text"), "description": Input("text"), "contact": Input("text"),
    "shared": Input("bool"),
}
NOTE_INPUTS = {
    "diary": {"title": Input("text", required=True), "date": Input("text"),
              "mood": Input("text"), "body": Input("text")},
    "health": {"kind": Input("text", required=True), "date": Input("text"),
               "value": Input("number"), "unit": Input("text"), "note": Input("text")},
}
NOTE_COLLECTIONS = {"diary": DIARY, "health": HEALTH}
#: ``gateway_link`` refusals about the address (shown next to it; the rest by the code).
GATEWAY_REASONS = frozenset({"bad_gateway_url", "gateway_unreachable", "gateway_bad_answer"})
STATIC_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml",
                ".png": "image/png", ".webmanifest": "application/manifest+json"}


@dataclass
class WebContext:
    """What the app needs from the node: its operations, the auth core and a clock."""

    ops: Any
    auth: WebAuth
    clock: Callable[[], float] = time.time
    #: Extra facts for the node page (relay, web address, storage), from the server.
    node_facts: Callable[[], dict[str, Any]] = dict
    #: Base URL the app is reached at (for pairing links).
    base_url: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    streams: int = 0
    #: Called after a session is made or revoked (the server saves the sessions file).
    persist: Callable[[], None] = lambda: None
    #: This computer's LAN address for pairing links, when listening on every interface.
    lan_origin: Callable[[], str | None] = lambda: None
    #: Node settings set on the node page (``gateway_url``); the server saves them.
    settings: dict[str, str] = field(default_factory=dict)
    save_settings: Callable[[], None] = lambda: None

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1


@dataclass
class View:
    """Per-request rendering state: language, session, formatting."""

    request: Request
    lang: str
    session: Session | None
    form: dict[str, str] = field(default_factory=dict)

    @property
    def _(self) -> Callable[..., str]:
        return translator(self.lang)


_env = Environment(loader=PackageLoader("mycelium.web", "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True,
                   finalize=lambda value: "" if value is None else value)  # unset: blank

Handler = Callable[[View], Awaitable[Response]]


def make_app(ctx: WebContext) -> Starlette:
    """The ASGI app of the web UI (see module docstring)."""

    def view_of(request: Request, session: Session | None) -> View:
        lang = pick_language(request.cookies.get(LANG_COOKIE),
                             request.headers.get("accept-language"))
        return View(request, lang, session)

    def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler: host check, session, CSRF on POST, security headers."""

        async def endpoint(request: Request) -> Response:
            if not _host_ok(request.headers.get("host", "")):
                ctx.count("refused.host")
                return _secured(Response("bad Host header", status_code=421))
            session = ctx.auth.session(request.cookies.get(COOKIE), ctx.clock())
            view = view_of(request, session)
            if session is None:
                ctx.count("refused.no_session")
                return _secured(render(view, "signed_out.html", status=401))
            if request.method == "POST":
                origin = request.headers.get("origin")
                if origin and origin.split("://", 1)[-1] != request.headers.get("host", ""):
                    ctx.count("refused.origin")
                    return _secured(Response("cross-site request", status_code=403))
                try:
                    view.form = forms.parse_body(await request.body())
                except forms.FormTooLarge:
                    ctx.count("refused.form_too_large")
                    return _secured(Response("form too large", status_code=413))
                token = view.form.get("csrf") or request.headers.get("x-csrf-token")
                if not ctx.auth.check_csrf(session, token):
                    ctx.count("refused.csrf")
                    log.info("web: POST %s refused: missing or wrong CSRF token",
                             request.url.path)
                    return _secured(render(view, "error.html", status=403,
                                           message=view._(EXPIRED_FORM)))
            try:
                return _secured(await handler(view))
            except MyceliumError as exc:  # an operation refused: say why, never a 500
                ctx.count(f"refused.{exc.reason}")
                log.info("web: %s %s refused: %s (%s)", request.method, request.url.path,
                         exc, exc.reason)
                return _secured(render(view, "error.html", status=400,
                                       message=_op_message(exc, view)))

        return endpoint

    def render(view: View, template: str, *, status: int = 200, **data: Any) -> HTMLResponse:
        fmt = Formats(view.lang)
        html = _env.get_template(template).render(
            _=view._, lang=view.lang, languages=LANGUAGES, fmt=fmt, csrf=view.session.csrf
            if view.session else "", path=view.request.url.path, signed_in=bool(view.session),
            **data)
        return HTMLResponse(html, status_code=status)

    def call(op: str, /, **args: Any) -> dict[str, Any]:
        result: dict[str, Any] = ctx.ops.call(op, **args)
        return result

    async def acall(op: str, /, **args: Any) -> dict[str, Any]:
        """For operations with slow network steps (``LocalOps.PHASED``): awaited, so the
        node and this app keep answering while they run (mycelium/node/phased.py)."""
        result: dict[str, Any] = await ctx.ops.acall(op, **args)
        return result

    def community_spaces() -> list[dict[str, Any]]:
        return [s for s in call("space_list")["spaces"] if s["kind"] == "community"]

    # -- sign-in ----------------------------------------------------------------------
    async def login(request: Request) -> Response:
        view = view_of(request, None)
        if not _host_ok(request.headers.get("host", "")):
            return _secured(Response("bad Host header", status_code=421))
        token = request.query_params.get("token", "")
        try:
            session = ctx.auth.redeem(token, ctx.clock(), _device_label(request))
        except BadLink:
            ctx.count("refused.bad_link")
            log.info("web: sign-in link refused (unknown, used or expired)")
            return _secured(render(view, "signed_out.html", status=403, bad_link=True))
        log.info("web: new session via %s link (%s)", session.via, session.label)
        ctx.persist()
        # A page, not a redirect: the next navigation starts on our own origin, so the
        # SameSite=Strict cookie is sent even if the link was opened from another app;
        # and the token leaves the address bar at once.
        view.session = session
        response = render(view, "signed_in.html")
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="strict", path="/",
                            max_age=90 * 24 * 3600)
        return _secured(response)

    async def set_language(view: View) -> Response:
        lang = view.form.get("lang", "")
        back = view.form.get("back", "/market")
        response = RedirectResponse(_local(back), status_code=303)
        if lang in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, httponly=True, samesite="strict", path="/",
                                max_age=365 * 24 * 3600)
        return response

    async def home(view: View) -> Response:
        return RedirectResponse("/market", status_code=303)

    # -- market -----------------------------------------------------------------------
    async def market(view: View) -> Response:
        q = view.request.query_params
        filters = {k: q.get(k, "")[:128] for k in ("q", "space", "status", "location", "unit")}
        spaces = community_spaces()
        error = None
        try:
            listings = [_complete(d, PRODUCTS) for d in call("market_list", **filters)["listings"]]
        except MyceliumError as exc:
            listings, error = [], _op_message(exc, view)
        me = call("status")["did"]
        if not filters["status"]:  # others' withdrawn listings only when asked for
            listings = [d for d in listings if d["status"] != "withdrawn" or d["author"] == me]
        every = listings if not any(filters.values()) else call("market_list")["listings"]
        choices = {name: sorted({str(d[name]) for d in every if d.get(name)}, key=str.casefold)
                   for name in ("location", "unit")}
        return render(view, "market.html", listings=listings, spaces=spaces, filters=filters,
                      choices=choices, gateway_url=ctx.settings.get("gateway_url", ""),
                      statuses=sorted(STATUSES), me=me, error=error,
                      ok=q.get("ok", ""), live="products")

    async def listing_form(view: View) -> Response:
        params = view.request.path_params
        spaces = community_spaces()
        values: dict[str, Any] = {"currency": "EUR"}
        editing = "doc" in params
        if editing:
            doc = _get_listing(call, params["space"], params["doc"])
            if doc is None:
                return render(view, "error.html", status=404,
                              message=view._("This listing does not exist."))
            values = _listing_values(doc, Formats(view.lang))
        elif spaces:
            values["space"] = spaces[0]["space_id"]
        return render(view, "listing_form.html", values=values, errors={}, spaces=spaces,
                      currencies=CURRENCIES, editing=editing, params=params)

    async def listing_save(view: View) -> Response:
        params = view.request.path_params
        editing = "doc" in params
        spaces = community_spaces()
        currency = view.form.get("currency", "EUR").strip().upper() or "EUR"
        parsed = forms.parse_fields(view.form, LISTING_INPUTS, PRODUCTS, view._,
                                    Formats(view.lang).locale, currency=currency)
        space = params["space"] if editing else view.form.get("space", "").strip()
        parsed.values["space"] = space
        if not editing and space not in {s["space_id"] for s in spaces}:
            parsed.errors["space"] = view._("Choose one of your community spaces.")
        if parsed.ok:
            data = {k: v for k, v in parsed.data.items() if v not in ("", None)}
            data["shared"] = bool(parsed.data.get("shared"))
            try:
                if editing:
                    call("listing_update", space=space, doc_id=params["doc"], data=data)
                else:
                    call("listing_post", space=space, data=data)
                return RedirectResponse("/market?ok=" + ("saved" if editing else "posted"),
                                        status_code=303)
            except MyceliumError as exc:
                _attach_error(parsed.errors, exc, view, default="title")
        ctx.count("form.invalid")
        return render(view, "listing_form.html", status=400, values=parsed.values,
                      errors=parsed.errors, spaces=spaces, currencies=CURRENCIES,
                      editing=editing, params=params)

    async def listing_status(view: View) -> Response:
        params = view.request.path_params
        status = view.form.get("status", "")
        if status not in STATUSES:
            return render(view, "error.html", status=400,
                          message=view._("Choose one of the options."))
        try:
            call("listing_update", space=params["space"], doc_id=params["doc"],
                 data={"status": status})
        except MyceliumError as exc:
            return render(view, "error.html", status=400, message=_op_message(exc, view))
        return RedirectResponse("/market?ok=" + status, status_code=303)

    # -- personal notes -------------------------------------------------------------------
    async def personal(view: View) -> Response:
        diary = [_complete(d, DIARY)
                 for d in call("doc_list", space="personal", coll="diary")["docs"]]
        health = [_complete(d, HEALTH)
                  for d in call("doc_list", space="personal", coll="health")["docs"]]
        diary.sort(key=lambda d: (str(d.get("date", "")), d["_id"]), reverse=True)
        health.sort(key=lambda d: (str(d.get("date", "")), d["_id"]), reverse=True)
        return render(view, "personal.html", diary=diary, health=health,
                      ok=view.request.query_params.get("ok", ""), live="diary health")

    async def note_form(view: View) -> Response:
        params = view.request.path_params
        coll = params["coll"]
        if coll not in NOTE_INPUTS:
            return render(view, "error.html", status=404, message=view._("Page not found."))
        values: dict[str, Any] = {}
        if "doc" in params:
            doc = call("doc_get", space="personal", coll=coll, doc_id=params["doc"])["doc"]
            if doc is None:
                return render(view, "error.html", status=404,
                              message=view._("This note does not exist."))
            values = {k: ("" if v is None else v) for k, v in doc.items()}
            if coll == "health" and "value" in doc:
                values["value"] = Formats(view.lang).number(doc["value"])
        return render(view, "note_form.html", coll=coll, values=values, errors={},
                      doc_id=params.get("doc"))

    async def note_save(view: View) -> Response:
        params = view.request.path_params
        coll = params["coll"]
        if coll not in NOTE_INPUTS:
            return render(view, "error.html", status=404, message=view._("Page not found."))
        parsed = forms.parse_fields(view.form, NOTE_INPUTS[coll], NOTE_COLLECTIONS[coll],
                                    view._, Formats(view.lang).locale)
        if parsed.ok:
            data = {k: v for k, v in parsed.data.items() if v not in ("", None)}
            try:
                if "doc" in params:
                    call("doc_put", space="personal", coll=coll, doc_id=params["doc"],
                         data=data)
                else:
                    call("doc_create", space="personal", coll=coll, data=data)
                return RedirectResponse("/personal?ok=saved", status_code=303)
            except MyceliumError as exc:
                _attach_error(parsed.errors, exc, view, default=next(iter(NOTE_INPUTS[coll])))
        ctx.count("form.invalid")
        return render(view, "note_form.html", status=400, coll=coll, values=parsed.values,
                      errors=parsed.errors, doc_id=params.get("doc"))

    async def note_delete_confirm(view: View) -> Response:
        params = view.request.path_params
        if params["coll"] not in NOTE_INPUTS:
            return render(view, "error.html", status=404, message=view._("Page not found."))
        doc = call("doc_get", space="personal", coll=params["coll"], doc_id=params["doc"])["doc"]
        if doc is None:
            return render(view, "error.html", status=404,
                          message=view._("This note does not exist."))
        return render(view, "note_delete.html", coll=params["coll"], doc_id=params["doc"],
                      title=doc.get("title") or doc.get("kind") or "")

    async def note_delete(view: View) -> Response:
        params = view.request.path_params
        if params["coll"] not in NOTE_INPUTS:
            return render(view, "error.html", status=404, message=view._("Page not found."))
        call("doc_delete", space="personal", coll=params["coll"], doc_id=params["doc"])
        return RedirectResponse("/personal?ok=deleted", status_code=303)

    # -- community --------------------------------------------------------------------
    async def community(view: View, *, status: int = 200, **extra: Any) -> Response:
        spaces = call("space_list")["spaces"]
        return render(view, "community.html", status=status, spaces=spaces,
                      me=call("status")["did"],
                      values=view.form, errors=extra.pop("errors", {}), live="*", **extra)

    async def space_create(view: View) -> Response:
        name = view.form.get("name", "").strip()
        error = None
        if not name:
            error = view._("Please fill in this field.")
        elif len(name) > 64:
            error = view._("At most {n} characters.", n=64)
        if error is None:
            try:
                made = call("space_create", name=name)
                return RedirectResponse(f"/community/{made['space_id']}?ok=created",
                                        status_code=303)
            except MyceliumError as exc:
                error = _op_message(exc, view)
        return await community(view, status=400, errors={"name": error})

    async def space_join(view: View) -> Response:
        code = view.form.get("code", "").strip()
        if not code:
            return await community(view, status=400,
                                   errors={"code": view._("Please fill in this field.")})
        try:
            joined = call("space_join", code=code)
        except MyceliumError as exc:
            return await community(view, status=400, errors={"code": _op_message(exc, view)})
        return RedirectResponse(f"/community/{joined['space_id']}?ok=joined", status_code=303)

    async def space_page(view: View, *, status: int = 200, **extra: Any) -> Response:
        space = view.request.path_params["space"]
        try:
            info = call("space_show", space=space)
        except MyceliumError as exc:
            return render(view, "error.html", status=404, message=_op_message(exc, view))
        return render(view, "space.html", status=status, space=info,
                      ok=view.request.query_params.get("ok", ""), values=view.form,
                      errors=extra.pop("errors", {}), live="*", **extra)

    async def space_invite(view: View) -> Response:
        space = view.request.path_params["space"]
        did = view.form.get("did", "").strip()
        if not did.startswith("did:key:z") or len(did) > 128:
            return await space_page(view, status=400, errors={
                "did": view._("Paste the person's DID; it starts with did:key:z")})
        try:
            code = call("space_invite", space=space, did=did)["invite"]
        except MyceliumError as exc:
            return await space_page(view, status=400, errors={"did": _op_message(exc, view)})
        view.form = {}  # the invite is made: an empty field for the next one
        return await space_page(view, invite=code, invite_qr=qr.svg(code), invited=did)

    async def remove_confirm(view: View) -> Response:
        space = view.request.path_params["space"]
        did = view.request.query_params.get("did", "")[:128]
        try:
            info = call("space_show", space=space)
        except MyceliumError as exc:
            return render(view, "error.html", status=404, message=_op_message(exc, view))
        return render(view, "remove.html", space=info, did=did)

    async def space_remove(view: View) -> Response:
        space = view.request.path_params["space"]
        did = view.form.get("did", "")
        try:
            call("space_remove", space=space, did=did)
        except MyceliumError as exc:
            return render(view, "error.html", status=400, message=_op_message(exc, view))
        return RedirectResponse(f"/community/{space}?ok=removed", status_code=303)

    # -- guardians ----------------------------------------------------------------------
    async def guardians(view: View, *, status: int = 200, **extra: Any) -> Response:
        spaces = community_spaces()
        chosen = (view.form.get("space") or view.request.query_params.get("space")
                  or (spaces[0]["space_id"] if spaces else ""))
        members: list[dict[str, Any]] = []
        if chosen:
            try:
                members = [m for m in call("space_show", space=chosen)["members"]
                           if not m["me"]]
            except MyceliumError:
                chosen = ""
        listing = call("guardians_list")
        return render(view, "guardians.html", status=status, spaces=spaces, chosen=chosen,
                      members=members, packages=listing["packages"], me=listing["me"],
                      values=view.form, errors=extra.pop("errors", {}),
                      ok=view.request.query_params.get("ok", ""), live="guardian_packages",
                      **extra)

    async def guardians_setup(view: View) -> Response:
        space = view.form.get("space", "")
        dids = [v for k, v in view.form.items() if k.startswith("g_")]
        errors: dict[str, str] = {}
        try:
            threshold = int(view.form.get("threshold", "0"))
        except ValueError:
            threshold = 0
        if not dids:
            errors["guardians"] = view._("Choose at least one guardian.")
        elif not 1 <= threshold <= len(dids):
            errors["threshold"] = view._("Between 1 and the number of guardians chosen.")
        if not errors:
            try:
                call("guardians_setup", space=space, threshold=threshold, dids=dids)
                return RedirectResponse("/guardians?ok=setup", status_code=303)
            except MyceliumError as exc:
                errors["guardians"] = _op_message(exc, view)
        return await guardians(view, status=400, errors=errors)

    async def recovery_check(view: View) -> Response:
        request_b64 = view.form.get("request", "")
        try:
            checked = call("recovery_check", request_b64=request_b64)
        except MyceliumError as exc:
            return await guardians(view, status=400, errors={"request": _op_message(exc, view)})
        return await guardians(view, checked=checked)

    async def recovery_approve(view: View) -> Response:
        args = {k: view.form.get(k, "") for k in ("space", "code")}
        request_b64 = view.form.get("request", "")
        try:
            checked = call("recovery_check", request_b64=request_b64)
        except MyceliumError as exc:
            return await guardians(view, status=400, errors={"request": _op_message(exc, view)})
        try:
            approved = call("recovery_approve", request_b64=request_b64, **args)
        except MyceliumError as exc:
            field_name = "code" if exc.reason == "code_mismatch" else "approve"
            return await guardians(view, status=400, checked=checked,
                                   errors={field_name: _op_message(exc, view)})
        return await guardians(view, approved=approved,
                               approved_qr=qr.svg(approved["approval_b64"], scale=3))

    # -- node and devices -----------------------------------------------------------------
    async def node(view: View, **extra: Any) -> Response:
        status = call("status")
        facts = ctx.node_facts()
        metrics = status.get("metrics", {})
        problems = sorted((k, v) for k, v in metrics.items()
                          if k.startswith(("rejected.", "pending.", "deferred.")) and v)
        return render(view, "node.html", status=extra.pop("status", 200), node=status,
                      facts=facts, problems=problems, metrics=metrics,
                      web_counters=dict(sorted(ctx.counters.items())), live="*",
                      values=extra.pop("values", {"gateway_url": ctx.settings.get(
                          "gateway_url", "")}),
                      errors=extra.pop("errors", {}),
                      ok=view.request.query_params.get("ok", ""), **extra)

    async def node_gateway(view: View) -> Response:
        """Save the gateway's public address (shareable listings show their public page
        there) and, with a code, link what one sent through WhatsApp/Instagram
        (``gateway_link``: the same operation as ``mycelium gateway link``)."""
        url = view.form.get("gateway_url", "").strip().rstrip("/")
        code = view.form.get("code", "").strip()
        values = {"gateway_url": url, "code": code}
        if url and not GATEWAY_URL.fullmatch(url[:512]):
            return await node(view, status=400, values=values, errors={
                "gateway_url": view._("The gateway address must start with http:// or https://")})
        if view.form.get("action") != "link":
            ctx.settings["gateway_url"] = url
            ctx.save_settings()
            return RedirectResponse("/node?ok=gateway#gateway", status_code=303)
        if not url:
            return await node(view, status=400, values=values,
                              errors={"gateway_url": view._("Please fill in this field.")})
        try:
            linked = await acall("gateway_link", code=code, gateway=url)
        except MyceliumError as exc:
            where = "gateway_url" if exc.reason in GATEWAY_REASONS else "code"
            return await node(view, status=400, values=values,
                              errors={where: _op_message(exc, view)})
        ctx.settings["gateway_url"] = url
        ctx.save_settings()
        return await node(view, linked=linked)

    async def devices(view: View, **extra: Any) -> Response:
        now = ctx.clock()
        sessions = ctx.auth.sessions(now)
        assert view.session is not None
        return render(view, "devices.html", sessions=sessions, current=view.session.key,
                      ok=view.request.query_params.get("ok", ""), **extra)

    async def pair(view: View) -> Response:
        token = ctx.auth.issue_link(ctx.clock(), "pair")
        origin = _origin(view.request, ctx.base_url)
        if _is_loopback(origin):  # browsing on 127.0.0.1: give the phone a LAN address
            origin = ctx.lan_origin() or origin
        link = f"{origin}/login?token={token}"
        local_only = _is_loopback(origin)
        return await devices(view, pair_link=link, pair_qr=qr.svg(link), local_only=local_only)

    async def revoke(view: View) -> Response:
        key = view.form.get("session", "")
        if ctx.auth.revoke(key):
            ctx.persist()
            log.info("web: session revoked")
        assert view.session is not None
        if key == view.session.key:
            return render(view, "signed_out.html", revoked=True)
        return RedirectResponse("/devices?ok=revoked", status_code=303)

    # -- live updates ---------------------------------------------------------------------
    async def events(view: View) -> Response:
        if ctx.streams >= MAX_STREAMS:
            ctx.count("refused.streams")
            return Response("too many live pages open", status_code=503,
                            headers={"Retry-After": "10"})
        changes = ctx.ops.soil.subscribe(buffer=256)

        async def stream() -> Any:
            ctx.streams += 1
            try:
                async for chunk in _changes(changes):
                    yield chunk
            finally:
                ctx.streams -= 1

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})

    # -- the shell ----------------------------------------------------------------------
    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        return _asset(f"static/{name}", immutable=False)

    async def service_worker(request: Request) -> Response:
        response = _asset("static/sw.js", immutable=False)
        response.headers["Service-Worker-Allowed"] = "/"
        return response

    async def manifest(request: Request) -> Response:
        return _asset("static/manifest.webmanifest", immutable=False)

    async def offline(request: Request) -> Response:
        view = view_of(request, None)
        return _secured(render(view, "offline.html"))

    get, post = ["GET"], ["POST"]
    routes = [
        Route("/login", login, methods=get),
        Route("/offline", offline, methods=get),
        Route("/sw.js", service_worker, methods=get),
        Route("/manifest.webmanifest", manifest, methods=get),
        Route("/static/{name}", static, methods=get),
        Route("/", page(home), methods=get),
        Route("/lang", page(set_language), methods=post),
        Route("/market", page(market), methods=get),
        Route("/market/new", page(listing_form), methods=get),
        Route("/market/new", page(listing_save), methods=post),
        Route("/market/{space}/{doc}/edit", page(listing_form), methods=get),
        Route("/market/{space}/{doc}/edit", page(listing_save), methods=post),
        Route("/market/{space}/{doc}/status", page(listing_status), methods=post),
        Route("/personal", page(personal), methods=get),
        Route("/personal/{coll}/new", page(note_form), methods=get),
        Route("/personal/{coll}/new", page(note_save), methods=post),
        Route("/personal/{coll}/{doc}", page(note_form), methods=get),
        Route("/personal/{coll}/{doc}", page(note_save), methods=post),
        Route("/personal/{coll}/{doc}/delete", page(note_delete_confirm), methods=get),
        Route("/personal/{coll}/{doc}/delete", page(note_delete), methods=post),
        Route("/community", page(community), methods=get),
        Route("/community/create", page(space_create), methods=post),
        Route("/community/join", page(space_join), methods=post),
        Route("/community/{space}", page(space_page), methods=get),
        Route("/community/{space}/invite", page(space_invite), methods=post),
        Route("/community/{space}/remove", page(remove_confirm), methods=get),
        Route("/community/{space}/remove", page(space_remove), methods=post),
        Route("/guardians", page(guardians), methods=get),
        Route("/guardians/setup", page(guardians_setup), methods=post),
        Route("/guardians/check", page(recovery_check), methods=post),
        Route("/guardians/approve", page(recovery_approve), methods=post),
        Route("/node", page(node), methods=get),
        Route("/node/gateway", page(node_gateway), methods=post),
        Route("/devices", page(devices), methods=get),
        Route("/devices/pair", page(pair), methods=post),
        Route("/devices/revoke", page(revoke), methods=post),
        Route("/events", page(events), methods=get),
    ]
    return Starlette(routes=routes)


# -- helpers -----------------------------------------------------------------------------


async def _changes(changes: Any) -> Any:
    """Soil's change notifications as server-sent events, with keep-alive comments."""
    async with changes:
        yield "retry: 2000\n\n"
        while True:
            with trio.move_on_after(SSE_KEEPALIVE_S) as scope:
                change = await changes.receive()
            if scope.cancelled_caught:
                yield ": keepalive\n\n"
                continue
            data = {"space": change.space.hex(), "coll": change.coll or "*"}
            yield f"event: change\ndata: {json.dumps(data)}\n\n"


def _secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers[name] = value
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def _asset(relative: str, *, immutable: bool) -> Response:
    name = relative.rsplit("/", 1)[-1]
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if "/" in name or name.startswith(".") or suffix not in STATIC_TYPES:
        return _secured(Response("not found", status_code=404))
    try:
        data = resources.files("mycelium.web").joinpath(relative).read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return _secured(Response("not found", status_code=404))
    response = Response(data, media_type=STATIC_TYPES[suffix])
    response.headers["Cache-Control"] = "no-cache"
    return _secured(response)


def _host_ok(host: str) -> bool:
    """Only IP literals and localhost: a DNS-rebinding page cannot pass for the node."""
    name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    name = name.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _is_loopback(origin: str) -> bool:
    host = origin.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _local(path: str) -> str:
    """Only same-origin paths as redirect targets ("//host" and "/\\host" are other sites
    to a browser)."""
    return path if re.fullmatch(r"/(?![/\\])[A-Za-z0-9/_.~%?=&-]*", path) else "/market"


def _origin(request: Request, base_url: str) -> str:
    if base_url:
        return base_url.rstrip("/")
    return f"{request.url.scheme}://{request.headers.get('host', '127.0.0.1')}"


def _device_label(request: Request) -> str:
    agent = request.headers.get("user-agent", "")
    browser = next((b for b in ("Firefox", "Edg", "Chrome", "Safari") if b in agent), "browser")
    system = next((s for s in ("Android", "iPhone", "iPad", "Windows", "Mac OS", "Linux")
                   if s in agent), "")
    name = {"Edg": "Edge"}.get(browser, browser)
    return f"{name} · {system}" if system else name


def _op_message(exc: MyceliumError, view: View) -> str:
    """An operation's refusal in the person's language where we know the reason."""
    _ = view._
    known = {
        "unknown_space": _("Unknown space."),
        "ambiguous_space": _("More than one space has this name."),
        "not_admin": _("Only an admin of the space can do this."),
        "not_member": _("That person is not a member of this space."),
        "bad_invite": _("This invite code is not valid."),
        "code_mismatch": _("The code does not match. Do not approve."),
        "not_guardian": _("You are not a guardian of this person."),
        "bad_membership_change": _("This membership change is not possible."),
        "bad_recovery_message": _("This recovery request is not valid."),
        "bad_guardian_setup": _("This guardian setup is not possible."),
        "unknown_doc": _("This listing does not exist."),
        "not_author": _("Only the person who posted this listing can change it."),
        "bad_link_code": _("A link code is 8 letters and digits, as the gateway sent it."),
        "link_code_refused": _("Unknown, used or expired code. Send “link” again for a new one."),
        "link_refused": _("The gateway refused to link this node."),
        "bad_gateway_url": _("The gateway address must start with http:// or https://"),
        "gateway_unreachable": _("The gateway cannot be reached at this address."),
        "gateway_bad_answer": _("The gateway cannot be reached at this address."),
    }
    text = known.get(exc.reason)
    return text if text else _("Refused: {reason}", reason=str(exc))


def _attach_error(errors: dict[str, str], exc: MyceliumError, view: View, *,
                  default: str) -> None:
    name = forms.field_of(str(exc))
    if exc.reason in ("unknown_space", "ambiguous_space"):
        name = "space"
    errors[name or default] = _op_message(exc, view)


def _complete(doc: dict[str, Any], coll: Collection) -> dict[str, Any]:
    """Every field of the collection present (None when unset), so templates can test
    ``is none`` instead of tripping over a missing key."""
    return {**dict.fromkeys(coll.fields), **doc}


def _get_listing(call: Callable[..., dict[str, Any]], space: str, doc: str) -> Any:
    try:
        return call("doc_get", space=space, coll="products", doc_id=doc)["doc"]
    except MyceliumError:
        return None


def _listing_values(doc: dict[str, Any], fmt: Formats) -> dict[str, Any]:
    values = {k: ("" if v is None else v) for k, v in doc.items()}
    if doc.get("quantity") is not None:
        values["quantity"] = fmt.number(doc["quantity"])
    if doc.get("price") is not None:
        values["price"] = fmt.money_input(doc["price"], doc.get("currency"))
    return values

"""The web app as one of the node's services: one entry point, :func:`serve_web`.

``mycelium run`` starts it in the node's nursery (``--web HOST:PORT``, default
127.0.0.1:8737; ``--web off`` disables it). It serves :func:`mycelium.web.app.make_app`
with hypercorn on trio, keeps the :class:`~mycelium.web.auth.WebAuth` state (signed-in
devices are saved to ``web-sessions.json`` in the home, as hashes, so a restart keeps
them; links live in memory only), and hands the node's operations a way to mint login
links (``ops.web``), which is how ``mycelium open`` gets one through the control API.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from pathlib import Path
from typing import Any

import trio

from mycelium.paths import NodePaths
from mycelium.web.app import WebContext, make_app
from mycelium.web.auth import WebAuth

log = logging.getLogger("mycelium.web")

DEFAULT_BIND = "127.0.0.1:8737"
#: Signed-in devices survive a restart: hashes of their cookies, in the home (mode 0600).
SESSIONS_FILE = "web-sessions.json"
OFF = ("off", "none", "no")
#: Settings made on the node page (the gateway's public address), kept in the home.
SETTINGS_FILE = "web-settings.json"
#: Pending connections the web app's socket queues (hypercorn's default).
LISTEN_BACKLOG = 100


class WebService:
    """What the rest of the node sees of the running web app."""

    def __init__(self, ctx: WebContext, url: str) -> None:
        self.ctx = ctx
        self.url = url

    def login_link(self) -> str:
        """A fresh one-time sign-in link (printed at start, and by ``mycelium open``)."""
        token = self.ctx.auth.issue_link(self.ctx.clock(), "login")
        return f"{self.url}/login?token={token}"


async def serve_web(ops: Any, paths: NodePaths, bind: str, *,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve the web app until cancelled; ``task_status.started(WebService)``, or
    ``started(None)`` (error logged, node keeps running) if it cannot listen."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    host, port = split_bind(bind)
    try:
        sock = _listening_socket(host, port, fallback=bind == DEFAULT_BIND)
    except OSError as exc:
        log.error("web app not started: cannot listen on %s (%s)", bind, exc.strerror or exc)
        task_status.started(None)
        return
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns the socket from here
    config.accesslog = None
    config.errorlog = logging.getLogger("mycelium.web.http")
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 30.0
    ctx = WebContext(ops=ops, auth=WebAuth(), clock=time.time)
    sessions_file = paths.home / SESSIONS_FILE
    _load_sessions(ctx.auth, sessions_file, ctx.clock())
    ctx.persist = lambda: _save_sessions(ctx.auth, sessions_file, ctx.clock())
    settings_file = paths.home / SETTINGS_FILE
    ctx.settings = load_settings(settings_file)
    ctx.save_settings = lambda: save_settings(ctx.settings, settings_file)
    app = make_app(ctx)
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)
        url = _public_url(str(binds[0]), host)
        if host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("web app reachable from the network at %s: devices must pair first", url)
        service = WebService(ctx, url)
        wildcard = host in ("0.0.0.0", "::")
        ctx.base_url = "" if wildcard else url
        if wildcard:
            port_text = url.rsplit(":", 1)[1]
            ctx.lan_origin = lambda: _lan_origin(port_text)
        name = _display_name(paths)
        ctx.node_facts = lambda: {"name": name, "web_url": url,
                                  "storage_bytes": storage_bytes(paths)}
        ops.web = service
        try:
            task_status.started(service)
            await trio.sleep_forever()
        finally:
            ops.web = None
            ctx.persist()  # keeps when each device was last seen


def split_bind(bind: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:PORT``) -> (host, port); ValueError if malformed."""
    host, sep, port = bind.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--web expects HOST:PORT, got {bind!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def storage_bytes(paths: NodePaths) -> int:
    """Bytes the store uses on disk (database, WAL and shared-memory files)."""
    total = 0
    for suffix in ("", "-wal", "-shm"):
        try:
            total += paths.soil.with_name(paths.soil.name + suffix).stat().st_size
        except OSError:
            continue
    return total


def _load_sessions(auth: WebAuth, path: Path, now: float) -> None:
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as exc:
        log.warning("web app: ignoring unreadable %s (%s); devices sign in again", path, exc)
        return
    log.info("web app: %d signed-in device(s) kept from the last run",
             auth.restore(records, now))


def _save_sessions(auth: WebAuth, path: Path, now: float) -> None:
    from mycelium.identity.keystore import write_atomic

    try:
        write_atomic(path, json.dumps(auth.snapshot(now)).encode(), mode=0o600)
    except OSError as exc:
        log.warning("web app: cannot save signed-in devices to %s: %s", path, exc)


def load_settings(path: Path) -> dict[str, str]:
    """The node page's settings (string values only; anything else is ignored)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("web app: ignoring unreadable %s (%s)", path, exc)
        return {}
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, str)}


def save_settings(settings: dict[str, str], path: Path) -> None:
    from mycelium.identity.keystore import write_atomic

    try:
        write_atomic(path, json.dumps(settings).encode(), mode=0o600)
    except OSError as exc:
        log.warning("web app: cannot save settings to %s: %s", path, exc)


def _lan_origin(port: str) -> str | None:
    """``http://<this computer's LAN IPv4>:port`` for pairing links when the app listens on
    every interface but the person browses it on 127.0.0.1 (a phone cannot reach that).
    Interfaces are read locally (ifaddr, which zeroconf already uses); nothing is sent."""
    import ipaddress

    import ifaddr

    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if not isinstance(ip.ip, str):
                continue  # IPv6 entries are tuples; a phone on the LAN has IPv4 too
            addr = ipaddress.ip_address(ip.ip)
            if not (addr.is_loopback or addr.is_link_local or addr.is_multicast):
                return f"http://{addr}:{port}"
    return None


def _display_name(paths: NodePaths) -> str | None:
    from mycelium.errors import MyceliumError
    from mycelium.identity.keystore import read_public

    try:
        return read_public(paths.keystore).name
    except (MyceliumError, OSError, ValueError):
        return None


def _listening_socket(host: str, port: int, *, fallback: bool) -> socket.socket:
    """A TCP socket listening on (host, port); if that is taken and ``fallback`` (the
    default address, e.g. a second node on this computer), on a free port instead.
    Binding *and listening* here, not in hypercorn, leaves no window between a check and
    the claim: with SO_REUSEADDR two sockets may both bind a port nobody listens on yet,
    and the second one's ``listen`` then fails (two nodes started at once crashed that
    way, found by CI), so the port counts as taken only once we listen on it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError:
        sock.close()
        if not fallback:
            raise
        log.warning("web app: %s:%d is taken (another node?); using a free port", host, port)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
        sock.listen(LISTEN_BACKLOG)
    return sock


def _public_url(bound: str, host: str) -> str:
    """hypercorn reports ``http://0.0.0.0:PORT`` for a wildcard bind: show loopback then,
    which is where the person running the node opens it."""
    if host in ("0.0.0.0", "::"):
        port = bound.rsplit(":", 1)[1]
        return f"http://127.0.0.1:{port}"
    return bound

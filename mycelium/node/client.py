"""Talk to a running node's control API, or fall back to the local store.

A running node writes ``api.json`` (mode 0600) into its home: ``{"url", "token", "pid"}``.
The CLI uses it when the node answers; a stale file (node killed) is ignored.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mycelium.errors import MyceliumError
from mycelium.paths import NodePaths

if TYPE_CHECKING:
    import httpx


class ApiError(MyceliumError):
    reason = "api_error"


#: Seconds the CLI waits for a running node's answer to operations with network transfers
#: (``LocalOps.PHASED``): an archive of up to ``archive.format.MAX_CHUNKS`` blocks moves
#: through a local IPFS node whose every request may take ``ipfs.DEFAULT_TIMEOUT_S``; a
#: gateway link is two HTTP round trips of ``ops.GATEWAY_TIMEOUT_S``, plus waiting for a
#: free worker (``phased.MAX_CONCURRENT``). The node stays responsive meanwhile.
LONG_OP_TIMEOUTS_S = {"archive_push": 600.0, "archive_pull": 600.0, "gateway_link": 90.0}


class RemoteOps:
    """Same ``call(name, **args)`` as :class:`LocalOps`, over HTTP to 127.0.0.1. Waits
    ``timeout`` seconds for an answer, or :data:`LONG_OP_TIMEOUTS_S` for slow operations."""

    def __init__(self, url: str, token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout

    def call(self, name: str, /, **args: Any) -> dict[str, Any]:
        import httpx  # only when a node runs: offline commands start without it

        try:
            resp = httpx.post(
                f"{self.url}/v1/ops/{name}", json=args, headers=self._headers,
                timeout=max(self._timeout, LONG_OP_TIMEOUTS_S.get(name, 0.0)),
            )
        except httpx.HTTPError as exc:
            raise ApiError(f"node API unreachable at {self.url}: {exc}") from exc
        body = _json_or_none(resp)
        if resp.status_code != 200 or body is None:
            message = (body or {}).get("error") or resp.text.strip() or f"HTTP {resp.status_code}"
            raise ApiError(str(message), reason=(body or {}).get("reason", "api_error"))
        return dict(body)

    def close(self) -> None:
        """Nothing to release; present so callers treat both backends alike."""


def write_api_file(path: Path, url: str, token: str) -> None:
    """Atomically publish the API endpoint with mode 0600 (token is a bearer secret)."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def running_node(paths: NodePaths) -> RemoteOps | None:
    """A client for the node running in ``paths.home``, or None if none answers."""
    try:
        info = json.loads(paths.api.read_text())
        url, token, pid = info["url"], info["token"], int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _pid_alive(pid):
        return None
    import httpx  # only when a node may be running: offline commands start without it

    try:
        resp = httpx.get(
            f"{url}/v1/health", headers={"Authorization": f"Bearer {token}"}, timeout=2.0
        )
    except httpx.HTTPError:
        return None
    return RemoteOps(url, token) if resp.status_code == 200 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _json_or_none(resp: httpx.Response) -> dict[str, Any] | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def open_ops(paths: NodePaths, get_passphrase: Any) -> Any:
    """RemoteOps for a running node, else LocalOps over the store opened directly.

    ``get_passphrase`` is called only when the store must be opened locally.
    """
    remote = running_node(paths)
    if remote is not None:
        return remote
    from mycelium.node.ops import LocalOps
    from mycelium.store.local import open_local_soil

    return LocalOps(open_local_soil(paths, get_passphrase()))


def call_op(paths: NodePaths, name: str, get_passphrase: Any, /, **args: Any) -> dict[str, Any]:
    """Run one operation on the running node, or on the local store (closed afterwards)."""
    ops = open_ops(paths, get_passphrase)
    try:
        result: dict[str, Any] = ops.call(name, **args)
        return result
    finally:
        soil = getattr(ops, "soil", None)
        if soil is not None:
            soil.close()

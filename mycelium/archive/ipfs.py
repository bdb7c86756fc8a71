"""A thin client for the IPFS RPC API (Kubo's ``/api/v0``; js-ipfs serves the same).

Four calls are all an archive needs: ``version`` (is anyone there), ``dag/import`` with
``pin-roots`` (one CAR in, root pinned), ``dag/export`` (the CAR back) and ``pin/rm``
(unpin a superseded archive). Why httpx and not ``ipfshttpclient``: the latter is
unmaintained since 2021, refuses every daemon newer than 0.8 through ``connect()``, and
hides multipart and streaming details we need to bound; httpx is already a dependency and
four POSTs are a page of code (docs/decisions.md).

Every call has a client-side timeout and passes ``timeout=`` to the node too: IPFS nodes
wait forever for a block nobody has (NOTES.md). A node that does not answer gives
:class:`IpfsUnavailable` whose one-line message names the address tried.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import httpx

from mycelium.archive.errors import ArchiveError, IpfsRefused, IpfsUnavailable

DEFAULT_API = "http://127.0.0.1:5001"
#: Environment variable that overrides :data:`DEFAULT_API` (``--ipfs-api`` beats both).
API_ENV = "MYCELIUM_IPFS_API"
DEFAULT_TIMEOUT_S = 60.0
_MULTIADDR = re.compile(r"^/(ip4|ip6|dns|dns4|dns6)/([^/]+)/tcp/(\d+)(/https?)?/?$")


def api_url(address: str | None = None) -> str:
    """``http://host:port`` from a URL or a multiaddr (``/ip4/127.0.0.1/tcp/5001[/http]``)."""
    raw = (address or os.environ.get(API_ENV) or DEFAULT_API).strip()
    match = _MULTIADDR.match(raw)
    if match:
        proto, host, port, scheme = match.groups()
        host = f"[{host}]" if proto == "ip6" else host
        return f"{(scheme or '/http')[1:]}://{host}:{port}"
    if raw.startswith(("http://", "https://")):
        return raw.rstrip("/")
    raise ArchiveError(f"IPFS API address {raw!r} is neither a URL nor a /ip4/…/tcp/… multiaddr",
                       reason="bad_ipfs_api")


class IpfsClient:
    """Synchronous RPC client (callers in trio run it in a worker thread)."""

    def __init__(self, address: str | None = None, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.url = api_url(address)
        self.timeout = timeout
        self._http = httpx.Client(base_url=f"{self.url}/api/v0", timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IpfsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> str:
        body = self._post("version").json()
        return str(body.get("Version", "?"))

    def dag_import(self, car: bytes) -> str:
        """Import one CAR, pin its root; returns the root CID the node reports."""
        resp = self._post("dag/import", params={"pin-roots": "true"},
                          files={"file": ("archive.car", car, "application/vnd.ipld.car")})
        for line in resp.text.splitlines():
            try:
                root = json.loads(line).get("Root", {})
            except ValueError:
                continue
            if root.get("PinErrorMsg"):
                raise IpfsRefused(f"IPFS node at {self.url} did not pin: {root['PinErrorMsg']}")
            if "Cid" in root:
                return str(root["Cid"]["/"])
        raise IpfsRefused(f"IPFS node at {self.url} reported no root for the imported CAR")

    def dag_export(self, cid: str, *, max_bytes: int) -> bytes:
        """The CAR of ``cid`` and every block it links to (at most ``max_bytes``)."""
        params = {"arg": cid, "timeout": f"{int(self.timeout)}s"}
        try:
            with self._http.stream("POST", "dag/export", params=params) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise self._refused("dag/export", resp)
                out = bytearray()
                for part in resp.iter_bytes():
                    out += part
                    if len(out) > max_bytes:
                        raise ArchiveError(f"archive {cid} is larger than {max_bytes} bytes",
                                           reason="archive_too_large")
                return bytes(out)
        except httpx.TimeoutException as exc:
            raise IpfsUnavailable(f"IPFS API at {self.url} timed out exporting {cid} "
                                  f"(is the archive pinned anywhere reachable?)") from exc
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc

    def pin_rm(self, cid: str) -> None:
        self._post("pin/rm", params={"arg": cid, "timeout": f"{int(self.timeout)}s"})

    def _post(self, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._http.post(path, **kwargs)
        except httpx.TimeoutException as exc:
            raise IpfsUnavailable(f"IPFS API at {self.url} did not answer {path} within "
                                  f"{self.timeout:g} s") from exc
        except httpx.TransportError as exc:
            raise self._unavailable(exc) from exc
        if resp.status_code != 200:
            raise self._refused(path, resp)
        return resp

    def _unavailable(self, exc: Exception) -> IpfsUnavailable:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return IpfsUnavailable(f"no IPFS API at {self.url} ({detail}); start Kubo or pass "
                               f"--ipfs-api")

    def _refused(self, path: str, resp: httpx.Response) -> IpfsRefused:
        try:
            message = resp.json().get("Message") or resp.text
        except ValueError:
            message = resp.text
        first = (message.strip().splitlines() or [""])[0][:200]
        return IpfsRefused(f"IPFS API at {self.url} refused {path}: HTTP {resp.status_code} "
                           f"{first}")

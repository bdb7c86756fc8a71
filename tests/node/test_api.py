"""The control API: bearer auth, operation dispatch, errors as JSON — over a real HTTP server."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from mycelium.errors import MyceliumError
from mycelium.node.api import make_api
from mycelium.node.client import RemoteOps, running_node, write_api_file
from mycelium.paths import NodePaths


class RecordingOps:
    """Stands in for LocalOps: the API layer only needs ``acall``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def call(self, name: str, **args: Any) -> dict[str, Any]:
        self.calls.append((name, args))
        if name == "boom":
            raise MyceliumError("space 'x' is unknown", reason="unknown_space")
        return {"echo": name, "args": args}

    async def acall(self, name: str, **args: Any) -> dict[str, Any]:
        return self.call(name, **args)


async def _serve(nursery: trio.Nursery, ops: Any, token: str) -> str:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(serve, make_api(ops, token), config)
    return str(binds[0])


async def _post(url: str, token: str | None, name: str, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient() as client:
        return await client.post(f"{url}/v1/ops/{name}", content=body, headers=headers)


async def test_dispatch_auth_and_errors() -> None:
    ops = RecordingOps()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await _serve(nursery, ops, "s3cret")
            ok = await _post(url, "s3cret", "doc_get", json.dumps({"space": "market"}).encode())
            assert ok.status_code == 200
            assert ok.json() == {"echo": "doc_get", "args": {"space": "market"}}
            assert (await _post(url, None, "doc_get", b"{}")).status_code == 401
            assert (await _post(url, "wrong", "doc_get", b"{}")).status_code == 401
            bad = await _post(url, "s3cret", "doc_get", b"{not json")
            assert bad.status_code == 400 and bad.json()["reason"] == "bad_json"
            refused = await _post(url, "s3cret", "boom", b"{}")
            assert refused.status_code == 400
            assert refused.json() == {"error": "space 'x' is unknown", "reason": "unknown_space"}
            nursery.cancel_scope.cancel()
    assert [c[0] for c in ops.calls] == ["doc_get", "boom"]


async def test_remote_ops_and_api_file(tmp_path: Any) -> None:
    ops = RecordingOps()
    paths = NodePaths(tmp_path)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await _serve(nursery, ops, "tok")
            write_api_file(paths.api, url, "tok")
            assert stat.S_IMODE(os.stat(paths.api).st_mode) == 0o600
            remote = await trio.to_thread.run_sync(running_node, paths)
            assert isinstance(remote, RemoteOps)
            result = await trio.to_thread.run_sync(lambda: remote.call("status"))
            assert result == {"echo": "status", "args": {}}
            with pytest.raises(MyceliumError) as err:
                await trio.to_thread.run_sync(lambda: remote.call("boom"))
            assert err.value.reason == "unknown_space"
            nursery.cancel_scope.cancel()


def test_stale_api_file_is_ignored(tmp_path: Any) -> None:
    paths = NodePaths(tmp_path)
    dead_pid = 2**22 + 12345
    paths.api.write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "t", "pid": dead_pid}))
    assert running_node(paths) is None
    paths.api.write_text("garbage")
    assert running_node(paths) is None

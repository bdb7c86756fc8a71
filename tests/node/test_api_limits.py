"""The control API refuses oversized bodies before reading them (issue 16 "Also")."""

from __future__ import annotations

import contextlib
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve

from mycelium.node.api import make_api

TOKEN = "s3cret"


class RecordingOps:
    async def acall(self, name: str, **args: Any) -> dict[str, Any]:
        return {"echo": name}


async def _serve(nursery: trio.Nursery, ops: Any, token: str) -> str:
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    binds = await nursery.start(serve, make_api(ops, token), config)
    return str(binds[0])


async def _raw_request(url: str, head: bytes, body_chunks: int = 0) -> bytes:
    """Send ``head`` (and up to ``body_chunks`` chunks of 64 KiB, chunked encoding,
    never terminated) and return the first bytes of the response."""
    host, port = url.removeprefix("http://").split(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head)

        async def feed() -> None:
            chunk = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                for _ in range(body_chunks):
                    await stream.send_all(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(feed)
            data = await stream.receive_some(4096)
            nursery.cancel_scope.cancel()
        return data


async def test_declared_oversized_body_is_refused_before_it_is_sent() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await _serve(nursery, RecordingOps(), TOKEN)
            head = (b"POST /v1/ops/doc_get HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                    b"Content-Length: 10485760\r\n\r\n")
            with trio.fail_after(5):  # no body follows: the old code waited for it
                response = await _raw_request(url, head)
            assert response.startswith(b"HTTP/1.1 413")
            nursery.cancel_scope.cancel()


async def test_streamed_body_is_cut_at_the_cap() -> None:
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            url = await _serve(nursery, RecordingOps(), TOKEN)
            head = (b"POST /v1/ops/doc_get HTTP/1.1\r\nHost: x\r\n"
                    b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n")
            with trio.fail_after(5):  # the body never ends: the old code read on
                response = await _raw_request(url, head, body_chunks=64)
            assert response.startswith(b"HTTP/1.1 413")
            nursery.cancel_scope.cancel()

"""Relay throughput (issue 12): deltas/s in and out with 1, 10 and 100 concurrent clients
on loopback, and the relay's memory per idle client.

The relay runs as its own process (``python -m bench.relay --serve``: the real
:func:`~mycelium.relay.run.serve_relay` with limits raised for a benchmark, since 100
clients from one address would otherwise hit the per-IP handshake rate). Clients run in
this process, each a real WebSocket + mutual auth + the unchanged SyncSession over an
in-memory store (:class:`~mycelium.sync.MemoryStore`), so the client side costs little.

* **in**: N clients each upload ``total / N`` fresh envelopes of their own chain at once;
  the time until the relay holds all of them (its ``/v1/relay`` usage) gives deltas/s in.
  Connection set-up is included, and, as for a real node, each session also brings the
  client what it lacks of the space so far.
* **out**: N fresh clients each download the whole space (``total`` envelopes) at once;
  N x total / time gives deltas/s out.
* **idle memory**: the relay's RSS with N idle sessions open minus its RSS with none,
  divided by N.

Numbers are side by side in one run (ratios between client counts), never asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

CLIENTS = (1, 10, 100)


# -- the relay process --------------------------------------------------------------------
def _serve(port: int, home: Path) -> None:
    from mycelium.identity.identity import Identity
    from mycelium.relay.limits import RelayLimits
    from mycelium.relay.run import RelayConfig, serve_relay
    from mycelium.relay.store import RelayStore, StoreLimits

    limits = RelayLimits(handshakes_per_ip=1e6, handshake_burst_ip=1e6,
                         handshakes_per_identity=1e6, handshake_burst_identity=1e6,
                         frames_per_identity=1e6, frame_burst_identity=1e6,
                         frames_per_ip=1e6, frame_burst_ip=1e6, max_sessions=10_000,
                         max_sessions_per_identity=1000)
    store = RelayStore.open(home / "relay.db", limits=StoreLimits(
        space_bytes=1 << 40, identity_bytes=1 << 40))
    store.conn.execute("PRAGMA synchronous=NORMAL")  # the CPU path, as sync_wire measures
    config = RelayConfig(listen=f"127.0.0.1:{port}", limits=limits)
    trio.run(serve_relay, Identity(b"\x42" * 32), store, config)


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# -- clients ------------------------------------------------------------------------------
class _Setup:
    """A community space with ``n`` member identities, registered on the relay."""

    def __init__(self, root: Path, url: str, n: int) -> None:
        from mycelium.identity.identity import Identity
        from mycelium.spaces import service
        from mycelium.store.soil import Soil

        self.url = url
        self.admin = Soil.open(root / "admin.db", Identity(b"\x01" * 32), synchronous="NORMAL")
        self.space = service.create_space(self.admin, "bench")
        #: A second space with the same members and no data: idle sessions share it.
        self.idle_space = service.create_space(self.admin, "idle")
        self.members = [Identity(bytes([2 + i // 250, i % 250]) + b"\x07" * 30)
                        for i in range(n)]
        # Membership ops only (no invite codes, whose size bounds the control log, and no
        # key boxes: the relay never checks what it cannot decrypt).
        from mycelium.log.envelope import Kind
        from mycelium.spaces import control

        for space in (self.space, self.idle_space):
            for member in self.members:
                op = control.op_add_member(lc=self.admin.space_state(space).next_lc(),
                                           member=member.public_key, role="member")
                self.admin.append(space, Kind.CONTROL, op)
        self.epoch = self.admin.space_state(self.space).current_epoch

    async def register(self) -> None:
        from mycelium.node.relay_link import registration_envelopes
        from mycelium.relay.client import RelayUrl, connect

        async with connect(RelayUrl.parse(self.url), self.admin.identity,
                           expected_did=None) as conn:
            for space in (self.space, self.idle_space):
                ok, reason = await conn.register(self.admin.genesis(space),
                                                 registration_envelopes(self.admin, space))
                assert ok, reason
            await conn.start_sync()
            await _run_session(conn, self.admin, self.admin.identity, None)


async def _run_session(conn: Any, store: Any, identity: Any, until: Any) -> None:
    """Run a session; end it when ``until()`` (checked on events and every 50 ms) holds,
    or when the peer has sent everything (CaughtUp) if ``until`` is None."""
    from mycelium.identity.didkey import public_key_from_did
    from mycelium.relay.driver import MessageSessionDriver
    from mycelium.sync import CaughtUp, SyncSession

    session = SyncSession(store, local_id=identity.public_key,
                          remote_id=public_key_from_did(conn.relay_did), initiator=True,
                          now=trio.current_time())
    done = trio.Event()

    def on_event(event: object) -> None:
        if until is None and isinstance(event, CaughtUp):
            done.set()

    driver = MessageSessionDriver(session, conn, on_event=on_event)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(driver.run)
        while not done.is_set() and driver.close_reason is None:
            if until is not None and until():
                break
            with trio.move_on_after(0.05):
                await done.wait()
        session.close("bye")
        driver.poke()
        with trio.move_on_after(5):
            while driver.close_reason is None:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def _relay_envelopes(url: str) -> int:
    for attempt in range(20):  # a busy relay may refuse a poll now and then
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                return int((await client.get(f"{url}/v1/relay")).json()["usage"]["envelopes"])
        except httpx.HTTPError:
            if attempt == 19:
                raise
            await trio.sleep(0.2)
    raise AssertionError("unreachable")


async def _upload(setup: _Setup, writers: list[Any], per_client: int) -> float:
    """The writers (members that never wrote: a second fresh chain would be a fork)
    upload ``per_client`` envelopes each at once; seconds until the relay holds all."""
    from mycelium.log.envelope import Kind
    from mycelium.relay.client import RelayUrl, connect
    from mycelium.sync import MemoryStore

    n = len(writers)
    stores = []
    for member in writers:
        store = MemoryStore()
        store.add_space(setup.space)
        for i in range(per_client):
            store.append_local(setup.space, b"%08d" % i + b"\x00" * 160,
                               signer=member.signing_key, group_key=b"\x09" * 32,
                               epoch=setup.epoch, kind=Kind.DATA)
        stores.append(store)
    target = await _relay_envelopes(setup.url) + n * per_client
    start = time.perf_counter()

    async def one(member: Any, store: Any) -> None:
        async with connect(RelayUrl.parse(setup.url), member, expected_did=None) as conn:
            await conn.start_sync()
            await _run_session(conn, store, member, lambda: held[0] >= target)

    held = [0]
    async with trio.open_nursery() as nursery:
        for member, store in zip(writers, stores, strict=True):
            nursery.start_soon(one, member, store)
        with trio.fail_after(600):
            while held[0] < target:
                held[0] = await _relay_envelopes(setup.url)
                await trio.sleep(0.05)
    return time.perf_counter() - start


async def _download(setup: _Setup, n: int, total: int) -> float:
    """N empty clients each fetch the whole space at once; seconds until all have it."""
    from mycelium.relay.client import RelayUrl, connect
    from mycelium.sync import MemoryStore

    start = time.perf_counter()

    async def one(member: Any) -> None:
        store = MemoryStore()
        store.add_space(setup.space)
        async with connect(RelayUrl.parse(setup.url), member, expected_did=None) as conn:
            await conn.start_sync()
            await _run_session(conn, store, member,
                               lambda: sum(store.version_vector(setup.space).values()) >= total)
        assert sum(store.version_vector(setup.space).values()) >= total

    async with trio.open_nursery() as nursery:
        for member in setup.members[:n]:
            nursery.start_soon(one, member)
    return time.perf_counter() - start


async def _idle_memory(setup: _Setup, pid: int, n: int) -> float:
    """KiB of relay RSS per idle session: the slope between n/2 and n open sessions (each
    client already holds the small shared space, so nothing moves once they are up)."""
    from mycelium.identity.didkey import public_key_from_did
    from mycelium.relay.client import RelayUrl, connect
    from mycelium.relay.driver import MessageSessionDriver
    from mycelium.sync import MemoryStore, SyncSession

    held = setup.admin.envelopes_since(setup.idle_space, {}, limit=100_000, max_bytes=1 << 30)
    release = trio.Event()

    async def one(member: Any, up: list[int], task_status: Any) -> None:
        store = MemoryStore()
        store.add_space(setup.idle_space)
        store.ingest(setup.idle_space, held)
        async with connect(RelayUrl.parse(setup.url), member, expected_did=None) as conn:
            await conn.start_sync()
            session = SyncSession(store, local_id=member.public_key,
                                  remote_id=public_key_from_did(conn.relay_did),
                                  initiator=True, now=trio.current_time())
            driver = MessageSessionDriver(session, conn, on_event=lambda e: None)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(driver.run)
                task_status.started()
                up[0] += 1
                await release.wait()
                nursery.cancel_scope.cancel()

    half = n // 2
    samples = []
    async with trio.open_nursery() as nursery:
        for batch in (setup.members[:half], setup.members[half:n]):
            up = [0]
            for member in batch:
                await nursery.start(one, member, up)
            await trio.sleep(2.0)  # handshakes and the first exchange settle on the relay
            samples.append(_rss_kib(pid))
        release.set()
    return (samples[1] - samples[0]) / max(1, n - half)


def run(quick: bool) -> dict[str, Any]:
    total = 600 if quick else 6000
    counts = (1, 10, 20) if quick else CLIENTS
    from simnet.backends.process import free_port

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "bench.relay", "--serve", str(port),
                                 str(root)], cwd=Path(__file__).resolve().parent.parent,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            return trio.run(_measure, root, url, proc.pid, total, counts)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def _measure(root: Path, url: str, pid: int, total: int,
                   counts: tuple[int, ...]) -> dict[str, Any]:
    with trio.fail_after(30):
        while True:
            try:
                await _relay_envelopes(url)
                break
            except httpx.HTTPError:
                await trio.sleep(0.1)
    setup = _Setup(root, url, sum(counts))
    await setup.register()
    # Idle memory first, on a fresh relay: after the bulk phases the allocator hands
    # freed memory back while sessions open, which hides their cost.
    idle_n = max(counts)
    per_idle = await _idle_memory(setup, pid, idle_n)
    rows = []
    fresh = list(setup.members)
    for n in counts:
        per = max(1, total // n)
        writers, fresh = fresh[:n], fresh[n:]
        up = await _upload(setup, writers, per)
        # the relay counts both spaces; the idle one holds only the admin's control ops
        held = await _relay_envelopes(url) - sum(
            setup.admin.version_vector(setup.idle_space).values())
        down = await _download(setup, n, held)
        rows.append({"clients": n, "uploaded": n * per, "in_s": round(up, 3),
                     "in_deltas_per_s": round(n * per / up),
                     "space_envelopes": held, "out_s": round(down, 3),
                     "out_deltas_per_s": round(n * held / down)})
    setup.admin.close()
    return {"name": "relay", "rows": rows, "idle_clients": idle_n,
            "idle_kib_per_client": round(per_idle, 1), "relay_rss_kib": _rss_kib(pid),
            "cpus": os.cpu_count()}


def markdown(result: dict[str, Any]) -> str:
    lines = ["### relay (issue 12)", "",
             "Real relay process on loopback; clients: WebSocket + mutual auth + SyncSession.",
             "", "| clients | in: deltas | in: deltas/s | out: deltas/s (each client gets "
             "the whole space) | space size |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['clients']} | {r['uploaded']} | {r['in_deltas_per_s']} | "
                     f"{r['out_deltas_per_s']} | {r['space_envelopes']} |")
    lines += ["", f"Relay memory per idle session ({result['idle_clients']} open): "
              f"{result['idle_kib_per_client']} KiB (relay RSS {result['relay_rss_kib']} KiB)."]
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", nargs=2, metavar=("PORT", "HOME"))
    args = parser.parse_args()
    if args.serve:
        _serve(int(args.serve[0]), Path(args.serve[1]))

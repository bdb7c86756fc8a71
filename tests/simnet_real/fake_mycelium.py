"""A stand-in ``mycelium`` CLI for testing simnet's orchestration without the real node.

It speaks the DESIGN §10 subset the backends use (init, id, space create/invite/join/
remove, doc put, status, run) with the same JSON shapes. ``run`` really networks: every
0.1 s it dials each ``--peer`` address (through the fault proxy, in the process backend)
and the two sides swap version vectors as JSON lines and keep the per-author maximum, so
partitions, crashes and heals have the same visible effect as on real nodes: vectors
diverge while cut and converge after heal. State lives in ``HOME/state.json`` under a lock,
which is how CLI writes reach a running ``run``.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

State = dict[str, Any]


def opt(args: list[str], name: str, default: str | None = None) -> str | None:
    if name in args:
        return args[args.index(name) + 1]
    return default


def opts(args: list[str], name: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == name]


def positional(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--home", "--name", "--data", "--listen", "--peer", "--api", "--relay"):
            skip = True
        elif not a.startswith("--"):
            out.append(a)
    return out


@contextlib.contextmanager
def locked(home: Path) -> Iterator[State]:
    with (home / "state.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        state = json.loads((home / "state.json").read_text())
        yield state
        tmp = home / "state.tmp"
        tmp.write_text(json.dumps(state))
        os.replace(tmp, home / "state.json")


def read(home: Path) -> State:
    with locked(home) as state:
        return state


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, sort_keys=True))


def running(home: Path) -> bool:
    try:
        os.kill(int((home / "run.pid").read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def merge(state: State, spaces: dict[str, dict[str, int]]) -> None:
    for sid, vector in spaces.items():
        if sid not in state["spaces"]:
            continue
        mine = state["spaces"][sid]["vector"]
        for author, seq in vector.items():
            mine[author] = max(mine.get(author, 0), seq)


def vectors(state: State) -> dict[str, dict[str, int]]:
    return {sid: s["vector"] for sid, s in state["spaces"].items()}


def run(home: Path, args: list[str]) -> None:
    import trio

    listen = opt(args, "--listen", "/ip4/127.0.0.1/tcp/0") or ""
    host, port = listen.split("/")[2], int(listen.split("/")[4])
    peers = [(p.split("/")[2], int(p.split("/")[4])) for p in opts(args, "--peer")]
    discover = "--no-mdns" not in args

    async def exchange(stream: trio.abc.Stream, first: bool) -> None:
        buf = b""

        async def line() -> bytes:
            nonlocal buf
            while b"\n" not in buf:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise EOFError
                buf += chunk
            out, _, buf = buf.partition(b"\n")
            return out

        if first:
            await stream.send_all(json.dumps(vectors(read(home))).encode() + b"\n")
            theirs = json.loads(await line())
        else:
            theirs = json.loads(await line())
            await stream.send_all(json.dumps(vectors(read(home))).encode() + b"\n")
        with locked(home) as state:
            merge(state, theirs)

    async def serve(stream: trio.SocketStream) -> None:
        with contextlib.suppress(Exception):
            async with stream:
                with trio.fail_after(2):
                    await exchange(stream, first=False)

    async def beacon() -> None:
        """Stand-in for mDNS: announce ``host port`` on a multicast group, learn others."""
        group, mport = "239.255.231.2", 45232
        tx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        tx.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(host))
        rx = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        await rx.bind(("", mport))
        rx.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                      socket.inet_aton(group) + socket.inet_aton(host))

        async def listen() -> None:
            while True:
                data, _ = await rx.recvfrom(100)
                h, p = data.decode().split()
                if (h, int(p)) != (host, port) and (h, int(p)) not in peers:
                    peers.append((h, int(p)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            while True:
                with contextlib.suppress(OSError):
                    await tx.sendto(f"{host} {port}".encode(), (group, mport))
                await trio.sleep(0.2)

    async def dial_loop() -> None:
        while True:
            for peer in list(peers):
                with contextlib.suppress(Exception), trio.move_on_after(1):
                    stream = await trio.open_tcp_stream(*peer)
                    async with stream:
                        await exchange(stream, first=True)
            await trio.sleep(0.1)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(trio.serve_tcp, serve, port, host=host))
            (home / "run.pid").write_text(str(os.getpid()))
            nursery.start_soon(dial_loop)
            if discover:
                nursery.start_soon(beacon)

    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    trio.run(main)


def main() -> None:
    args = sys.argv[1:]
    home = Path(opt(args, "--home") or ".")
    pos = positional(args)
    cmd = pos[0] if pos else ""
    if cmd == "init":
        home.mkdir(parents=True, exist_ok=True)
        tag = secrets.token_hex(6)
        (home / "state.json").write_text(json.dumps(
            {"did": f"did:key:z6Mkfake{tag}", "peer_id": f"12D3KooWfake{tag}", "spaces": {}}))
        return
    if not (home / "state.json").exists():
        print("error: no identity: run mycelium init", file=sys.stderr)
        sys.exit(1)
    handlers: dict[str, Callable[[], None]] = {
        "id": lambda: emit({k: read(home)[k] for k in ("did", "peer_id")}),
        "status": lambda: status(home),
        "space": lambda: space(home, pos[1:]),
        "doc": lambda: doc(home, pos[1:]),
        "run": lambda: run(home, args),
    }
    if cmd not in handlers:
        print(f"error: fake mycelium has no command {cmd!r}", file=sys.stderr)
        sys.exit(2)
    handlers[cmd]()


def status(home: Path) -> None:
    state = read(home)
    emit({"did": state["did"], "peer_id": state["peer_id"], "running": running(home),
          "spaces": [{"space_id": sid, "name": s["name"], "vector": s["vector"],
                      "deltas": sum(s["vector"].values())}
                     for sid, s in state["spaces"].items()]})


def space(home: Path, pos: list[str]) -> None:
    if pos[0] == "create":
        sid = secrets.token_hex(16)
        with locked(home) as state:
            state["spaces"][sid] = {"name": pos[1], "vector": {}}
        emit({"space_id": sid})
    elif pos[0] == "invite":
        code = base64.urlsafe_b64encode(json.dumps({"sid": pos[1]}).encode()).decode()
        emit({"invite": code})
    elif pos[0] == "join":
        sid = json.loads(base64.urlsafe_b64decode(pos[1]))["sid"]
        with locked(home) as state:
            state["spaces"][sid] = {"name": "community", "vector": {}}
        emit({"space_id": sid})
    elif pos[0] == "remove":
        emit({"removed": pos[2]})


def doc(home: Path, pos: list[str]) -> None:
    assert pos[0] == "put"
    with locked(home) as state:
        vector = state["spaces"][pos[1]]["vector"]
        vector[state["did"]] = seq = vector.get(state["did"], 0) + 1
    emit({"seq": seq})


if __name__ == "__main__":
    main()

"""The namespace LAN: reachability, partitions, heal, multicast, loss, teardown (root)."""

from __future__ import annotations

import os
import sys

import pytest
import trio

from simnet.faults import LinkParams, SimnetError
from simnet.lan import Lan, leftover_namespaces

pytestmark = [pytest.mark.root, pytest.mark.timeout(60), pytest.mark.usefixtures("root_lan_tools")]

RUN = "t" + str(os.getpid())

RECEIVER = r"""
import socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", 45231))
mreq = struct.pack("4s4s", socket.inet_aton("239.255.231.1"), socket.inet_aton(sys.argv[1]))
s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
s.settimeout(8)
print("ready", flush=True)
data, addr = s.recvfrom(100)
print(data.decode(), addr[0], flush=True)
"""

SENDER = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
for _ in range(20):
    s.sendto(b"hello-mcast", ("239.255.231.1", 45231))
    time.sleep(0.1)
"""


async def ping(lan: Lan, src: int, dst: int, *, count: int = 3, wait_s: int = 2) -> bool:
    """True if any of ``count`` echo requests is answered (ARP may need a retry after a
    fault is lifted, hence several)."""
    result = await lan.run(
        src, ["ping", "-c", str(count), "-W", str(wait_s), "-i", "0.2", lan.address(dst)],
        check=False, timeout=15,
    )
    return result.returncode == 0


async def test_ping_partition_heal_teardown() -> None:
    with trio.fail_after(45):
        async with Lan(3, RUN) as lan:
            assert len(leftover_namespaces(RUN)) == 4
            assert lan.address(1) == "10.231.0.2"
            assert await ping(lan, 0, 1)
            assert await ping(lan, 2, 0)

            await lan.disconnect(1)
            assert not await ping(lan, 0, 1, count=1, wait_s=1)
            assert await ping(lan, 0, 2)
            await lan.heal()
            assert await ping(lan, 0, 1)

            await lan.split([[0], [1, 2]])
            assert not await ping(lan, 0, 1, count=1, wait_s=1)
            assert await ping(lan, 1, 2)
            await lan.heal()
            assert await ping(lan, 0, 1)

            await lan.partition([[0, 1], [2]])
            assert not await ping(lan, 2, 0, count=1, wait_s=1)
            assert await ping(lan, 0, 1)
            await lan.heal()
            assert await ping(lan, 2, 0)
    assert leftover_namespaces(RUN) == []


async def test_multicast_crosses_the_bridge() -> None:
    with trio.fail_after(30):
        async with Lan(2, RUN) as lan:
            rx = await lan.exec(
                1, [sys.executable, "-c", RECEIVER, lan.address(1)], stdout=-1
            )
            assert rx.stdout is not None
            first = await rx.stdout.receive_some(100)
            assert first.startswith(b"ready")
            await lan.run(0, [sys.executable, "-c", SENDER, lan.address(0)], timeout=10)
            out = b""
            with trio.move_on_after(5):
                while b"\n" not in out:
                    chunk = await rx.stdout.receive_some(100)
                    if not chunk:
                        break
                    out += chunk
            assert out.decode().split() == ["hello-mcast", lan.address(0)]
            await rx.wait()
    assert leftover_namespaces(RUN) == []


async def test_loss_and_bandwidth_rules_apply() -> None:
    with trio.fail_after(45):
        async with Lan(2, RUN) as lan:
            await lan.set_loss(1, 1.0)
            assert 'iifname "v1" drop' in lan.nft_ruleset()
            await lan.set_loss(0, 0.25)
            assert "numgen random mod 10000 < 2500 drop" in lan.nft_ruleset()
            await lan.set_loss(0, 0)
            assert not await ping(lan, 0, 1, count=1, wait_s=1)
            await lan.set_loss(1, 0.0)
            assert await ping(lan, 0, 1)
            await lan.set_bandwidth(1, 50_000)
            assert await ping(lan, 0, 1)
            await lan.set_bandwidth(1, None)


ECHO_SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 4001))
s.listen()
print("ready", flush=True)
while True:
    c, _ = s.accept()
    with c:
        while data := c.recv(100):
            c.sendall(data)
"""

ECHO_CLIENT = r"""
import socket, sys, time
s = socket.create_connection((sys.argv[1], 4001), timeout=5)
best = 9.0
for _ in range(5):
    t = time.monotonic()
    s.sendall(b"ping")
    assert s.recv(100) == b"ping"
    best = min(best, time.monotonic() - t)
print(best)
"""


async def test_delay_by_transparent_proxy() -> None:
    with trio.fail_after(45):
        async with Lan(2, RUN) as lan:
            server = await lan.exec(1, [sys.executable, "-c", ECHO_SERVER, lan.address(1)],
                                    stdout=-1)
            assert server.stdout is not None
            assert (await server.stdout.receive_some(100)).startswith(b"ready")

            async def best_rtt() -> float:
                out = await lan.run(0, [sys.executable, "-c", ECHO_CLIENT, lan.address(1)])
                return float(out.stdout)

            assert await best_rtt() < 0.05
            await lan.set_delay(0, LinkParams(latency_s=0.06))
            assert await best_rtt() >= 0.12
            await lan.set_delay(0, LinkParams(latency_s=0.01))  # replaced, not stacked
            assert 0.02 <= await best_rtt() < 0.1
            await lan.set_delay(0, None)
            assert await best_rtt() < 0.05


async def test_teardown_on_error_and_processes_killed() -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with Lan(2, RUN) as lan:
            proc = await lan.exec(0, ["sleep", "60"])
            raise RuntimeError("boom")
    assert proc.returncode is not None
    assert leftover_namespaces(RUN) == []


def test_bad_arguments() -> None:
    with pytest.raises(SimnetError):
        Lan(0)
    with pytest.raises(SimnetError, match="run id"):
        Lan(2, "Bad_Id")

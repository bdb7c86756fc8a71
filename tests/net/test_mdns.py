"""mDNS discovery (libp2p spec TXT records, zeroconf bridged into trio; pitfall 6).

Measured here: zeroconf multicast over 127.0.0.1 works in one process (lo has no
MULTICAST flag, but the kernel loops the packets back), so the loopback test runs
unprivileged. The namespace test needs root and builds a bridge LAN (NOTES.md).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys

import pytest
import trio

from mycelium.identity.identity import Identity
from mycelium.net.mdns import (
    DiscoveredPeer,
    MdnsDiscovery,
    decode_txt,
    encode_txt,
    instance_name,
    peer_from_addrs,
)
from tests.ci import unavailable

pytestmark = pytest.mark.timeout(60)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_instance_names_follow_the_spec() -> None:
    rng = random.Random(1)
    names = [instance_name(rng) for _ in range(200)]
    assert all(32 <= len(n) <= 63 and n.isalnum() for n in names)
    assert len(set(names)) == 200


def test_announcement_skips_loopback_and_picks_interfaces() -> None:
    pid = Identity.generate().peer_id
    lan = MdnsDiscovery(pid, ["/ip4/10.231.0.1/tcp/1", "/ip4/127.0.0.1/tcp/1"])
    assert lan.addrs == [f"/ip4/10.231.0.1/tcp/1/p2p/{pid}"]
    assert lan.interfaces == ["10.231.0.1"]
    local = MdnsDiscovery(pid, ["/ip4/127.0.0.1/tcp/1"])
    assert local.addrs == [f"/ip4/127.0.0.1/tcp/1/p2p/{pid}"] and local.interfaces == ["127.0.0.1"]
    assert MdnsDiscovery(pid, ["/ip6/::1/tcp/1"]).interfaces is None


def test_txt_records_round_trip_and_group_by_peer() -> None:
    pid = Identity.generate().peer_id
    addrs = [f"/ip4/10.231.0.1/tcp/4001/p2p/{pid}", f"/ip4/127.0.0.1/tcp/4001/p2p/{pid}"]
    raw = encode_txt(addrs)
    assert raw[0] == len(b"dnsaddr=" + addrs[0].encode())
    assert decode_txt(raw + b"\x03foo" + b"\x05dnsad") == addrs
    assert peer_from_addrs(decode_txt(raw)[::-1]) == DiscoveredPeer(pid, tuple(addrs))
    other = Identity.generate().peer_id
    assert peer_from_addrs([addrs[0], f"/ip4/1.2.3.4/tcp/1/p2p/{other}"]) is None
    assert peer_from_addrs(["/ip4/1.2.3.4/tcp/1"]) is None


async def _start_or_skip(disc: MdnsDiscovery) -> MdnsDiscovery:
    try:
        return await disc.__aenter__()
    except OSError as exc:
        unavailable(f"zeroconf cannot use 127.0.0.1 multicast here: {exc!r}")


async def test_loopback_discovery_in_one_process() -> None:
    """Two announcers on 127.0.0.1 find each other once each, never themselves."""
    ids = [Identity.generate().peer_id for _ in range(2)]
    discs = [
        MdnsDiscovery(pid, [f"/ip4/127.0.0.1/tcp/{4001 + i}"], interfaces=["127.0.0.1"])
        for i, pid in enumerate(ids)
    ]
    with trio.fail_after(30):
        started = [await _start_or_skip(d) for d in discs]
        try:
            found: dict[str, list[DiscoveredPeer]] = {pid: [] for pid in ids}

            async def watch(d: MdnsDiscovery) -> None:
                async for peer in d.peers():
                    found[d.peer_id].append(peer)

            async with trio.open_nursery() as nursery:
                for d in started:
                    nursery.start_soon(watch, d)
                with trio.move_on_after(15):
                    while not all(
                        any(p.peer_id in ids for p in found[pid]) for pid in ids
                    ):
                        await trio.sleep(0.05)
                # A repeated announcement must not yield the peer again. Replay one, then
                # a goodbye and a return: the return is yielded, and it is behind the
                # replay in the same channel, so seeing it proves the replay was handled
                # (no sleep that passes vacuously on a slow machine).
                announced = started[1]._info.name
                for removed in (False, True, False):
                    started[0]._post(announced, removed)
                with trio.move_on_after(15):
                    while [p.peer_id for p in found[ids[0]]].count(ids[1]) < 2:
                        await trio.sleep(0.05)
                nursery.cancel_scope.cancel()
            # Other test runs on this machine may announce on loopback too: only look at
            # our two peers.
            assert [p.peer_id for p in found[ids[0]] if p.peer_id in ids] == [ids[1]] * 2, found
            assert [p.peer_id for p in found[ids[1]] if p.peer_id in ids] == [ids[0]], found
            seen = next(p for p in found[ids[0]] if p.peer_id == ids[1])
            assert seen.addrs == (f"/ip4/127.0.0.1/tcp/4002/p2p/{ids[1]}",)
            assert started[0].seen_count >= 1
            assert started[0].status().endswith("peer(s) seen")
        finally:
            for d in started:
                await d.__aexit__(None, None, None)


async def test_status_blames_multicast_when_nobody_is_seen() -> None:
    # No zeroconf here: other test runs on this machine may announce on loopback too.
    disc = MdnsDiscovery(Identity.generate().peer_id, ["/ip4/127.0.0.1/tcp/4009"],
                         quiet_after=0.0)
    assert disc.seen_count == 0
    assert "multicast may be blocked" in disc.status()
    assert "--peer or a relay" in disc.status()
    assert MdnsDiscovery("x", [], quiet_after=60).status() == "mDNS: searching"


async def test_cancel_closes_cleanly() -> None:
    import threading

    before = threading.active_count()
    with trio.fail_after(20):
        with trio.move_on_after(2.5):
            async with MdnsDiscovery(Identity.generate().peer_id, ["/ip4/127.0.0.1/tcp/1"],
                                     interfaces=["127.0.0.1"]) as disc:
                async for _ in disc.peers():
                    pass
        # zeroconf's loop thread is gone (trio's idle worker threads may linger, they are
        # trio's cache, not ours); polled, as the thread ends just after close() returns
        with trio.move_on_after(10):
            while [t for t in threading.enumerate() if "zeroconf" in t.name.lower()]:
                await trio.sleep(0.02)
    assert not [t for t in threading.enumerate() if "zeroconf" in t.name.lower()]
    assert threading.active_count() <= before + 2


# -- two network namespaces on a bridge (root) --------------------------------------


async def _ip(*args: str) -> None:
    await trio.run_process(["ip", *args], capture_stdout=True, capture_stderr=True)


async def _make_lan(prefix: str, n: int) -> list[str]:
    lan = f"{prefix}-lan"
    names = [lan]
    await _ip("netns", "add", lan)
    await _ip("-n", lan, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0",
              "stp_state", "0", "forward_delay", "0")
    await _ip("-n", lan, "link", "set", "br0", "up")
    for i in range(1, n + 1):
        ns = f"{prefix}-{i}"
        names.append(ns)
        await _ip("netns", "add", ns)
        await _ip("link", "add", "eth0", "netns", ns, "type", "veth", "peer", "name", f"v{i}",
                  "netns", lan)
        await _ip("-n", lan, "link", "set", f"v{i}", "master", "br0", "up")
        await _ip("-n", ns, "addr", "add", f"10.231.0.{i}/24", "dev", "eth0")
        await _ip("-n", ns, "link", "set", "eth0", "multicast", "on", "up")
        await _ip("-n", ns, "link", "set", "lo", "up")
        await _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
    return names


async def _run_probes(prefix: str, n: int, extra: list[str]) -> list[list[dict[str, object]]]:
    outputs: list[list[dict[str, object]]] = [[] for _ in range(n)]

    async def probe(i: int) -> None:
        cmd = ["ip", "netns", "exec", f"{prefix}-{i + 1}", sys.executable, "-m",
               "tests.net.mdns_probe", "--ip", f"10.231.0.{i + 1}", "--expect", str(n), *extra]
        proc = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, cwd=ROOT,
                                      check=False)
        outputs[i] = [json.loads(line) for line in proc.stdout.decode().splitlines()
                      if line.startswith("{")]
        assert proc.returncode == 0, proc.stderr.decode()[-2000:]

    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(probe, i)
    return outputs


def _need_root() -> None:
    if os.geteuid() != 0:
        unavailable("needs root for ip netns (run as root to include it)")
    if shutil.which("ip") is None:
        unavailable("iproute2 'ip' not installed")


@pytest.mark.root
@pytest.mark.timeout(90)
@pytest.mark.parametrize("sync", [0, 25])
async def test_two_namespaces_discover_each_other(sync: int) -> None:
    """Each node, in its own namespace on a bridge, finds the other by mDNS; with
    ``sync`` they then dial over libp2p and converge on a shared space."""
    _need_root()
    prefix = f"mnet-{os.getpid()}-{sync}"
    names: list[str] = []
    try:
        with trio.fail_after(60):
            names = await _make_lan(prefix, 2)
            extra = ["--seconds", "25"] + (["--sync", str(sync)] if sync else [])
            (out1, out2) = await _run_probes(prefix, 2, extra)
    finally:
        with trio.CancelScope(shield=True):
            for ns in names:
                await trio.run_process(["ip", "netns", "del", ns], check=False,
                                       capture_stderr=True)
    id1, id2 = out1[0]["self"], out2[0]["self"]
    assert [o["found"] for o in out1 if "found" in o] == [id2]
    assert [o["found"] for o in out2 if "found" in o] == [id1]
    found_by_1 = next(o for o in out1 if "found" in o)
    assert found_by_1["addrs"] == [f"/ip4/10.231.0.2/tcp/{_port(out2[0])}/p2p/{id2}"]
    if sync:
        (s1,) = [o["synced"] for o in out1 if "synced" in o]
        (s2,) = [o["synced"] for o in out2 if "synced" in o]
        assert s1 == s2
        assert sorted(s1.values()) == [sync, sync]


def _port(self_line: dict[str, object]) -> str:
    addrs = self_line["addrs"]
    assert isinstance(addrs, list)
    return str(addrs[0]).split("/")[4]


async def test_peer_that_restarts_is_yielded_again() -> None:
    """A goodbye forgets the peer, so its return (same addresses) is reported again."""
    me, other = Identity.generate().peer_id, Identity.generate().peer_id
    addr = ["/ip4/127.0.0.1/tcp/4011"]
    seen: list[DiscoveredPeer] = []
    with trio.fail_after(40):
        watcher = await _start_or_skip(MdnsDiscovery(me, ["/ip4/127.0.0.1/tcp/4010"]))
        try:
            async def watch() -> None:
                async for peer in watcher.peers():
                    if peer.peer_id == other:
                        seen.append(peer)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                for round_ in (1, 2):
                    async with MdnsDiscovery(other, addr):
                        with trio.move_on_after(15):
                            while len(seen) < round_:
                                await trio.sleep(0.05)
                    with trio.move_on_after(15):  # the goodbye arrives and is handled
                        while other in watcher._known:
                            await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
        finally:
            await watcher.__aexit__(None, None, None)
    assert len(seen) == 2 and seen[0] == seen[1]

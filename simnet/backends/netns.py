"""The netns backend: a scenario on real ``mycelium`` processes in network namespaces.

Each node runs in its own namespace on the emulated LAN of :class:`~simnet.lan.Lan`
(10.231.0.<i+1>/24 on one bridge), listens on its LAN address and finds its neighbours
with real mDNS, like on a community Wi-Fi: no static peers, no proxy. CLI commands run
inside the node's namespace (``ip netns exec``) because the control API listens on that
namespace's loopback.

Fault mapping from the scenario's link model:

* partitions: ports move to separate bridges (split brain: no carrier change, multicast
  and unicast both cut); heal moves them back;
* loss ``p`` per link: each node's port drops a fraction ``1 - sqrt(1 - p)`` of frames in
  each direction (nft ``numgen random``), so a frame crossing two ports is lost with
  probability ``p``. Real packet loss: TCP retransmits, mDNS datagrams are simply lost;
* bandwidth: ``tc tbf`` on both ends of each node's veth (per node, not per link);
* latency/jitter: no ``tc netem`` in this kernel, so each namespace runs a transparent
  :mod:`simnet.proxy` that the node's outgoing TCP is redirected to (nft ``redirect``);
  it delays both directions of the connections that node dials. mDNS is not delayed.

Needs root (or a user namespace: ``unshare -rn --mount``); otherwise
:class:`~simnet.errors.BackendUnavailable` with instructions.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from simnet.backends import link_params
from simnet.backends.process import NodeProcess, RealBackendBase
from simnet.errors import BackendUnavailable
from simnet.faults import SimnetError
from simnet.lan import Lan, require_root, run_admin
from simnet.scenario import Scenario

#: TCP port every node listens on (each has its own address, so they do not clash).
NODE_PORT = 4001


def per_port_loss(link_loss: float) -> float:
    """Drop probability per bridge port so that a frame crossing two ports (sender's and
    receiver's) is lost with probability ``link_loss``."""
    return 1.0 - math.sqrt(1.0 - link_loss)


class NetnsBackend(RealBackendBase):
    """Nodes in namespaces on one bridge, discovering each other with mDNS."""

    backend = "netns"

    def __init__(self, scenario: Scenario, *, run_id: str | None = None, **kwargs: Any) -> None:
        try:
            require_root()
        except SimnetError as exc:
            raise BackendUnavailable(str(exc)) from None
        super().__init__(scenario, **kwargs)
        self.run_id = run_id or secrets.token_hex(3)
        self.lan: Lan | None = None
        self.delay = dataclasses.replace(link_params(scenario.link), loss=0.0,
                                         bandwidth_bps=None)
        if scenario.link.latency.mean_ms() > 0:
            self.notes.append(
                f"netns backend: link latency ({scenario.link.latency.mean_ms():.1f} ms mean) "
                "applied to TCP by a transparent proxy per namespace (no tc netem here); "
                "mDNS datagrams are not delayed"
            )
        if scenario.topology.kind != "full":
            self.notes.append(f"netns backend: topology {scenario.topology.kind!r} ignored; "
                              "every node shares one LAN and mDNS finds everyone")

    @asynccontextmanager
    async def network(self) -> AsyncIterator[None]:
        async with Lan(self.scenario.nodes, self.run_id) as lan:
            self.lan = lan
            link = self.scenario.link
            for i in range(self.scenario.nodes):
                if link.loss > 0:
                    await lan.set_loss(i, per_port_loss(link.loss))
                if link.bandwidth > 0:
                    await lan.set_bandwidth(i, link.bandwidth)
                if link.latency.mean_ms() > 0:
                    await lan.set_delay(i, self.delay, seed=self.seed * 1000 + i)
            try:
                yield
            finally:
                self.lan = None

    def make_node(self, i: int) -> NodeProcess:
        assert self.lan is not None
        return NodeProcess(
            f"node{i}", self.workdir / f"node{i}", command=self.command,
            prefix=["ip", "netns", "exec", self.lan.namespace(i)],
            direct_api=False, cli_limiter=self.cli_limiter,
        )

    async def run_args(self, i: int) -> list[str]:
        assert self.lan is not None
        return ["--listen", f"/ip4/{self.lan.address(i)}/tcp/{NODE_PORT}",
                "--api", "127.0.0.1:0"]

    async def partition(self, sides: list[list[int]]) -> None:
        assert self.lan is not None
        await self.lan.split(sides)

    async def heal(self) -> None:
        assert self.lan is not None
        await self.lan.heal()

    async def bytes_per_link(self) -> dict[str, int]:
        """Veth counters seen from the bridge: ``i->lan`` = bytes node i sent."""
        assert self.lan is not None
        result = await run_admin(["ip", "-n", self.lan.lan_ns, "-j", "-s", "link", "show"])
        counters: dict[str, int] = {}
        for dev in json.loads(result.stdout or b"[]"):
            name = str(dev.get("ifname", ""))
            if not (name.startswith("v") and name[1:].isdigit()):
                continue
            stats = dev.get("stats64", {})
            counters[f"{name[1:]}->lan"] = int(stats.get("rx", {}).get("bytes", 0))
            counters[f"lan->{name[1:]}"] = int(stats.get("tx", {}).get("bytes", 0))
        return dict(sorted(counters.items()))

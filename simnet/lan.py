"""An emulated LAN of network namespaces for simnet's netns backend (root only).

Layout (NOTES.md, "A LAN that worked"): one namespace ``msim-<run>-lan`` holds a bridge
``br0`` (``mcast_snooping 0 stp_state 0 forward_delay 0``, so multicast/mDNS floods at once);
node ``i`` lives in namespace ``msim-<run>-<i>`` with ``eth0`` = 10.231.0.<i+1>/24, paired
with port ``v<i>`` on the bridge. Nothing is routed outside: the LAN namespace has no
uplink, so traffic can only reach the other test namespaces.

Faults, all on the LAN side so the node sees what a Wi-Fi client would see:

* :meth:`Lan.disconnect` / :meth:`Lan.reconnect`: carrier loss (``ip link set v<i> down|up``);
* :meth:`Lan.split`: move ports to further bridges (split brain, no carrier change);
* :meth:`Lan.block`: nft bridge rule dropping one pair, silently (optionally one-way);
* :meth:`Lan.set_loss`: nft ``numgen random`` drop of a fraction of the node's frames;
* :meth:`Lan.set_bandwidth`: ``tc tbf`` on both ends of the node's veth;
* :meth:`Lan.set_delay`: this kernel has no ``tc netem``, so delay is done in userspace:
  a transparent :mod:`simnet.proxy` in the node's namespace, fed by an nft ``redirect``
  of the node's outgoing TCP. TCP only (mDNS/UDP is not delayed); packet-level delay
  would need an NFQUEUE daemon (``NetfilterQueue`` + ``libnetfilter-queue-dev``), which
  is not implemented.

Teardown deletes every namespace by name (veths and bridges go with them) after killing
the processes inside; :func:`cleanup_leftovers` removes what a crashed run left behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Collection, Mapping, Sequence
from types import TracebackType

import trio

from simnet.faults import LinkParams, SimnetError
from simnet.proxy import PROXY_MARK

NS_PREFIX = "msim-"
SUBNET = "10.231.0"
MAX_NODES = 250
_RUN_ID = re.compile(r"^[a-z0-9]{1,16}$")
_BRIDGE_OPTS = ("type", "bridge", "mcast_snooping", "0", "stp_state", "0", "forward_delay", "0")
_NFT_TABLE = "msim"
_NFT_NAT_TABLE = "msim_delay"
#: Port of the per-namespace delay proxy (on the namespace's own loopback).
DELAY_PROXY_PORT = 15001


def require_root() -> None:
    """Raise a clear :class:`SimnetError` unless we can create network namespaces."""
    if os.geteuid() != 0:
        raise SimnetError(
            "netns backend needs root: run as root or inside `unshare -rn --mount` "
            "(then `mount -t tmpfs none /run && mkdir /run/netns` first)",
            reason="not_root",
        )
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            raise SimnetError(
                f"netns backend needs `{tool}`: apt-get install -y iproute2 nftables",
                reason="missing_tool",
            )


async def run_admin(
    argv: Sequence[str], *, stdin: bytes | None = None, timeout: float = 15.0, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """Run an administrative command (ip/nft/tc) with a timeout; errors carry its stderr."""
    try:
        with trio.fail_after(timeout):
            result = await trio.run_process(
                list(argv), stdin=stdin, capture_stdout=True, capture_stderr=True, check=False
            )
    except trio.TooSlowError:
        raise SimnetError(f"`{' '.join(argv)}` took longer than {timeout} s") from None
    if check and result.returncode != 0:
        err = result.stderr.decode(errors="replace").strip()
        raise SimnetError(f"`{' '.join(argv)}` failed ({result.returncode}): {err}")
    return result


async def _ip_batch(namespace: str | None, commands: Sequence[str]) -> None:
    """Several ``ip`` commands in one process (``ip -batch``), in ``namespace`` if given."""
    where = ["-n", namespace] if namespace else []
    await run_admin(["ip", *where, "-batch", "-"], stdin="\n".join(commands).encode())


def leftover_namespaces(run_id: str | None = None) -> list[str]:
    """Namespaces named ``msim-…`` (or ``msim-<run_id>-…``) that exist right now."""
    prefix = NS_PREFIX if run_id is None else f"{NS_PREFIX}{run_id}-"
    try:
        out = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix)]


def cleanup_leftovers(run_id: str | None = None) -> list[str]:
    """Kill processes in and delete every ``msim-`` namespace (of one run, or all).

    Synchronous on purpose: it is also called from ``finally`` blocks after a trio run
    died, from test fixtures, and by ``python -m simnet.lan --cleanup``.
    """
    removed = []
    for name in leftover_namespaces(run_id):
        _kill_namespace_pids(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10, check=False)
        removed.append(name)
    return removed


def _kill_namespace_pids(name: str) -> None:
    try:
        out = subprocess.run(
            ["ip", "netns", "pids", name], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return
    for token in out.split():
        with contextlib.suppress(ValueError, ProcessLookupError, PermissionError):
            os.kill(int(token), signal.SIGKILL)


class Lan:
    """``async with Lan(n, run_id) as lan``: n namespaces on one bridge, torn down on exit.

    Node indices are 0-based; node ``i`` has address ``10.231.0.<i+1>``.
    """

    def __init__(self, n: int, run_id: str | None = None, *, setup_timeout: float = 60.0) -> None:
        if not 1 <= n <= MAX_NODES:
            raise SimnetError(f"a LAN holds 1..{MAX_NODES} nodes, not {n}")
        run_id = run_id or secrets.token_hex(3)
        if not _RUN_ID.match(run_id):
            raise SimnetError(f"run id must match {_RUN_ID.pattern} (used in names): {run_id!r}")
        self.n = n
        self.run_id = run_id
        self.lan_ns = f"{NS_PREFIX}{run_id}-lan"
        self._setup_timeout = setup_timeout
        self._bridge_of: dict[int, int] = {}
        self._bridges: set[int] = set()
        self._down: set[int] = set()
        self._blocked: set[tuple[int, int]] = set()
        self._loss: dict[int, float] = {}
        self._procs: list[trio.Process] = []
        self._delay_procs: dict[int, trio.Process] = {}
        self._up = False

    # -- names ----------------------------------------------------------------------------

    def namespace(self, i: int) -> str:
        self._check(i)
        return f"{NS_PREFIX}{self.run_id}-{i}"

    def address(self, i: int) -> str:
        """The node's IPv4 address on the LAN."""
        self._check(i)
        return f"{SUBNET}.{i + 1}"

    def port_name(self, i: int) -> str:
        """The bridge-side veth of node ``i`` (in the LAN namespace)."""
        self._check(i)
        return f"v{i}"

    def _check(self, i: int) -> None:
        if not 0 <= i < self.n:
            raise SimnetError(f"node index {i} out of range 0..{self.n - 1}")

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Lan:
        require_root()
        if leftover_namespaces(self.run_id):
            raise SimnetError(
                f"namespaces for run {self.run_id!r} already exist; remove them with "
                f"`python -m simnet.lan --cleanup {self.run_id}`"
            )
        try:
            with trio.fail_after(self._setup_timeout):
                await self._build()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._teardown()
            raise
        self._up = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with trio.CancelScope(shield=True):
            await self._teardown()

    async def _build(self) -> None:
        root = [f"netns add {self.lan_ns}"]
        root += [f"netns add {self.namespace(i)}" for i in range(self.n)]
        # `ip link add eth0 …` (never a name like `a`, which parses as `address`).
        root += [
            f"link add eth0 netns {self.namespace(i)} type veth peer name v{i} netns {self.lan_ns}"
            for i in range(self.n)
        ]
        await _ip_batch(None, root)
        await self._ensure_bridge(0)
        lan = [f"link set v{i} master br0 up" for i in range(self.n)]
        await _ip_batch(self.lan_ns, lan)
        self._bridge_of = dict.fromkeys(range(self.n), 0)
        async with trio.open_nursery() as nursery:
            for i in range(self.n):
                nursery.start_soon(self._setup_node, i)

    async def _setup_node(self, i: int) -> None:
        cmds = [
            f"addr add {self.address(i)}/24 dev eth0",
            "link set eth0 multicast on up",
            "link set lo up",
            "route add 224.0.0.0/4 dev eth0",
        ]
        await _ip_batch(self.namespace(i), cmds)

    async def _ensure_bridge(self, k: int) -> None:
        if k in self._bridges:
            return
        await run_admin(["ip", "-n", self.lan_ns, "link", "add", f"br{k}", *_BRIDGE_OPTS])
        await run_admin(["ip", "-n", self.lan_ns, "link", "set", f"br{k}", "up"])
        self._bridges.add(k)

    async def _teardown(self) -> None:
        """Kill our processes, then delete the namespaces by name (never raises)."""
        self._up = False
        for proc in self._procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        with trio.move_on_after(5):
            for proc in self._procs:
                await proc.wait()
        self._procs.clear()
        await trio.to_thread.run_sync(cleanup_leftovers, self.run_id)

    # -- running things -------------------------------------------------------------------

    async def exec(
        self,
        i: int,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        stdin: int | None = None,
        stdout: int | None = None,
        stderr: int | None = None,
        cwd: str | None = None,
    ) -> trio.Process:
        """Start ``argv`` inside node ``i``'s namespace; killed at teardown if still alive.

        ``env`` replaces the environment (pass ``{**os.environ, …}`` to extend it);
        ``stdin``/``stdout``/``stderr`` take ``subprocess.PIPE``/``DEVNULL``/fds as usual.
        """
        if not self._up:
            raise SimnetError("the LAN is not up: use `async with Lan(...)`")
        proc = await trio.lowlevel.open_process(
            ["ip", "netns", "exec", self.namespace(i), *argv],
            env=dict(env) if env is not None else None,
            stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd,
        )
        self._procs.append(proc)
        return proc

    async def run(
        self,
        i: int,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        timeout: float = 30.0,
        check: bool = True,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` to completion inside node ``i``'s namespace, capturing its output."""
        self._check(i)
        argv = ["ip", "netns", "exec", self.namespace(i), *argv]
        try:
            with trio.fail_after(timeout):
                result = await trio.run_process(
                    argv, stdin=stdin, env=dict(env) if env is not None else None,
                    capture_stdout=True, capture_stderr=True, check=False,
                )
        except trio.TooSlowError:
            raise SimnetError(f"`{' '.join(argv)}` took longer than {timeout} s") from None
        if check and result.returncode != 0:
            err = result.stderr.decode(errors="replace").strip()
            raise SimnetError(f"`{' '.join(argv)}` failed ({result.returncode}): {err}")
        return result

    # -- faults ---------------------------------------------------------------------------

    async def disconnect(self, i: int) -> None:
        """Pull node ``i``'s cable: its port goes down, the node sees carrier loss."""
        await run_admin(["ip", "-n", self.lan_ns, "link", "set", self.port_name(i), "down"])
        self._down.add(i)

    async def reconnect(self, i: int) -> None:
        await run_admin(["ip", "-n", self.lan_ns, "link", "set", self.port_name(i), "up"])
        self._down.discard(i)

    async def split(self, groups: Sequence[Collection[int]]) -> None:
        """Split brain: group ``k`` moves to bridge ``br<k>``; unlisted nodes stay on br0.

        No carrier change, so nodes only notice through timeouts, as with a real AP split.
        """
        wanted = dict.fromkeys(range(self.n), 0)
        for k, group in enumerate(groups):
            for i in group:
                self._check(i)
                wanted[i] = k
        await self._move_ports(wanted)

    async def _move_ports(self, wanted: Mapping[int, int]) -> None:
        for k in sorted(set(wanted.values())):
            await self._ensure_bridge(k)
        cmds = [
            f"link set v{i} master br{k}"
            for i, k in sorted(wanted.items())
            if self._bridge_of.get(i) != k
        ]
        if cmds:
            await _ip_batch(self.lan_ns, cmds)
        self._bridge_of.update(wanted)

    async def block(self, i: int, j: int, *, both_ways: bool = True) -> None:
        """Silently drop frames from ``i`` to ``j`` (and back, unless ``both_ways=False``)."""
        self._check(i)
        self._check(j)
        self._blocked.add((i, j))
        if both_ways:
            self._blocked.add((j, i))
        await self._apply_nft()

    async def partition(self, groups: Sequence[Collection[int]]) -> None:
        """Partition with nft drops between every pair in different groups (silent)."""
        side: dict[int, int] = {}
        for k, group in enumerate(groups):
            for i in group:
                self._check(i)
                side[i] = k
        self._blocked |= {(a, b) for a in side for b in side if side[a] != side[b]}
        await self._apply_nft()

    async def set_loss(self, i: int, loss: float) -> None:
        """Drop a fraction ``loss`` (0..1) of frames leaving and entering node ``i``."""
        self._check(i)
        if not 0.0 <= loss <= 1.0:
            raise SimnetError(f"loss must be in [0, 1], got {loss}")
        if loss == 0:
            self._loss.pop(i, None)
        else:
            self._loss[i] = loss
        await self._apply_nft()

    async def set_bandwidth(self, i: int, bytes_per_s: float | None) -> None:
        """Token-bucket limit both ways on node ``i``'s veth (None removes it)."""
        self._check(i)
        ends = [(self.lan_ns, self.port_name(i)), (self.namespace(i), "eth0")]
        for ns, dev in ends:
            if bytes_per_s is None:
                await run_admin(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"], check=False)
                continue
            bits = max(8000, int(bytes_per_s * 8))
            burst = max(1600, int(bytes_per_s / 10))
            await run_admin([
                "tc", "-n", ns, "qdisc", "replace", "dev", dev, "root", "tbf",
                "rate", f"{bits}bit", "burst", str(burst), "latency", "200ms",
            ])

    async def set_delay(self, i: int, params: LinkParams | None, *, seed: int = 0) -> None:
        """Delay (latency, jitter, RTO stalls, bandwidth) on TCP connections node ``i``
        dials, both directions, by a transparent userspace proxy in its namespace.

        There is no ``tc netem`` here, so: an nft ``redirect`` in the node's namespace
        sends its outgoing TCP to 10.231.0.0/24 to ``python -m simnet.proxy transparent``
        on the namespace's loopback, which forwards to the original destination (its own
        sockets carry SO_MARK 0x231 and skip the rule). Each connection crosses exactly
        one proxy, the dialer's. UDP (mDNS) is not delayed. ``None`` removes the delay.
        """
        self._check(i)
        old = self._delay_procs.pop(i, None)
        if old is not None and old.returncode is None:
            old.kill()
            with trio.move_on_after(5):
                await old.wait()
        ns = self.namespace(i)
        if params is None:
            await run_admin(["ip", "netns", "exec", ns, "nft", "delete", "table", "ip",
                             _NFT_NAT_TABLE], check=False)
            return
        fields = dataclasses.asdict(params)
        names = [f"--name={self.address(j)}={j}" for j in range(self.n)]
        proc = await self.exec(
            i,
            [sys.executable, "-m", "simnet.proxy", "transparent", "--src", str(i),
             "--port", str(DELAY_PROXY_PORT), "--params", json.dumps(fields),
             "--seed", str(seed), *names],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        self._delay_procs[i] = proc
        assert proc.stdout is not None
        out = b""
        with trio.move_on_after(15):
            while b"\n" not in out:
                chunk = await proc.stdout.receive_some(4096)
                if not chunk:
                    break
                out += chunk
        if not out.startswith(b"ready"):
            raise SimnetError(f"delay proxy for node {i} did not start: "
                              f"{out.decode(errors='replace').strip() or 'no output'}")
        rule = (
            f"add table ip {_NFT_NAT_TABLE}\n"
            f"delete table ip {_NFT_NAT_TABLE}\n"
            f"table ip {_NFT_NAT_TABLE} {{\n"
            "  chain out {\n"
            "    type nat hook output priority -100; policy accept;\n"
            f"    ip daddr {SUBNET}.0/24 meta l4proto tcp meta mark != {PROXY_MARK:#x} "
            f"redirect to :{DELAY_PROXY_PORT}\n"
            "  }\n"
            "}\n"
        )
        await run_admin(["ip", "netns", "exec", ns, "nft", "-f", "-"], stdin=rule.encode())

    async def heal(self) -> None:
        """Undo partitions: every port up, back on br0, pair blocks removed (loss stays)."""
        for i in sorted(self._down):
            await self.reconnect(i)
        await self._move_ports(dict.fromkeys(range(self.n), 0))
        if self._blocked:
            self._blocked.clear()
            await self._apply_nft()

    def nft_ruleset(self) -> str:
        """The bridge filter table for the current blocks and loss (also for debugging)."""
        rules = []
        for i, j in sorted(self._blocked):
            rules.append(f'iifname "v{i}" oifname "v{j}" drop')
        for i, loss in sorted(self._loss.items()):
            threshold = round(loss * 10000)
            match = "" if threshold >= 10000 else f" numgen random mod 10000 < {threshold}"
            rules.append(f'iifname "v{i}"{match} drop')
            rules.append(f'oifname "v{i}"{match} drop')
        body = "\n".join(f"    {rule}" for rule in rules)
        return (
            f"add table bridge {_NFT_TABLE}\n"
            f"delete table bridge {_NFT_TABLE}\n"
            f"table bridge {_NFT_TABLE} {{\n"
            "  chain forward {\n"
            "    type filter hook forward priority 0; policy accept;\n"
            f"{body}\n"
            "  }\n"
            "}\n"
        )

    async def _apply_nft(self) -> None:
        await run_admin(
            ["ip", "netns", "exec", self.lan_ns, "nft", "-f", "-"],
            stdin=self.nft_ruleset().encode(),
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m simnet.lan --cleanup [RUN_ID]``: remove leftover ``msim-`` namespaces."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "--cleanup":
        print("usage: python -m simnet.lan --cleanup [RUN_ID]", file=sys.stderr)
        return 2
    removed = cleanup_leftovers(args[1] if len(args) > 1 else None)
    print("\n".join(removed) if removed else "no msim- namespaces")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

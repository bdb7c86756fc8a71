"""The process backend: a scenario on real ``mycelium`` node processes on loopback.

Each node has its own home directory and a ``mycelium run`` process listening on
127.0.0.1. Nodes never dial each other directly: node ``i`` is given, for every
neighbour ``j``, the address of the proxy route ``i -> j``
(``/ip4/127.0.0.1/tcp/<route port>/p2p/<peer id of j>``), so every byte crosses the
:class:`~simnet.proxy.FaultProxy`, which applies the scenario's link model and partitions.
mDNS is off (``--no-mdns``): on loopback it would bypass the proxy.

The orchestration (:class:`RealBackendBase`) is shared with the netns backend:

1. create N homes, ``mycelium init`` each (fast KDF, fixed passphrase), read ``id --json``;
2. node 0 creates a community space and invites every other node; the invite codes are
   handed to the joiners by the harness (out of band, as a person would);
3. start the nodes (late joiners wait for their ``join`` event);
4. replay the scenario on wall time: writes (``doc put``), partitions, heals, crashes
   (SIGKILL), restarts, late joins, member removals;
5. poll ``status --json`` until every live member shows the same version vector for the
   community space (and it contains every acknowledged write) or a timeout;
6. stop everything (SIGINT, then SIGKILL) even on error or cancellation.

CLI calls use the DESIGN §10 contract. For speed, the process backend sends ``status``
and ``doc put`` straight to the node's control API (``api.json`` in its home) when it
answers, falling back to the CLI otherwise.
"""

from __future__ import annotations

import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from simnet.backends import RealRunResult, link_params, partition_groups
from simnet.faults import SimnetError
from simnet.proxy import FaultProxy
from simnet.scenario import Event, Scenario

PASSPHRASE = "simnet-passphrase"
SPACE_NAME = "community"
COLLECTION = "products"  # a collection every community space accepts (market schema)


class NodeError(SimnetError):
    """A node process or one of its CLI commands failed; the message has its output."""

    reason = "node"


def mycelium_command() -> list[str]:
    """How to invoke the ``mycelium`` CLI: ``$SIMNET_MYCELIUM`` (split like a shell) if
    set, else this installation's script (the venv's first)."""
    override = os.environ.get("SIMNET_MYCELIUM")
    if override:
        return shlex.split(override)
    script = Path(sys.executable).parent / "mycelium"
    if script.exists():
        return [str(script)]
    found = shutil.which("mycelium")
    if found:
        return [found]
    return [sys.executable, "-c", "from mycelium.cli import main; main()"]


def node_env(passphrase: str = PASSPHRASE) -> dict[str, str]:
    """The environment of every node and CLI call: scripted passphrase, fast KDF, no
    inherited ``MYCELIUM_HOME`` (``--home`` is always explicit)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYCELIUM_")}
    env["MYCELIUM_PASSPHRASE"] = passphrase
    env["MYCELIUM_INSECURE_FAST_KDF"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux; else IANA's)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody uses right now, to be listened on a moment later by a process.

    Chosen *below* the kernel's ephemeral range: the kernel's own choice (bind to port
    0) comes from that range, which every outgoing connection also draws its local port
    from, so a connection opened between the choice and the listen (a node dialling a
    proxy, say) could take the port. Below the range only another deliberate choice can
    collide, and the bind check here (without SO_REUSEADDR, so a port in TIME_WAIT is
    skipped too) rules out a port in use. A port handed out recently is not handed out
    again (a random choice could repeat one that nobody listens on *yet*, as the kernel's
    rotating choice never does). (The ``Address already in use`` CI saw at a node's
    start-up was another race: mycelium/web/server.py ``_listening_socket``.)
    """
    low, _ = _ephemeral_range()
    start, stop = (20_000, low) if low - 20_000 >= 2_000 else (1024, low)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(start, stop) if stop > start else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen = int(sock.getsockname()[1])
        _HANDED_OUT[chosen] = None
        if len(_HANDED_OUT) > _HANDED_OUT_MAX:
            del _HANDED_OUT[next(iter(_HANDED_OUT))]
        return chosen
    raise OSError(f"no free port on {host} below the ephemeral range after 200 tries")


#: Ports :func:`free_port` handed out lately, oldest first (a dict as an ordered set).
_HANDED_OUT: dict[int, None] = {}
_HANDED_OUT_MAX = 4096


@dataclass(frozen=True)
class Identity:
    did: str
    peer_id: str


class NodeProcess:
    """One node: its home, its ``mycelium run`` process and CLI access to it.

    ``prefix`` is prepended to every command (the netns backend passes
    ``ip netns exec <ns>``, so the CLI reaches the node's control API on the namespace's
    loopback). ``direct_api`` lets the harness talk HTTP to the control API itself, which
    only works when the harness shares the node's loopback (process backend).
    """

    def __init__(
        self,
        name: str,
        home: Path,
        *,
        prefix: Sequence[str] = (),
        command: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        direct_api: bool = False,
        cli_limiter: trio.CapacityLimiter | None = None,
    ) -> None:
        self.name = name
        self.home = home
        self.log_path = home.parent / f"{name}.log"
        self.pid_path = home.parent / f"{name}.pid"
        self._prefix = list(prefix)
        self._command = list(command) if command is not None else mycelium_command()
        self._env = env if env is not None else node_env()
        self._direct_api = direct_api
        self._limiter = cli_limiter or trio.CapacityLimiter(8)
        self._proc: trio.Process | None = None
        self._run_args: list[str] = []
        self.identity: Identity | None = None
        self.starts = 0

    # -- CLI ------------------------------------------------------------------------------

    async def cli(
        self, *args: str, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``mycelium ARGS --home HOME``; raises :class:`NodeError` on failure/timeout."""
        argv = [*self._prefix, *self._command, *args, "--home", str(self.home)]
        async with self._limiter:
            try:
                with trio.fail_after(timeout):
                    result = await trio.run_process(
                        argv, env=self._env, capture_stdout=True, capture_stderr=True,
                        check=False, stdin=b"",
                    )
            except trio.TooSlowError:
                raise NodeError(f"{self.name}: `mycelium {' '.join(args)}` timed out "
                                f"after {timeout} s") from None
        if check and result.returncode != 0:
            err = result.stderr.decode(errors="replace").strip().splitlines()
            raise NodeError(f"{self.name}: `mycelium {' '.join(args)}` exited "
                            f"{result.returncode}: {err[-1] if err else '(no stderr)'}")
        return result

    async def cli_json(self, *args: str, timeout: float = 30.0) -> dict[str, Any]:
        """Run a ``--json`` command and return its one JSON object (DESIGN §10)."""
        result = await self.cli(*args, "--json", timeout=timeout)
        text = result.stdout.decode(errors="replace").strip()
        try:
            data = json.loads(text)
        except ValueError:
            # Tolerate stray human output before the object (a contract bug in the
            # command, but not one that should stop a simulation): use the last line.
            try:
                data = json.loads(text.splitlines()[-1]) if text else None
            except ValueError:
                data = None
            if data is None:
                raise NodeError(f"{self.name}: `mycelium {' '.join(args)} --json` printed "
                                f"no JSON object: {text[:200]!r}") from None
        if not isinstance(data, dict):
            raise NodeError(f"{self.name}: `mycelium {' '.join(args)} --json` printed "
                            f"{type(data).__name__}, not an object")
        return data

    async def init(self, display_name: str | None = None) -> Identity:
        """``mycelium init`` then ``mycelium id --json``."""
        self.home.mkdir(parents=True, exist_ok=True)
        await self.cli("init", "--name", display_name or self.name, timeout=60)
        return await self.read_identity()

    async def read_identity(self) -> Identity:
        data = await self.cli_json("id")
        try:
            self.identity = Identity(did=str(data["did"]), peer_id=str(data["peer_id"]))
        except KeyError as exc:
            raise NodeError(f"{self.name}: `mycelium id --json` lacks {exc}: {data}") from None
        return self.identity

    async def op(self, name: str, cli_args: Sequence[str], **api_args: Any) -> dict[str, Any]:
        """One node operation: straight to the control API when allowed and answering,
        else the CLI (``cli_args`` + ``--json``)."""
        if self._direct_api and self.alive:
            api = self._api_endpoint()
            if api is not None:
                url, token = api
                try:
                    async with httpx.AsyncClient(timeout=15.0) as client:
                        resp = await client.post(
                            f"{url}/v1/ops/{name}", json=api_args,
                            headers={"Authorization": f"Bearer {token}"},
                        )
                    if resp.status_code == 200:
                        return dict(resp.json())
                    if resp.status_code != 404:  # 404: no such op over the API; use the CLI
                        raise NodeError(f"{self.name}: API {name} -> HTTP {resp.status_code}: "
                                    f"{resp.text[:200]}")
                except (httpx.HTTPError, ValueError):
                    pass
        return await self.cli_json(*cli_args)

    async def status(self) -> dict[str, Any]:
        return await self.op("status", ["status"])

    def _api_endpoint(self) -> tuple[str, str] | None:
        """(url, token) from ``api.json`` if it belongs to our current process."""
        try:
            info = json.loads((self.home / "api.json").read_text())
            if self._proc is None or int(info["pid"]) != self._proc.pid:
                return None
            return str(info["url"]).rstrip("/"), str(info["token"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # -- the node process -----------------------------------------------------------------

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self, run_args: Sequence[str] | None = None, *,
                    ready_timeout: float = 30.0) -> None:
        """Start ``mycelium run`` (same arguments as last time if None) and wait until
        ``status`` says it is running; on failure the process is killed and the error
        carries the tail of its log."""
        if self.alive:
            raise NodeError(f"{self.name} is already running (pid {self.pid})")
        if run_args is not None:
            self._run_args = list(run_args)
        argv = [*self._prefix, *self._command, "run", "--home", str(self.home), *self._run_args]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._env, start_new_session=True,
            )
        self.starts += 1
        self.pid_path.write_text(f"{self._proc.pid}\n")
        try:
            await self._wait_ready(ready_timeout)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.kill()
            raise

    async def _wait_ready(self, timeout: float) -> None:
        deadline = trio.current_time() + timeout
        last_error = "no answer yet"
        while trio.current_time() < deadline:
            if not self.alive:
                raise NodeError(f"{self.name}: `mycelium run` exited with "
                                f"{self._proc.returncode if self._proc else '?'} during "
                                f"start-up; log tail:\n{self.log_tail()}")
            try:
                with trio.move_on_after(max(0.5, deadline - trio.current_time())):
                    status = await self.status()
                    if status.get("running"):
                        return
                    last_error = "status says not running"
            except NodeError as exc:
                last_error = str(exc)
            await trio.sleep(0.2)
        raise NodeError(f"{self.name}: not ready after {timeout} s ({last_error}); log tail:\n"
                        f"{self.log_tail()}")

    async def stop(self, grace: float = 5.0) -> None:
        """Graceful stop (SIGINT, as Ctrl-C), SIGKILL after ``grace`` seconds."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            with suppress(ProcessLookupError):
                self._proc.send_signal(signal.SIGINT)
            with trio.move_on_after(grace):
                await self._proc.wait()
        await self.kill()

    async def kill(self) -> None:
        """SIGKILL (a crash: no shutdown code runs) and reap."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with suppress(ProcessLookupError):
                proc.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await proc.wait()
        self.pid_path.unlink(missing_ok=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])


class RelayProcess(NodeProcess):
    """A real ``mycelium relay`` process on a fixed loopback port (so a restart keeps its
    URL, and nodes pinned to its DID reconnect to the same relay). It is no member of any
    space: ``init`` only makes its home, and the harness never asks it for ``status``."""

    def __init__(self, name: str, home: Path, port: int | None = None, *,
                 extra_args: Sequence[str] = (), command: Sequence[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(name, home, command=command, env=env)
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.did: str | None = None
        self._extra = list(extra_args)

    @property
    def pinned_url(self) -> str:
        """``URL#did:key:…`` for ``mycelium run --relay`` (known after the first start)."""
        return f"{self.url}#{self.did}" if self.did else self.url

    async def init(self, display_name: str | None = None) -> None:  # type: ignore[override]
        self.home.mkdir(parents=True, exist_ok=True)

    async def start(self, run_args: Sequence[str] | None = None, *,
                    ready_timeout: float = 30.0) -> None:
        """Start (``run_args``: extra ``mycelium relay`` options such as ``--public-url``,
        kept for restarts) and wait until ``GET /v1/relay`` answers; then :attr:`did`."""
        if self.alive:
            raise NodeError(f"{self.name} is already running")
        if run_args is not None:
            self._run_args = list(run_args)
        self.home.mkdir(parents=True, exist_ok=True)
        argv = [*self._prefix, *self._command, "relay", "--home", str(self.home), "--listen",
                f"127.0.0.1:{self.port}", *self._extra, *self._run_args]
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1}: {' '.join(argv)}\n".encode())
            log.flush()
            self._proc = await trio.lowlevel.open_process(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._env, start_new_session=True)
        self.starts += 1
        self.pid_path.write_text(f"{self._proc.pid}\n")
        with trio.move_on_after(ready_timeout):
            while self.alive:
                try:
                    async with httpx.AsyncClient(timeout=2.0) as client:
                        resp = await client.get(f"{self.url}/v1/relay")
                    if resp.status_code == 200:
                        self.did = str(resp.json()["did"])
                        return
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                await trio.sleep(0.2)
        with trio.CancelScope(shield=True):
            await self.kill()
        raise NodeError(f"{self.name}: relay not ready; log tail:\n{self.log_tail()}")


def _single_simnet_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """Concurrent set-up steps fail as a group; when every member is a SimnetError, the
    caller (``simnet run``) gets the first one, with the count, instead of a group."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    if not leaves or not all(isinstance(e, SimnetError) for e in leaves):
        return group
    first = leaves[0]
    if len(leaves) == 1:
        return first
    try:
        return type(first)(f"{first} (and {len(leaves) - 1} more failures like it)")
    except TypeError:  # an error class with a different constructor
        return first


def kill_leftover_nodes(workdir: Path) -> list[int]:
    """Kill node processes recorded in ``workdir/*.pid`` by a run that died (SIGKILL)."""
    killed = []
    for pid_file in workdir.glob("*.pid"):
        try:
            pid = int(pid_file.read_text().strip())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        except (OSError, ValueError):
            pass
        pid_file.unlink(missing_ok=True)
    return killed


def neighbours(scenario: Scenario, rng: random.Random) -> list[set[int]]:
    """Who dials whom: a full mesh, or a random symmetric overlay of ``degree``.

    ``lan_relay`` topologies have no relay here yet: they run as a full mesh (noted in the
    result).
    """
    n = scenario.nodes
    adj: list[set[int]] = [set() for _ in range(n)]
    if scenario.topology.kind != "random" or n <= scenario.topology.degree + 1:
        for i in range(n):
            adj[i] = {j for j in range(n) if j != i}
        return adj
    order = list(range(n))
    rng.shuffle(order)
    for a, b in zip(order, order[1:] + order[:1], strict=True):  # a ring keeps it connected
        adj[a].add(b)
        adj[b].add(a)
    for i in range(n):
        while len(adj[i]) < scenario.topology.degree:
            j = rng.randrange(n)
            if j != i:
                adj[i].add(j)
                adj[j].add(i)
    return adj


class RealBackendBase:
    """Shared orchestration of a scenario on real nodes; subclasses provide the network.

    Subclass hooks: :meth:`network` (async context manager that brings the network up and
    down), :meth:`make_node`, :meth:`run_args`, :meth:`partition`, :meth:`heal`,
    :meth:`bytes_per_link`.
    """

    backend = "real"

    def __init__(
        self,
        scenario: Scenario,
        *,
        seed: int | None = None,
        workdir: Path | None = None,
        converge_timeout: float = 60.0,
        poll_interval: float = 0.5,
        ready_timeout: float = 30.0,
        command: Sequence[str] | None = None,
    ) -> None:
        self.scenario = scenario
        self.seed = scenario.seed if seed is None else seed
        self.rng = random.Random(self.seed)
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="msim-"))
        self.converge_timeout = converge_timeout
        self.poll_interval = poll_interval
        self.ready_timeout = ready_timeout
        self.command = list(command) if command is not None else None
        self.nodes: list[NodeProcess] = []
        #: Indices that run a relay process instead of a node (``lan_relay`` topologies).
        self.relay_indices: set[int] = set()
        self.space_id = ""
        self.removed: set[int] = set()
        self.crashed: set[int] = set()
        self.started: set[int] = set()
        self.events: list[dict[str, Any]] = []
        self.notes: list[str] = []
        self.expected: dict[str, int] = {}
        self.writes = {"attempted": 0, "ok": 0, "failed": 0, "skipped": 0}
        self.samples: list[dict[str, Any]] = []
        self.cli_limiter = trio.CapacityLimiter(max(2, os.cpu_count() or 2))
        self._t0 = 0.0
        self._last_disruption = 0.0

    # -- hooks ----------------------------------------------------------------------------

    @asynccontextmanager
    async def network(self) -> AsyncIterator[None]:
        yield

    def make_node(self, i: int) -> NodeProcess:
        raise NotImplementedError

    async def run_args(self, i: int) -> list[str]:
        raise NotImplementedError

    async def partition(self, sides: list[list[int]]) -> None:
        raise NotImplementedError

    async def heal(self) -> None:
        raise NotImplementedError

    async def bytes_per_link(self) -> dict[str, int]:
        return {}

    # -- the run --------------------------------------------------------------------------

    async def run(self) -> RealRunResult:
        start = trio.current_time()
        converged, convergence_s = False, None
        live: list[int] = []
        vectors: dict[int, dict[str, int]] = {}
        bytes_per_link: dict[str, int] = {}
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            async with self.network():
                try:
                    await self._prepare()
                    await self._start_initial()
                    self._t0 = trio.current_time()
                    async with trio.open_nursery() as sampling:
                        sampling.start_soon(self._sample_loop)
                        await self._timeline()
                        sampling.cancel_scope.cancel()
                    converged, convergence_s, vectors = await self._await_convergence()
                    live = self._live()
                    bytes_per_link = await self.bytes_per_link()
                finally:
                    with trio.CancelScope(shield=True):
                        await self._stop_all()
        except BaseExceptionGroup as group:
            single = _single_simnet_error(group)
            if single is group:
                raise
            raise single from group
        finally:
            kill_leftover_nodes(self.workdir)
        if converged and self._own_workdir:
            # Homes and logs of a successful run are not needed; a failed run keeps them
            # (the result names the directory) for post-mortems.
            shutil.rmtree(self.workdir, ignore_errors=True)
        return RealRunResult(
            backend=self.backend, scenario=self.scenario.name, seed=self.seed,
            converged=converged, convergence_s=convergence_s,
            wall_s=trio.current_time() - start, nodes=self.scenario.nodes,
            live_nodes=live, vectors=vectors, expected=dict(self.expected),
            bytes_per_link=bytes_per_link, events=self.events, writes=dict(self.writes),
            notes=self.notes, workdir=str(self.workdir), samples=self.samples,
            t_ref=round(self._last_disruption - self._t0, 3),
        )

    def _live(self) -> list[int]:
        return [i for i in sorted(self.started) if i not in self.crashed | self.removed
                | self.relay_indices and self.nodes[i].alive]

    async def _prepare(self) -> None:
        n = self.scenario.nodes
        self.nodes = [self.make_node(i) for i in range(n)]
        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                nursery.start_soon(node.init)
        members = [node for i, node in enumerate(self.nodes) if i not in self.relay_indices]
        creator = members[0]
        created = await creator.cli_json("space", "create", SPACE_NAME)
        self.space_id = str(created["space_id"])
        for node in members[1:]:
            assert node.identity is not None
            invite = await creator.cli_json("space", "invite", self.space_id, node.identity.did)
            await node.cli("space", "join", str(invite["invite"]))

    async def _start_initial(self) -> None:
        late = self.scenario.late_joiners()
        async with trio.open_nursery() as nursery:  # relays first: nodes need their DIDs
            for i in sorted(self.relay_indices):
                nursery.start_soon(self._start_node, i)
        async with trio.open_nursery() as nursery:
            for i in range(self.scenario.nodes):
                if i not in late and i not in self.relay_indices:
                    nursery.start_soon(self._start_node, i)

    async def _start_node(self, i: int) -> None:
        await self.nodes[i].start(await self.run_args(i), ready_timeout=self.ready_timeout)
        self.started.add(i)
        self.crashed.discard(i)

    async def _stop_all(self) -> None:
        async with trio.open_nursery() as nursery:
            for node in self.nodes:
                nursery.start_soon(node.stop)

    def _record(self, kind: str, **detail: Any) -> None:
        self.events.append({"t": round(trio.current_time() - self._t0, 3), "kind": kind,
                            **detail})

    async def _timeline(self) -> None:
        """Issue writes and events at their scenario times (seconds after start)."""
        items: list[tuple[float, int, Any]] = []
        for at, node, k in self._write_plan():
            items.append((at, 1, (node, k)))
        for event in self.scenario.events:
            items.append((event.at, 0, event))
        items.sort(key=lambda item: (item[0], item[1]))
        async with trio.open_nursery() as nursery:
            for at, is_write, payload in items:
                await trio.sleep_until(self._t0 + at)
                if is_write:
                    nursery.start_soon(self._write, *payload)
                else:
                    await self._event(payload, nursery)
        self._last_disruption = max(self._last_disruption, trio.current_time())

    def _write_plan(self) -> list[tuple[float, int, int]]:
        """(time, writer, k) exactly as the virtual workload spreads writes."""
        w = self.scenario.writes
        if not w.writers or not w.total:
            return []
        plan = []
        base, extra = divmod(w.total, len(w.writers))
        for idx, node in enumerate(w.writers):
            phase = self.rng.random() / w.rate
            for k in range(base + (1 if idx < extra else 0)):
                plan.append((w.start + phase + k / w.rate, node, k))
        return sorted(plan)

    async def _write(self, node_index: int, k: int) -> None:
        node = self.nodes[node_index]
        self.writes["attempted"] += 1
        if not node.alive or node_index in self.removed:
            self.writes["skipped"] += 1
            return
        doc_id = f"n{node_index}-{k}"
        # Fits the products schema: the payload size goes into the free-text description.
        data = {"title": doc_id, "quantity": k,
                "description": "x" * min(self.scenario.writes.payload_bytes, 2000)}
        try:
            result = await node.op(
                "doc_put",
                ["doc", "put", self.space_id, COLLECTION, doc_id, "--data", json.dumps(data)],
                space=self.space_id, coll=COLLECTION, doc_id=doc_id, data=data,
            )
        except NodeError as exc:
            self.writes["failed"] += 1
            self._record("write_failed", node=node_index, error=str(exc)[:300])
            return
        self.writes["ok"] += 1
        assert node.identity is not None
        # vectors are keyed by the writing key (a device key since device chains)
        did = str(result.get("author") or node.identity.did)
        seq = result.get("seq")
        previous = self.expected.get(did, 0)
        self.expected[did] = max(previous, int(seq)) if isinstance(seq, int) else previous + 1
        self._last_disruption = max(self._last_disruption, trio.current_time())

    async def _event(self, event: Event, nursery: trio.Nursery) -> None:
        try:
            if event.kind == "partition":
                sides = partition_groups(self.scenario, event.groups)
                await self.partition(sides)
                self._record("partition", groups=list(event.groups), sides=sides)
            elif event.kind == "heal":
                await self.heal()
                self._record("heal")
            elif event.kind == "crash":
                assert event.node is not None
                self.crashed.add(event.node)
                await self.nodes[event.node].kill()
                self._record("crash", node=event.node)
            elif event.kind in ("restart", "join"):
                assert event.node is not None
                nursery.start_soon(self._start_event, event)
            elif event.kind == "remove_member":
                assert event.node is not None
                ident = self.nodes[event.node].identity
                assert ident is not None
                await self.nodes[0].op("space_remove",
                                       ["space", "remove", self.space_id, ident.did],
                                       space=self.space_id, did=ident.did)
                self.removed.add(event.node)
                self._record("remove_member", node=event.node)
        except SimnetError as exc:
            self._record(f"{event.kind}_failed", node=event.node, error=str(exc)[:300])
        self._last_disruption = max(self._last_disruption, trio.current_time())

    async def _start_event(self, event: Event) -> None:
        assert event.node is not None
        try:
            await self._start_node(event.node)
            self._record(event.kind, node=event.node)
        except SimnetError as exc:
            self._record(f"{event.kind}_failed", node=event.node, error=str(exc)[:300])
        self._last_disruption = max(self._last_disruption, trio.current_time())

    async def _vectors(self) -> dict[int, dict[str, int]]:
        vectors: dict[int, dict[str, int]] = {}

        async def one(i: int) -> None:
            try:
                status = await self.nodes[i].status()
            except NodeError:
                return
            for space in status.get("spaces", []):
                if space.get("space_id") == self.space_id:
                    vectors[i] = {str(k): int(v) for k, v in space.get("vector", {}).items()}
                    return
            vectors[i] = {}

        async with trio.open_nursery() as nursery:
            for i in self._live():
                nursery.start_soon(one, i)
        self.samples.append({
            "t": round(trio.current_time() - self._t0, 3),
            "written": sum(self.expected.values()),
            "held": {i: sum(v.values()) for i, v in sorted(vectors.items())},
        })
        return vectors

    async def _sample_loop(self) -> None:
        """While the timeline runs, record how many deltas each live node holds."""
        interval = max(1.0, self.scenario.sample_interval)
        while True:
            await self._vectors()
            await trio.sleep(interval)

    def _is_converged(self, vectors: dict[int, dict[str, int]]) -> bool:
        live = self._live()
        if not live or any(i not in vectors for i in live):
            return False
        first = vectors[live[0]]
        if any(vectors[i] != first for i in live[1:]):
            return False
        return all(first.get(did, 0) >= seq for did, seq in self.expected.items())

    async def _await_convergence(self) -> tuple[bool, float | None, dict[int, dict[str, int]]]:
        deadline = max(self._t0 + self.scenario.duration, trio.current_time())
        deadline += self.converge_timeout
        vectors: dict[int, dict[str, int]] = {}
        while True:
            vectors = await self._vectors()
            now = trio.current_time()
            if self._is_converged(vectors):
                elapsed = max(0.0, now - self._last_disruption)
                self._record("converged", after_s=round(elapsed, 3))
                return True, elapsed, vectors
            if now >= deadline:
                self._record("not_converged", timeout_s=self.converge_timeout)
                return False, None, vectors
            await trio.sleep(self.poll_interval)


class ProcessBackend(RealBackendBase):
    """Nodes on 127.0.0.1, all peer traffic through one :class:`FaultProxy`."""

    backend = "process"

    def __init__(self, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(scenario, **kwargs)
        self.proxy: FaultProxy | None = None
        self.ports: dict[int, int] = {}
        self.relay_links: dict[int, set[int]] = {}  # node -> relays it uses (lan_relay)
        self.adjacency = neighbours(scenario, self.rng)
        if scenario.topology.kind == "lan_relay":
            self._relay_topology()

    @asynccontextmanager
    async def network(self) -> AsyncIterator[None]:
        async with FaultProxy(seed=self.seed) as proxy:
            self.proxy = proxy
            proxy.set_default(link_params(self.scenario.link))
            for i, peers in enumerate(self.adjacency):
                for j in sorted(peers | self.relay_links.get(i, set())):
                    await proxy.open_route(str(i), str(j))
            # Node ports are chosen after the proxy holds its listeners, so they differ.
            for i in range(self.scenario.nodes):
                self.ports[i] = free_port()
                proxy.set_target(str(i), "127.0.0.1", self.ports[i])
            try:
                yield
            finally:
                self.proxy = None

    def _relay_topology(self) -> None:
        """``lan_relay``: real relay processes at the ``relays`` indices. Nodes link to
        their LAN mates (unless ``lan_links = "none"``) and to every relay, each link a
        proxy route; relays are reached over WebSocket through those routes."""
        topo = self.scenario.topology
        self.relay_indices = set(self.scenario.group_of(topo.relays))
        # Dozens of processes start at once here (relay-only.toml: 32 on 2 cores): give
        # each node as long to come up as they take together, not 30 s.
        self.ready_timeout = max(self.ready_timeout, 3.0 * self.scenario.nodes)
        lan_of: dict[int, str] = {}
        for lan in topo.lans:
            for i in self.scenario.group_of(lan):
                lan_of[i] = lan
        members = [i for i in range(self.scenario.nodes) if i not in self.relay_indices]
        for i in range(self.scenario.nodes):
            self.adjacency[i] = set()
            if i in self.relay_indices:
                continue
            self.relay_links[i] = set(self.relay_indices)
            if topo.lan_links == "full" and i in lan_of:
                self.adjacency[i] = {j for j in members if j != i and lan_of.get(j) == lan_of[i]}
        self.notes.append(f"process backend: {len(self.relay_indices)} relay process(es) at "
                          f"{sorted(self.relay_indices)}; lan_links={topo.lan_links}; "
                          "link overrides use the default link model")

    def make_node(self, i: int) -> NodeProcess:
        if i in self.relay_indices:
            return RelayProcess(f"relay{i}", self.workdir / f"relay{i}", self.ports[i],
                                command=self.command)
        return NodeProcess(f"node{i}", self.workdir / f"node{i}", command=self.command,
                           direct_api=True, cli_limiter=self.cli_limiter)

    async def run_args(self, i: int) -> list[str]:
        assert self.proxy is not None
        if i in self.relay_indices:  # answer under the address of every route to it
            return [arg for j in sorted(self.relay_links) if i in self.relay_links[j]
                    for arg in ("--public-url",
                                f"http://127.0.0.1:{self.proxy.route_port(str(j), str(i))}")]
        args = ["--listen", f"/ip4/127.0.0.1/tcp/{self.ports[i]}", "--no-mdns",
                "--api", "127.0.0.1:0"]
        for r in sorted(self.relay_links.get(i, ())):
            relay = self.nodes[r]
            assert isinstance(relay, RelayProcess) and relay.did is not None
            port = self.proxy.route_port(str(i), str(r))
            args += ["--relay", f"http://127.0.0.1:{port}#{relay.did}"]
        if self.relay_links:
            args += ["--web", "off"]
        for j in sorted(self.adjacency[i]):
            ident = self.nodes[j].identity
            assert ident is not None
            port = self.proxy.route_port(str(i), str(j))
            args += ["--peer", f"/ip4/127.0.0.1/tcp/{port}/p2p/{ident.peer_id}"]
        return args

    async def partition(self, sides: list[list[int]]) -> None:
        assert self.proxy is not None
        self.proxy.partition([[str(i) for i in side] for side in sides])

    async def heal(self) -> None:
        assert self.proxy is not None
        self.proxy.heal()

    async def bytes_per_link(self) -> dict[str, int]:
        assert self.proxy is not None
        return {f"{a}->{b}": n for (a, b), n in sorted(self.proxy.bytes_per_link().items())}

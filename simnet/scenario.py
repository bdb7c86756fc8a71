"""Scenario files: TOML in, a validated, immutable :class:`Scenario` out.

A scenario says *what* happens (nodes, groups, overlay, link faults, writers, timed
events); a backend decides *how* (virtual clock, processes, namespaces). Validation is
strict and happens before anything runs, because a typo in a 1000-node scenario should
cost a second, not a wasted run: unknown keys, wrong types, events naming nodes or groups
that do not exist, events out of time order and impossible sequences (restarting a node
that never crashed) are all :class:`~simnet.errors.ScenarioError` with the dotted path of
the offending value. The format is documented in ``docs/simnet.md``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from simnet.errors import ScenarioError

T = TypeVar("T")

LatencyDist = Literal["constant", "uniform", "normal", "lognormal"]
TopologyKind = Literal["full", "random", "lan_relay"]
EventKind = Literal["partition", "heal", "crash", "restart", "join", "remove_member"]
SyncMode = Literal["sessions", "gossip"]
PushMode = Literal["lazy", "eager"]

EVENT_KINDS: tuple[str, ...] = ("partition", "heal", "crash", "restart", "join", "remove_member")


@dataclass(frozen=True)
class Latency:
    """One-way link latency in milliseconds, sampled per message.

    ``constant``: ``value``; ``uniform``: ``low``..``high``; ``normal``: ``mean``,
    ``stddev`` (clipped at 0); ``lognormal``: ``median``, ``sigma`` (of the log).
    """

    dist: LatencyDist = "constant"
    value: float = 10.0
    low: float = 0.0
    high: float = 0.0
    mean: float = 0.0
    stddev: float = 0.0
    median: float = 0.0
    sigma: float = 0.0

    def mean_ms(self) -> float:
        """Expected one-way latency (used for the convergence lower bound)."""
        match self.dist:
            case "constant":
                return self.value
            case "uniform":
                return (self.low + self.high) / 2
            case "normal":
                return self.mean
            case _:
                return self.median * math.exp(self.sigma**2 / 2)


@dataclass(frozen=True)
class Link:
    latency: Latency = field(default_factory=Latency)
    #: Probability that a message is lost. Streams (sync sessions) retransmit, so for
    #: them a loss is a stall of one RTO; gossip messages are dropped.
    loss: float = 0.0
    #: Bytes per second per directed link; 0 = unlimited.
    bandwidth: float = 0.0
    #: Per-group exceptions, later ones win (``[[link.override]]``).
    overrides: tuple[LinkOverride, ...] = ()


@dataclass(frozen=True)
class LinkOverride:
    """Links with one end in group ``between[0]`` and the other in ``between[1]`` (either
    way round) use ``link`` instead of the scenario's base link."""

    between: tuple[str, str]
    link: Link


@dataclass(frozen=True)
class Topology:
    kind: TopologyKind = "full"
    degree: int = 4
    lans: tuple[str, ...] = ()
    relays: str = ""
    lan_links: Literal["full", "none"] = "full"


@dataclass(frozen=True)
class Sync:
    mode: SyncMode = "sessions"
    anti_entropy_interval: float = 10.0
    anti_entropy_jitter: float = 0.2
    #: A node coalesces outgoing pushes for this long (Nagle-like batching).
    flush_interval: float = 0.02
    #: Gossip mode: messages per second per topic a node publishes.
    gossip_rate: float = 5.0
    #: Session live pushes: "eager" (every envelope to every session: what a real
    #: ``mycelium run`` node does today) or "lazy" (the ``lazy`` cap, protocols/sync.md
    #: §7.5: PRUNE, HAVE, WANT; fewer receptions, slower convergence).
    push: PushMode = "eager"


@dataclass(frozen=True)
class Writes:
    writers: tuple[int, ...] = ()
    rate: float = 1.0
    total: int = 0
    start: float = 1.0
    payload_bytes: int = 100


@dataclass(frozen=True)
class Event:
    at: float
    kind: EventKind
    node: int | None = None
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Hostile:
    """A hostile member (``[hostile]``, run by :mod:`simnet.virtual.hostile` on real Soil
    nodes): before its removal it pushes junk control ops of throwaway keys, a plain
    member's control ops, future-dated writes and impossible sequence numbers; after it,
    a second chain for its kept seqs."""

    node: int
    junk_control_ops: int = 200
    future_writes: int = 300
    bad_seq_writes: int = 20
    forked_chain: bool = True


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    nodes: int
    groups: dict[str, tuple[int, ...]]
    topology: Topology
    link: Link
    sync: Sync
    writes: Writes
    events: tuple[Event, ...]
    duration: float
    seed: int = 1
    sample_interval: float = 1.0
    hostile: Hostile | None = None

    def group_of(self, name: str) -> tuple[int, ...]:
        return self.groups[name]

    def late_joiners(self) -> set[int]:
        """Nodes absent at the start (they have a ``join`` event)."""
        return {e.node for e in self.events if e.kind == "join" and e.node is not None}

    def last_disruption(self) -> float:
        """Time of the last event after which the network must heal by itself."""
        return max((e.at for e in self.events), default=0.0)


# -- reading ------------------------------------------------------------------------

class _Table:
    """A TOML table being read: typed getters, and a check that no key was left unread."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ScenarioError(path, f"must be a table, got {_tname(data)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.used: set[str] = set()

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type[T] | tuple[type, ...], default: Any = ...) -> Any:
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ScenarioError(self.sub(key), "is required")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and bool not in kinds:
            raise ScenarioError(self.sub(key), f"must be {_kinds(kinds)}, got a boolean")
        if not isinstance(value, kinds):
            raise ScenarioError(self.sub(key), f"must be {_kinds(kinds)}, got {_tname(value)}")
        return value

    def number(self, key: str, default: Any = ..., *, low: float = 0.0,
               high: float = math.inf, strict_low: bool = False) -> float:
        value: float = self.get(key, float, default)
        if not math.isfinite(value) or value < low or value > high or (
                strict_low and value == low):
            op = ">" if strict_low else ">="
            hi = f" and <= {high}" if math.isfinite(high) else ""
            raise ScenarioError(self.sub(key), f"must be {op} {low}{hi}, got {value}")
        return value

    def integer(self, key: str, default: Any = ..., *, low: int = 0) -> int:
        value: int = self.get(key, int, default)
        if value < low:
            raise ScenarioError(self.sub(key), f"must be >= {low}, got {value}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: Any = ...) -> str:
        value: str = self.get(key, str, default)
        if value not in options:
            raise ScenarioError(self.sub(key), f"must be one of {', '.join(options)}; "
                                               f"got {value!r}")
        return value

    def table(self, key: str) -> _Table:
        self.used.add(key)
        return _Table(self.data.get(key, {}), self.sub(key))

    def done(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            where = self.path or "top level"
            raise ScenarioError(self.sub(unknown[0]), f"unknown key (in {where}; known keys: "
                                                      f"{', '.join(sorted(self.used))})")


def _tname(value: object) -> str:
    return {dict: "a table", list: "an array", str: "a string", int: "an integer",
            float: "a number", bool: "a boolean"}.get(type(value), type(value).__name__)


def _kinds(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", list: "an array",
             dict: "a table", bool: "a boolean"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _node_list(value: Any, path: str, count: int) -> tuple[int, ...]:
    """``[0, 1, 5]`` or ``"0-9"`` / ``"0-9,12"`` -> sorted unique node indices."""
    out: list[int] = []
    if isinstance(value, str):
        for part in value.split(","):
            part = part.strip()
            lo, sep, hi = part.partition("-")
            try:
                a = int(lo)
                b = int(hi) if sep else a
            except ValueError:
                raise ScenarioError(path, f"bad node range {part!r} (use \"0-9\" or "
                                          "[0, 1, 2])") from None
            if b < a:
                raise ScenarioError(path, f"empty node range {part!r}")
            out.extend(range(a, b + 1))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            if not isinstance(v, int) or isinstance(v, bool):
                raise ScenarioError(f"{path}[{i}]", f"must be a node index, got {_tname(v)}")
            out.append(v)
    else:
        raise ScenarioError(path, f"must be a node list or range string, got {_tname(value)}")
    for v in out:
        if not 0 <= v < count:
            raise ScenarioError(path, f"node {v} does not exist (nodes are 0..{count - 1})")
    return tuple(sorted(set(out)))


def _latency(t: _Table) -> Latency:
    dist = t.choice("dist", ("constant", "uniform", "normal", "lognormal"), "constant")
    lat: Latency
    match dist:
        case "constant":
            lat = Latency("constant", value=t.number("value", 10.0))
        case "uniform":
            low, high = t.number("low"), t.number("high")
            if high < low:
                raise ScenarioError(t.sub("high"), f"must be >= low ({low}), got {high}")
            lat = Latency("uniform", low=low, high=high)
        case "normal":
            lat = Latency("normal", mean=t.number("mean"), stddev=t.number("stddev", 0.0))
        case _:
            lat = Latency("lognormal", median=t.number("median", strict_low=True),
                          sigma=t.number("sigma", 0.5, high=3.0))
    t.done()
    return lat


def parse(data: dict[str, Any], *, source: str = "<scenario>") -> Scenario:
    """Validate a decoded TOML document. Raises :class:`ScenarioError`."""
    top = _Table(data, "")
    name = top.get("name", str, Path(source).stem)
    description = top.get("description", str, "")
    duration = top.number("duration", strict_low=True)
    seed = top.integer("seed", 1)
    sample_interval = top.number("sample_interval", 1.0, strict_low=True)

    nt = top.table("nodes")
    count = nt.integer("count", low=1)
    gt = nt.table("groups")
    groups: dict[str, tuple[int, ...]] = {"all": tuple(range(count))}
    for gname, members in gt.data.items():
        gt.used.add(gname)
        if gname == "all":
            raise ScenarioError(gt.sub(gname), "'all' is predefined (every node)")
        groups[gname] = _node_list(members, gt.sub(gname), count)
        if not groups[gname]:
            raise ScenarioError(gt.sub(gname), "group is empty")
    gt.done()
    nt.done()

    def group_ref(value: str, path: str) -> tuple[int, ...]:
        if value not in groups:
            raise ScenarioError(path, f"unknown group {value!r} (groups: "
                                      f"{', '.join(sorted(groups))})")
        return groups[value]

    tt = top.table("topology")
    kind = tt.choice("kind", ("full", "random", "lan_relay"), "full")
    degree = tt.integer("degree", 4, low=1)
    if kind == "random" and count > 1 and degree >= count:
        raise ScenarioError(tt.sub("degree"), f"must be < nodes.count ({count}) for a "
                                              "random overlay")
    lans: tuple[str, ...] = ()
    relays = ""
    lan_links = "full"
    if kind == "lan_relay":
        lans_raw = tt.get("lans", list)
        if not all(isinstance(x, str) for x in lans_raw):
            raise ScenarioError(tt.sub("lans"), "must be an array of group names")
        lans = tuple(lans_raw)
        for i, g in enumerate(lans):
            group_ref(g, f"{tt.sub('lans')}[{i}]")
        relays = tt.get("relays", str)
        group_ref(relays, tt.sub("relays"))
        lan_links = tt.choice("lan_links", ("full", "none"), "full")
    tt.done()
    topology = Topology(kind=kind, degree=degree, lans=lans, relays=relays,  # type: ignore[arg-type]
                        lan_links=lan_links)  # type: ignore[arg-type]

    lt = top.table("link")
    latency = _latency(lt.table("latency"))
    base = Link(latency=latency, loss=lt.number("loss", 0.0, high=0.9),
                bandwidth=lt.number("bandwidth", 0.0))
    overrides: list[LinkOverride] = []
    for i, item in enumerate(lt.get("override", list, [])):
        ot = _Table(item, f"{lt.sub('override')}[{i}]")
        between = ot.get("between", list)
        if len(between) != 2 or not all(isinstance(g, str) for g in between):
            raise ScenarioError(ot.sub("between"), "must be two group names")
        for j, g in enumerate(between):
            group_ref(g, f"{ot.sub('between')}[{j}]")
        lat = _latency(ot.table("latency")) if "latency" in ot.data else base.latency
        ov = Link(latency=lat, loss=ot.number("loss", base.loss, high=0.9),
                  bandwidth=ot.number("bandwidth", base.bandwidth))
        ot.done()
        overrides.append(LinkOverride(between=(between[0], between[1]), link=ov))
    link = Link(latency=base.latency, loss=base.loss, bandwidth=base.bandwidth,
                overrides=tuple(overrides))
    lt.done()

    st = top.table("sync")
    sync = Sync(
        mode=st.choice("mode", ("sessions", "gossip"), "sessions"),  # type: ignore[arg-type]
        anti_entropy_interval=st.number("anti_entropy_interval", 10.0, strict_low=True),
        anti_entropy_jitter=st.number("anti_entropy_jitter", 0.2, high=0.99),
        flush_interval=st.number("flush_interval", 0.02),
        gossip_rate=st.number("gossip_rate", 5.0, strict_low=True),
        push=st.choice("push", ("lazy", "eager"), "eager"),  # type: ignore[arg-type]
    )
    st.done()

    wt = top.table("writes")
    raw_writers = wt.get("writers", (int, list, str), 0)
    writers: tuple[int, ...]
    if isinstance(raw_writers, int):
        if raw_writers > count:
            raise ScenarioError(wt.sub("writers"), f"{raw_writers} writers but only {count} "
                                                   "nodes")
        if raw_writers < 0:
            raise ScenarioError(wt.sub("writers"), "must be >= 0")
        writers = tuple(range(raw_writers))
    elif isinstance(raw_writers, str):
        writers = group_ref(raw_writers, wt.sub("writers"))
    else:
        writers = _node_list(raw_writers, wt.sub("writers"), count)
    writes = Writes(writers=writers, rate=wt.number("rate", 1.0, strict_low=True),
                    total=wt.integer("total", 0), start=wt.number("start", 1.0),
                    payload_bytes=wt.integer("payload_bytes", 100, low=1))
    wt.done()
    if writes.total and not writes.writers:
        raise ScenarioError("writes.writers", "total > 0 needs at least one writer")

    events = _events(top, count, group_ref, duration)
    hostile = _hostile(top.table("hostile"), count) if "hostile" in top.data else None
    top.done()
    return Scenario(name=name, description=description, nodes=count, groups=groups,
                    topology=topology, link=link, sync=sync, writes=writes, events=events,
                    duration=duration, seed=seed, sample_interval=sample_interval,
                    hostile=hostile)


def _hostile(t: _Table, count: int) -> Hostile:
    node = t.integer("node")
    if node >= count:
        raise ScenarioError(t.sub("node"), f"node {node} of {count}")
    h = Hostile(node=node, junk_control_ops=t.integer("junk_control_ops", 200),
                future_writes=t.integer("future_writes", 300),
                bad_seq_writes=t.integer("bad_seq_writes", 20),
                forked_chain=t.get("forked_chain", bool, True))
    t.done()
    return h


def _events(top: _Table, count: int, group_ref: Callable[[str, str], tuple[int, ...]],
            duration: float) -> tuple[Event, ...]:
    raw = top.get("events", list, [])
    events: list[Event] = []
    crashed: set[int] = set()
    absent: set[int] = set()
    removed: set[int] = set()
    # join events make their node absent from the start, whatever their position
    for e in raw:
        if isinstance(e, dict) and e.get("kind") == "join" and isinstance(e.get("node"), int):
            absent.add(e["node"])
    partitioned = False
    last = 0.0
    for i, item in enumerate(raw):
        et = _Table(item, f"events[{i}]")
        at = et.number("at")
        if at < last:
            raise ScenarioError(et.sub("at"), f"events must be in time order: {at} comes "
                                              f"after an event at {last}")
        if at > duration:
            raise ScenarioError(et.sub("at"), f"{at} is after the scenario duration "
                                              f"({duration})")
        last = at
        kind = et.choice("kind", EVENT_KINDS)
        node: int | None = None
        groups: tuple[str, ...] = ()
        if kind == "partition":
            g = et.get("groups", list)
            if len(g) < 2 or not all(isinstance(x, str) for x in g):
                raise ScenarioError(et.sub("groups"), "must list at least two group names")
            for j, name in enumerate(g):
                group_ref(name, f"{et.sub('groups')}[{j}]")
            groups = tuple(g)
            partitioned = True
        elif kind == "heal":
            if not partitioned:
                raise ScenarioError(f"events[{i}]", "heal without a partition before it")
            partitioned = False
        else:
            node = et.get("node", int)
            if not 0 <= node < count:
                raise ScenarioError(et.sub("node"), f"node {node} does not exist (nodes are "
                                                    f"0..{count - 1})")
            state_error = _node_transition(kind, node, crashed, absent, removed)
            if state_error:
                raise ScenarioError(f"events[{i}]", state_error)
        et.done()
        events.append(Event(at=at, kind=kind, node=node, groups=groups))  # type: ignore[arg-type]
    return tuple(events)


def _node_transition(kind: str, node: int, crashed: set[int], absent: set[int],
                     removed: set[int]) -> str | None:
    """Apply a node event to the tracked states; return an error message if impossible."""
    if kind == "join":
        if node not in absent:
            return f"node {node} joins twice"
        absent.discard(node)
        return None
    if node in absent:
        return f"node {node} has not joined yet at this point"
    if kind == "crash":
        if node in crashed:
            return f"node {node} is already crashed"
        crashed.add(node)
    elif kind == "restart":
        if node not in crashed:
            return f"restart of node {node}, which has not crashed"
        crashed.discard(node)
    elif kind == "remove_member":
        if node in removed:
            return f"node {node} is already removed"
        removed.add(node)
    return None


def load(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read and validate a scenario file, after applying ``overrides`` (``KEY=VALUE``,
    see :func:`apply_overrides`). Raises :class:`ScenarioError` (also for I/O and TOML
    syntax problems, so the CLI has one error to report)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError("", f"cannot read scenario {p}: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError("", f"{p}: not valid TOML: {exc}") from exc
    apply_overrides(data, overrides)
    return parse(data, source=str(p))


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> None:
    """Set ``nodes.count=500``-style values in a decoded scenario (in place).

    The value is read as a TOML value (``500``, ``0.05``, ``"gossip"``, ``[0, 1]``,
    ``{ dist = "constant", value = 5 }``); anything that is not valid TOML is taken as a
    plain string, so ``sync.mode=gossip`` works too. The result is validated like a file.
    """
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ScenarioError("", f"override {item!r} is not KEY=VALUE (e.g. nodes.count=500)")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        parts = key.strip().split(".")
        target = data
        for depth, part in enumerate(parts[:-1]):
            nxt = target.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ScenarioError(".".join(parts[:depth + 1]),
                                    f"is not a table, cannot set {key.strip()}")
            target = nxt
        target[parts[-1]] = value


def builtin_names() -> list[str]:
    """Names of the scenarios shipped in ``simnet/scenarios``."""
    root = resources.files("simnet") / "scenarios"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


def resolve(name_or_path: str, overrides: Sequence[str] = ()) -> Scenario:
    """Load a scenario by path, or by the name of a built-in one (``partition-heal``)."""
    p = Path(name_or_path)
    builtin = p.stem if (not p.exists() and p.parent.name == "scenarios") else name_or_path
    if builtin == name_or_path and (p.exists() or p.suffix == ".toml" or "/" in name_or_path):
        return load(p, overrides)
    # a name, or DESIGN.md's spelling "scenarios/<name>.toml" run from anywhere
    root = resources.files("simnet") / "scenarios" / f"{builtin}.toml"
    if not root.is_file():
        raise ScenarioError("", f"no scenario file {name_or_path!r} and no built-in scenario "
                                f"of that name (built-in: {', '.join(builtin_names())})")
    return load(Path(str(root)), overrides)

"""simnet's real backends: scenarios on real ``mycelium`` processes.

* ``process`` (:mod:`simnet.backends.process`): nodes on loopback, every peer connection
  through the userspace :class:`~simnet.proxy.FaultProxy` (latency, loss as stalls,
  bandwidth, partitions). No root needed.
* ``netns`` (:mod:`simnet.backends.netns`): nodes in network namespaces on an emulated
  LAN (:class:`~simnet.lan.Lan`) with real mDNS; partitions by moving bridge ports, loss
  by nft, bandwidth by tbf; no latency (no ``tc netem`` here). Needs root.

Both return a :class:`RealRunResult`. This module stays import-light so that
``simnet.cli`` can import it without pulling in trio subprocess machinery.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from simnet.faults import LinkParams, SimnetError

if TYPE_CHECKING:
    from simnet.scenario import Link, Scenario

RealBackend = Literal["process", "netns"]

#: A lost segment stalls a stream by at least this much (Linux's minimum RTO is 200 ms);
#: the virtual backend uses the same rule, so the two can be compared.
MIN_RTO_S = 0.2


@dataclass
class RealRunResult:
    """What a real-backend run measured; JSON-ready via :meth:`to_json`.

    ``convergence_s`` is wall time from the last disruption (last event or write) until
    every live member showed the same version vector, or None if that never happened
    within the timeout. ``vectors`` maps node index -> author DID -> seq (last status).
    ``bytes_per_link`` maps ``"src->dst"`` to bytes delivered (process backend: per
    directed proxy link; netns: ``"i->lan"`` / ``"lan->i"`` veth counters).
    """

    backend: str
    scenario: str
    seed: int
    converged: bool
    convergence_s: float | None
    wall_s: float
    nodes: int
    live_nodes: list[int]
    vectors: dict[int, dict[str, int]]
    expected: dict[str, int]
    bytes_per_link: dict[str, int]
    events: list[dict[str, Any]]
    writes: dict[str, int]
    notes: list[str] = field(default_factory=list)
    workdir: str = ""
    #: ``{"t", "written", "held": {node: deltas}}`` over the run (t from timeline start).
    samples: list[dict[str, Any]] = field(default_factory=list)
    #: When the last disruption (event or write) happened, seconds after timeline start.
    t_ref: float = 0.0

    def convergence_ratio(self) -> float:
        """Fraction of live nodes whose vector equals the majority vector (1.0 = converged)."""
        if not self.live_nodes:
            return 0.0
        vecs = [json.dumps(self.vectors.get(i, {}), sort_keys=True) for i in self.live_nodes]
        best = max(vecs.count(v) for v in set(vecs))
        return best / len(vecs)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["vectors"] = {str(k): v for k, v in self.vectors.items()}
        data["convergence_ratio"] = self.convergence_ratio()
        return data

    def write(self, out_dir: Path) -> Path:
        """Write ``report.json``, ``report.md`` and PNG plots into ``out_dir`` (created);
        returns the path of ``report.json``."""
        out_dir.mkdir(parents=True, exist_ok=True)
        plots = self._plots(out_dir)
        data = self.to_json()
        data["plots"] = plots
        path = out_dir / "report.json"
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        (out_dir / "report.md").write_text(self.markdown(plots))
        return path

    def markdown(self, plots: list[str]) -> str:
        verdict = "**converged**" if self.converged else "**DID NOT CONVERGE**"
        conv = "n/a" if self.convergence_s is None else f"{self.convergence_s:.2f} s"
        lines = [
            f"# simnet report: {self.scenario} ({self.backend} backend)",
            "",
            f"- Result: {verdict}; {len(self.live_nodes)} live members of {self.nodes} nodes",
            f"- Seed {self.seed}; wall time {self.wall_s:.1f} s; work dir `{self.workdir}`",
            f"- Last disruption at {self.t_ref:.2f} s; converged {conv} after it "
            f"(ratio {self.convergence_ratio():.2f})",
            f"- Writes: {self.writes}",
            "",
        ]
        if self.notes:
            lines += ["## Notes", ""] + [f"- {note}" for note in self.notes] + [""]
        lines += ["## Events", "", "| t (s) | event | detail |", "|---|---|---|"]
        for event in self.events:
            detail = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("t", "kind"))
            lines.append(f"| {event['t']:.2f} | {event['kind']} | {detail} |")
        lines += ["", "## Bytes per link", "", "| link | bytes |", "|---|---|"]
        lines += [f"| {link} | {n} |" for link, n in self.bytes_per_link.items()]
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
        return "\n".join(lines) + "\n"

    def _plots(self, out_dir: Path) -> list[str]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = []
        if self.samples:
            fig, ax = plt.subplots(figsize=(8, 4))
            ts = [s["t"] for s in self.samples]
            ax.plot(ts, [s["written"] for s in self.samples], color="black", label="written")
            nodes = sorted({int(i) for s in self.samples for i in s["held"]})
            for i in nodes:
                ax.plot(ts, [s["held"].get(i, s["held"].get(str(i))) for s in self.samples],
                        label=f"node {i}", alpha=0.7)
            for event in self.events:
                ax.axvline(event["t"], color="grey", linestyle=":", linewidth=0.8)
                ax.annotate(event["kind"], (event["t"], 1.0), xycoords=("data", "axes fraction"),
                            fontsize=7, rotation=90, va="top", ha="right", color="grey")
            ax.set_xlabel("wall time since start (s)")
            ax.set_ylabel("deltas in the community space")
            ax.set_title(f"{self.scenario} ({self.backend}): deltas held per node")
            if len(nodes) <= 12:
                ax.legend(loc="lower right", fontsize=7)
            fig.tight_layout()
            fig.savefig(out_dir / "deltas.png", dpi=100)
            plt.close(fig)
            names.append("deltas.png")
        if self.bytes_per_link:
            fig, ax = plt.subplots(figsize=(8, 4))
            links = list(self.bytes_per_link)
            ax.bar(range(len(links)), [self.bytes_per_link[k] for k in links])
            ax.set_xticks(range(len(links)), links, rotation=90, fontsize=7)
            ax.set_ylabel("bytes")
            ax.set_title("bytes per link")
            fig.tight_layout()
            fig.savefig(out_dir / "bytes.png", dpi=100)
            plt.close(fig)
            names.append("bytes.png")
        return names


def link_params(link: Link) -> LinkParams:
    """Translate a scenario's link model (milliseconds) into proxy :class:`LinkParams`."""
    lat = link.latency
    ms = 1e-3
    rto = max(MIN_RTO_S, 4 * lat.mean_ms() * ms)
    bandwidth = link.bandwidth if link.bandwidth > 0 else None
    common: dict[str, Any] = {"loss": link.loss, "rto_s": rto, "bandwidth_bps": bandwidth}
    if lat.dist == "constant":
        return LinkParams(latency_s=lat.value * ms, **common)
    if lat.dist == "uniform":
        return LinkParams(latency_s=lat.low * ms, jitter_s=(lat.high - lat.low) * ms,
                          jitter_dist="uniform", **common)
    if lat.dist == "normal":
        return LinkParams(latency_s=lat.mean * ms, jitter_s=lat.stddev * ms,
                          jitter_dist="normal", **common)
    if lat.median <= 0 or not math.isfinite(lat.sigma):
        raise SimnetError(f"lognormal latency needs median > 0, got {lat}")
    return LinkParams(jitter_s=lat.median * ms, jitter_sigma=lat.sigma,
                      jitter_dist="lognormal", **common)


def partition_groups(scenario: Scenario, names: tuple[str, ...]) -> list[list[int]]:
    """Node indices per side, with the virtual backend's rules: a node in several named
    groups belongs to the first; nodes named in none form one more group."""
    taken: set[int] = set()
    sides: list[list[int]] = []
    for name in names:
        side = [i for i in scenario.groups[name] if i not in taken]
        taken.update(side)
        sides.append(side)
    rest = [i for i in range(scenario.nodes) if i not in taken]
    if rest:
        sides.append(rest)
    return [side for side in sides if side]


async def run_real(
    scenario: Scenario,
    backend: RealBackend,
    *,
    seed: int | None = None,
    workdir: Path | None = None,
    converge_timeout: float = 60.0,
) -> RealRunResult:
    """Run ``scenario`` on real node processes with the given backend (async, trio)."""
    if backend == "process":
        from simnet.backends.process import ProcessBackend

        return await ProcessBackend(
            scenario, seed=seed, workdir=workdir, converge_timeout=converge_timeout
        ).run()
    if backend == "netns":
        from simnet.backends.netns import NetnsBackend

        return await NetnsBackend(
            scenario, seed=seed, workdir=workdir, converge_timeout=converge_timeout
        ).run()
    raise SimnetError(f"unknown real backend {backend!r} (process or netns)")


__all__ = ["RealBackend", "RealRunResult", "link_params", "partition_groups", "run_real"]

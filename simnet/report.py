"""Convergence checks and the run report (``report.json``, ``report.md``, PNG plots).

Convergence is checked from the stores themselves, never from the simulator's counters:
every live member (up, joined, not removed) must have the same version vector *and* the
same set of envelopes, and that set must be exactly what was written. With only
``MemoryStore`` in the virtual backend, the envelope set stands in for the document set:
documents are a pure function of the envelopes (LWW by HLC), so equal envelope sets
imply equal documents.

Convergence time is measured from the last disruption (the later of the last scenario
event and the last write) to the moment the last live member accepted its last envelope,
and compared with a lower bound: overlay diameter (hops among live nodes) x mean RTT.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from simnet.virtual.sim import RunResult


@dataclass
class Convergence:
    converged: bool
    live_nodes: int
    written: int
    vv_mismatches: int  # live nodes whose version vector differs from the majority
    set_mismatches: int  # live nodes whose envelope set is not exactly what was written
    missing_total: int  # envelopes missing, summed over live nodes
    pending_total: int  # envelopes held back (gaps), summed over live nodes
    removed_leaks: int  # envelopes written after a removal that reached the removed node
    t_ref: float
    t_converged: float | None
    convergence_time: float | None
    lower_bound: float
    ratio: float  # convergence_time / lower_bound; -1 when not converged
    diameter: int
    diameter_exact: bool
    problems: list[str] = field(default_factory=list)


def check(res: RunResult) -> Convergence:
    space = res.workload.space
    live = [n for n in res.nodes if n.live]
    problems: list[str] = []
    vv_mismatch = set_mismatch = missing = pending = 0
    written, expected_sum = res.written, res.expected_sum
    for raw in _stranded(res, live):
        written -= 1
        expected_sum -= hash(raw)
    if live:
        vvs = [n.store.version_vector(space) for n in live]
        common = Counter(tuple(sorted(vv.items())) for vv in vvs).most_common(1)[0][0]
        for n, vv in zip(live, vvs, strict=True):
            if tuple(sorted(vv.items())) != common:
                vv_mismatch += 1
                if vv_mismatch <= 5:
                    problems.append(f"node {n.idx}: version vector differs from the majority")
        for n in live:
            envs = n.store.envelopes(space)
            pending += n.store.pending_count(space)
            if len(envs) != written or sum(map(hash, envs)) != expected_sum:
                set_mismatch += 1
                missing += max(0, written - len(envs))
                if set_mismatch <= 5:
                    problems.append(f"node {n.idx}: holds {len(envs)} envelopes, expected "
                                    f"exactly the {written} written")
    leaks = _removed_leaks(res)
    if leaks:
        problems.append(f"{leaks} envelopes written after a removal reached removed members")
    converged = bool(live) and vv_mismatch == 0 and set_mismatch == 0 and leaks == 0
    if not live:
        problems.append("no live member at the end of the run")
    lower = max(res.diameter, 0) * res.rtt
    t_conv: float | None = None
    conv: float | None = None
    ratio = -1.0
    if converged:
        t_conv = max(n.last_accept for n in live)
        conv = max(0.0, t_conv - res.t_ref)
        ratio = conv / lower if lower > 0 else 0.0
    return Convergence(
        converged=converged, live_nodes=len(live), written=res.written,
        vv_mismatches=vv_mismatch, set_mismatches=set_mismatch, missing_total=missing,
        pending_total=pending, removed_leaks=leaks, t_ref=res.t_ref, t_converged=t_conv,
        convergence_time=conv, lower_bound=lower, ratio=ratio, diameter=res.diameter,
        diameter_exact=res.diameter_exact, problems=problems)


def _stranded(res: RunResult, live: list[Any]) -> list[bytes]:
    """A removed member's own writes that no live member holds at the end: they never
    left its device before the removal cut it off, and a removal keeps only what the
    remaining members held (spaces.md §4, the pinned head), so nobody is owed them."""
    stranded: list[bytes] = []
    space = res.workload.space
    held = {raw for n in live for raw in n.store.envelopes(space)}
    for idx in res.removed_at:
        own = {w.raw for w in res.workload.writes if w.node == idx}
        stranded += [raw for raw in res.nodes[idx].store.envelopes(space)
                     if raw in own and raw not in held]
    return stranded


def _removed_leaks(res: RunResult) -> int:
    if not res.removed_at:
        return 0
    written_at = {w.raw: w.at for w in res.workload.writes}
    leaks = 0
    for idx, t in res.removed_at.items():
        envs = res.nodes[idx].store.envelopes(res.workload.space)
        leaks += sum(1 for raw in envs if written_at.get(raw, 0.0) > t)
    return leaks


def summary(res: RunResult, conv: Convergence) -> dict[str, Any]:
    """The JSON report (a superset of what ``simnet run --json`` promises)."""
    nodes = res.nodes
    traffic = [n.bytes_in + n.bytes_out for n in nodes]
    received = sum(n.env_in for n in nodes)
    dups = sum(n.dups for n in nodes) + res.verify_stats.get("gossip_duplicates", 0)
    useful = received - dups
    sc = res.scenario
    return {
        "converged": conv.converged,
        "trace_hash": res.trace_hash,
        "convergence_ratio": conv.ratio,
        "nodes": len(nodes),
        "wall_s": round(res.wall_s, 3),
        "backend": "virtual",
        "scenario": sc.name,
        "seed": res.seed,
        "sim_time_s": round(res.sim_time, 6),
        "events_processed": res.events,
        "deltas_written": res.written,
        "convergence": {k: v for k, v in asdict(conv).items() if k != "converged"},
        "traffic": {
            "bytes_per_node_mean": _r(sum(traffic) / max(1, len(traffic))),
            "bytes_per_node_max": max(traffic, default=0),
            "bytes_per_node_min": min(traffic, default=0),
            "frames_total": sum(n.frames_out for n in nodes),
            "envelopes_received": received,
            "duplicate_receptions": dups,
            "duplicate_ratio": _r(dups / useful) if useful else 0.0,
            "gossip_lost": res.lost,
            "stream_stalls": res.stalls,
            "sessions_opened": sum(n.sessions_opened for n in nodes),
            "session_errors": sum(n.session_errors for n in nodes),
            "session_resets": sum(n.session_resets for n in nodes),
        },
        "recovery": recovery(res),
        "verify_cache": res.verify_stats,
        "timeline": [asdict(s) for s in res.samples],
    }


def recovery(res: RunResult) -> list[dict[str, Any]]:
    """For each scenario event: how long until every live member held at least what had
    been written by then (from the timeline, so at ``sample_interval`` resolution; None
    if that never happened). Shows how each heal, restart or join was absorbed."""
    out: list[dict[str, Any]] = []
    samples = res.samples
    for e in res.scenario.events:
        before = [s for s in samples if s.t <= e.at]
        target = before[-1].expected if before else 0
        done = next((s.t for s in samples if s.t >= e.at and s.held_min >= target), None)
        out.append({"at": e.at, "kind": e.kind, "node": e.node, "written_by_then": target,
                    "recovered_after_s": None if done is None else round(done - e.at, 6)})
    return out


def _r(x: float) -> float:
    return round(x, 4) if math.isfinite(x) else x


def write(res: RunResult, out: str | Path) -> dict[str, Any]:
    """Check convergence and write report.json, report.md and the plots into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    conv = check(res)
    data = summary(res, conv)
    data["plots"] = plots(res, out)
    (out / "report.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(markdown(res, data), encoding="utf-8")
    return data


def markdown(res: RunResult, data: dict[str, Any]) -> str:
    sc = res.scenario
    c = data["convergence"]
    tr = data["traffic"]
    verdict = "**converged**" if data["converged"] else "**DID NOT CONVERGE**"
    conv_time = ("n/a" if c["convergence_time"] is None else f"{c['convergence_time']:.3f} s")
    lines = [
        f"# simnet report: {sc.name}",
        "",
        f"{sc.description}",
        "",
        f"- Result: {verdict} ({c['live_nodes']} live members of {data['nodes']} nodes, "
        f"{data['deltas_written']} deltas written)",
        f"- Backend: virtual, seed {data['seed']}, trace hash `{data['trace_hash']}`",
        f"- Simulated {data['sim_time_s']:.2f} s in {data['wall_s']:.2f} s wall "
        f"({data['events_processed']} events)",
        f"- Model: {sc.topology.kind} overlay"
        f"{f' (degree {sc.topology.degree})' if sc.topology.kind == 'random' else ''}, "
        f"{sc.link.latency.dist} latency (mean {sc.link.latency.mean_ms():.1f} ms), "
        f"loss {sc.link.loss:g}, bandwidth "
        f"{f'{sc.link.bandwidth:g} B/s' if sc.link.bandwidth else 'unlimited'}; "
        f"{sc.sync.mode} mode, anti-entropy every {sc.sync.anti_entropy_interval:g} s",
        "",
        "## Convergence",
        "",
        "| measure | value |",
        "|---|---|",
        f"| reference time (last event or write) | {c['t_ref']:.3f} s |",
        f"| convergence time after it | {conv_time} |",
        f"| lower bound (diameter x RTT) | {c['lower_bound']:.3f} s "
        f"({c['diameter']} hops{'' if c['diameter_exact'] else ', estimated'}) |",
        f"| ratio | {data['convergence_ratio']:.2f} |",
        f"| version-vector mismatches | {c['vv_mismatches']} |",
        f"| envelope-set mismatches | {c['set_mismatches']} (missing {c['missing_total']}) |",
        f"| pending (gapped) envelopes | {c['pending_total']} |",
        f"| leaks to removed members | {c['removed_leaks']} |",
        "",
    ]
    if c["problems"]:
        lines += ["Problems:", ""] + [f"- {p}" for p in c["problems"]] + [""]
    rec = data.get("recovery", [])
    if rec:
        lines += ["## Events", "",
                  "Time until every live member held what had been written by the event "
                  f"(resolution {sc.sample_interval:g} s):", "",
                  "| t | event | node | deltas by then | recovered after |",
                  "|---|---|---|---|---|"]
        for r in rec:
            after = "never" if r["recovered_after_s"] is None else f"{r['recovered_after_s']:g} s"
            node = "" if r["node"] is None else r["node"]
            lines.append(f"| {r['at']:g} | {r['kind']} | {node} | {r['written_by_then']} | "
                         f"{after} |")
        lines.append("")
    lines += [
        "## Traffic",
        "",
        "| measure | value |",
        "|---|---|",
        f"| bytes per node (mean / min / max) | {tr['bytes_per_node_mean']:.0f} / "
        f"{tr['bytes_per_node_min']} / {tr['bytes_per_node_max']} |",
        f"| frames and gossip messages sent | {tr['frames_total']} |",
        f"| envelopes received | {tr['envelopes_received']} |",
        f"| duplicate receptions | {tr['duplicate_receptions']} "
        f"({tr['duplicate_ratio']:.2f} per useful reception) |",
        f"| gossip messages lost / stream stalls | {tr['gossip_lost']} / "
        f"{tr['stream_stalls']} |",
        f"| sessions opened / protocol errors / resets | {tr['sessions_opened']} / "
        f"{tr['session_errors']} / {tr['session_resets']} |",
        "",
        "## Plots",
        "",
    ]
    lines += [f"![{p}]({p})" for p in data.get("plots", [])]
    return "\n".join(lines) + "\n"


def plots(res: RunResult, out: Path) -> list[str]:
    """Write the PNG plots; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = res.samples
    ts = [s.t for s in samples]
    names: list[str] = []

    def events(ax: Any) -> None:
        for e in res.scenario.events:
            ax.axvline(e.at, color="grey", linestyle=":", linewidth=0.8)
            ax.annotate(e.kind, (e.at, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, rotation=90, va="top", ha="right", color="grey")

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(ts, [s.expected for s in samples], label="written", color="black")
    ax.plot(ts, [s.held_max for s in samples], label="held (max node)")
    ax.plot(ts, [s.held_median for s in samples], label="held (median node)")
    ax.plot(ts, [s.held_min for s in samples], label="held (min node)")
    events(ax)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("deltas")
    ax.set_title(f"{res.scenario.name}: deltas held by live members")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "deltas.png", dpi=100)
    plt.close(fig)
    names.append("deltas.png")

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(ts, [s.bytes_mean for s in samples], label="mean node")
    ax.plot(ts, [s.bytes_max for s in samples], label="busiest node")
    events(ax)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("bytes sent + received")
    ax.set_title("traffic per node (cumulative)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "bytes.png", dpi=100)
    plt.close(fig)
    names.append("bytes.png")

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    a1.hist([n.bytes_in + n.bytes_out for n in res.nodes], bins=30)
    a1.set_xlabel("bytes per node")
    a1.set_ylabel("nodes")
    a1.set_title("traffic distribution")
    a2.hist([n.dups for n in res.nodes], bins=30, color="tab:red")
    a2.set_xlabel("duplicate receptions per node")
    a2.set_title("duplicates")
    fig.tight_layout()
    fig.savefig(out / "per_node.png", dpi=100)
    plt.close(fig)
    names.append("per_node.png")
    return names

"""Scaling benchmark of the virtual backend (the lead wires it into ``just bench``).

``run_bench(sizes)`` runs the ``large-community`` scenario scaled to each node count
(by default ``min(1000, 1_000_000 // nodes)`` deltas, so that each size takes well under
a minute here: 1000 deltas up to 1000 nodes, 100 at 10 000 nodes; writers and rates as in
the scenario) and reports wall and CPU time, peak memory and convergence. The full
performance target is ``python -m simnet.bench 1000 --deltas 10000`` (under a minute
here with lazy push, see docs/simnet.md). Peak memory is the process's peak RSS growth
during the run (``resource``; tracemalloc would slow the run several-fold), so each size
should ideally run in a fresh process: :func:`main` does that.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

from simnet import report
from simnet.scenario import Scenario, resolve
from simnet.virtual.sim import Simulation


def scaled(nodes: int, deltas: int | None = None, base: str = "large-community") -> Scenario:
    """``base`` with ``nodes`` nodes and ``deltas`` deltas (default: see module doc)."""
    from dataclasses import replace

    sc = resolve(base)
    total = deltas if deltas is not None else max(1, min(1000, 1_000_000 // nodes))
    writers = tuple(range(min(len(sc.writes.writers), nodes)))
    return replace(sc, name=f"{base}-{nodes}", nodes=nodes,
                   groups={"all": tuple(range(nodes))},
                   writes=replace(sc.writes, writers=writers, total=total))


def measure(nodes: int, deltas: int | None = None, seed: int = 1) -> dict[str, Any]:
    """Run one size in this process and return its figures."""
    sc = scaled(nodes, deltas)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0, c0 = time.perf_counter(), time.process_time()
    res = Simulation(sc, seed).run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    conv = report.check(res)
    data = report.summary(res, conv)
    return {
        "nodes": nodes,
        "deltas": res.written,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),  # less sensitive than wall time to other load
        "sim_time_s": round(res.sim_time, 3),
        "events": res.events,
        "events_per_s": round(res.events / wall) if wall else 0,
        "peak_rss_mb": round(rss1 / 1024, 1),
        "rss_growth_mb": round((rss1 - rss0) / 1024, 1),
        "converged": conv.converged,
        "convergence_ratio": round(conv.ratio, 3),
        "envelopes_received": data["traffic"]["envelopes_received"],
        "duplicate_ratio": data["traffic"]["duplicate_ratio"],
        "trace_hash": res.trace_hash,
    }


def run_bench(sizes: tuple[int, ...] = (100, 1000, 10000), *,
              deltas: int | None = None, isolate: bool = True) -> list[dict[str, Any]]:
    """Measure each size; ``isolate`` runs each in a fresh interpreter (honest peak RSS)."""
    rows = []
    for n in sizes:
        if not isolate:
            rows.append(measure(n, deltas))
            continue
        cmd = [sys.executable, "-m", "simnet.bench", "--one", str(n)]
        if deltas is not None:
            cmd += ["--deltas", str(deltas)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out))
    return rows


def main(argv: list[str] | None = None) -> None:
    """``python -m simnet.bench [SIZES...] [--deltas N]``; ``--one N``: one size, JSON."""
    args = list(sys.argv[1:] if argv is None else argv)
    deltas = None
    if "--deltas" in args:
        i = args.index("--deltas")
        deltas = int(args[i + 1])
        del args[i:i + 2]
    if args[:1] == ["--one"]:
        print(json.dumps(measure(int(args[1]), deltas)))
        return
    sizes = tuple(int(a) for a in args) or (100, 1000, 10000)
    for row in run_bench(sizes, deltas=deltas):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

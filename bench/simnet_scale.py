"""simnet's virtual backend at 100 / 1000 / 10 000 nodes (issue #6): wall time, peak memory,
convergence ratio. Each size runs in a fresh interpreter so peak RSS is honest; see
``simnet/bench.py`` for the scenario scaling rule."""

from __future__ import annotations

from typing import Any

from simnet.bench import run_bench


def run(quick: bool = False) -> dict[str, Any]:
    sizes = (100,) if quick else (100, 1000, 10000)
    return {"sizes": run_bench(sizes)}


def markdown(result: dict[str, Any]) -> str:
    rows = result["sizes"]
    keys = [k for k in rows[0] if k != "trace_hash"] if rows else []
    lines = ["### simnet_scale (issue #6)", "", "| " + " | ".join(keys) + " |",
             "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines)

"""simnet's virtual backend at 100 / 1000 / 10 000 nodes (issue #6): wall time, peak memory,
convergence ratio, plus the speed target itself: 1000 nodes x 10 000 deltas within 60 s
wall. Each size runs in a fresh interpreter so peak RSS is honest; see ``simnet/bench.py``
for the scenario scaling rule (``large-community``, lazy push)."""

from __future__ import annotations

from typing import Any

from simnet.bench import run_bench

TARGET_NODES, TARGET_DELTAS, TARGET_WALL_S = 1000, 10_000, 60.0


def run(quick: bool = False) -> dict[str, Any]:
    sizes = (100,) if quick else (100, 1000, 10000)
    result: dict[str, Any] = {"sizes": run_bench(sizes)}
    if not quick:
        (target,) = run_bench((TARGET_NODES,), deltas=TARGET_DELTAS)
        result["target"] = {**target, "target_wall_s": TARGET_WALL_S,
                            "meets_target": target["converged"]
                            and target["wall_s"] <= TARGET_WALL_S}
    return result


def markdown(result: dict[str, Any]) -> str:
    rows = result["sizes"]
    keys = [k for k in rows[0] if k != "trace_hash"] if rows else []
    lines = ["### simnet_scale (issue #6)", "", "| " + " | ".join(keys) + " |",
             "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r.get(k)) for k in keys) + " |" for r in rows]
    target = result.get("target")
    if target:
        lines += ["", f"Target: {target['nodes']} nodes x {target['deltas']} deltas in "
                  f"{target['wall_s']} s wall (limit {target['target_wall_s']} s), "
                  f"converged {target['converged']}, ratio {target['convergence_ratio']}, "
                  f"{target['envelopes_received']} receptions, peak RSS "
                  f"{target['peak_rss_mb']} MB: met **{target['meets_target']}**."]
    return "\n".join(lines)

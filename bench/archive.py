"""IPFS archives: push and pull of a space's deltas on a real IPFS node, next to ingest.

One run, same envelopes (``bench.ingest.make_deltas``: 4 authors, a fifth as many
documents): **plain ingest** (``Soil.ingest`` in batches, as sync does) into a fresh
store, **push** of that store's space (build the encrypted CAR, ``dag/import`` with the
root pinned), and **pull** of the CID into another fresh store (``dag/export``, every block
checked against its CID, decrypt, header/signature/genesis/control-log checks, ingest).
The goal (issue 13): pull rate >= 0.7 of plain ingest, i.e. fetching and verifying costs
little next to the ingest itself. Rounds are interleaved and the best of each kind
counts (noise only adds time). The IPFS node is js-ipfs from tools/ipfs on loopback;
stored MB are the blocks' bytes.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from types import ModuleType
from typing import Any

from bench import ingest
from mycelium.archive import service
from mycelium.archive.ipfs import IpfsClient
from mycelium.store.soil import Soil

NAME = "archive"
FULL_DELTAS = 100_000
QUICK_DELTAS = 2_000
TARGET_RATIO = 0.7
FULL_ROUNDS = 3
CLOCK_MS = 1_700_000_000_000 + 10**7  # the ingest benchmark's fixed clock
TESTNODE = Path(__file__).resolve().parents[1] / "tools" / "ipfs" / "testnode.py"


def load_testnode() -> ModuleType:
    """tools/ipfs/testnode.py, the js-ipfs launcher (tools/ is not a package; the archive
    tests load it through here too)."""
    name = "mycelium_tools_ipfs_testnode"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TESTNODE)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def run(quick: bool = False, ipfs_api: str | None = None) -> dict[str, Any]:
    """``ipfs_api``: use that IPFS node (e.g. the tests' one) instead of starting one."""
    n = QUICK_DELTAS if quick else FULL_DELTAS
    rounds = 1 if quick else FULL_ROUNDS
    with tempfile.TemporaryDirectory(prefix="bench-archive-") as tmp_name:
        tmp = Path(tmp_name)
        genesis, control, data, reader = ingest.make_deltas(tmp, n)
        ingest_runs: list[float] = []
        push_runs: list[float] = []
        pull_runs: list[float] = []
        steps: list[tuple[float, float, float]] = []
        with ExitStack() as stack:
            if ipfs_api is None:
                ipfs_api = stack.enter_context(load_testnode().JsIpfsNode.start(tmp)).api_url
            ipfs = stack.enter_context(IpfsClient(ipfs_api, timeout=600))
            for i in range(rounds):
                ingest_s, source, space = ingest.ingest_soil(tmp / f"plain{i}.db", genesis,
                                                             control, data, reader)
                ingest_runs.append(ingest_s)
                t0 = time.perf_counter()
                pushed = service.push_space(source, space, ipfs, now_ms=CLOCK_MS + i)
                push_runs.append(time.perf_counter() - t0)
                source.close()
                target = Soil.open(tmp / f"pulled{i}.db", reader, clock=lambda: CLOCK_MS)
                # service.pull, step by step so each step's share is visible
                t0 = time.perf_counter()
                root, blocks = service.fetch(ipfs, pushed.cid)
                t1 = time.perf_counter()
                contents, preview = service.open_verified(root, blocks, reader)
                t2 = time.perf_counter()
                pulled = service.restore(target, root, contents, preview)
                t3 = time.perf_counter()
                pull_runs.append(t3 - t0)
                steps.append((t1 - t0, t2 - t1, t3 - t2))
                docs = len(target.list_docs(space, "products"))
                target.close()
                if pulled["accepted"] != n + len(control):
                    raise RuntimeError(f"pull accepted {pulled['accepted']} of "
                                       f"{n + len(control)}: {pulled}")
    ingest_s, push_s, pull_s = min(ingest_runs), min(push_runs), min(pull_runs)
    fetch_s, verify_s, restore_s = (min(t[k] for t in steps) for k in range(3))
    ratio = ingest_s / pull_s
    return {
        "name": NAME, "quick": quick, "deltas": n, "rounds": rounds, "documents": docs,
        "ipfs_node": "js-ipfs 0.66.1 (loopback, offline)",
        "blocks": pushed.blocks, "stored_mb": round(pushed.stored_bytes / 1e6, 2),
        "envelope_mb": round(sum(map(len, data)) / 1e6, 2),
        "ingest_s": round(ingest_s, 3), "ingest_deltas_per_s": round(n / ingest_s),
        "push_s": round(push_s, 3), "push_deltas_per_s": round(n / push_s),
        "pull_s": round(pull_s, 3), "pull_deltas_per_s": round(n / pull_s),
        "pull_fetch_s": round(fetch_s, 3), "pull_verify_s": round(verify_s, 3),
        "pull_restore_s": round(restore_s, 3),
        "pull_to_ingest": round(ratio, 3), "target_ratio": TARGET_RATIO,
        "meets_target": ratio >= TARGET_RATIO,
        "runs": {"ingest_s": [round(t, 3) for t in ingest_runs],
                 "pull_steps_s": [[round(x, 3) for x in t] for t in steps],
                 "push_s": [round(t, 3) for t in push_runs],
                 "pull_s": [round(t, 3) for t in pull_runs]},
    }


def markdown(result: dict[str, Any]) -> str:
    r = result
    return "\n".join([
        f"### archive ({r['deltas']} deltas, {r['documents']} documents, best of "
        f"{r['rounds']})",
        "",
        "| step | seconds | deltas/s |",
        "|---|---:|---:|",
        f"| plain `Soil.ingest` | {r['ingest_s']} | {r['ingest_deltas_per_s']} |",
        f"| push (build CAR + `dag/import`, pinned) | {r['push_s']} | {r['push_deltas_per_s']} |",
        f"| pull (`dag/export` + verify + decrypt + checks + ingest) | {r['pull_s']} | "
        f"{r['pull_deltas_per_s']} |",
        f"| … of which `dag/export` | {r['pull_fetch_s']} | |",
        f"| … of which CID checks, decrypt, header/genesis/control-log checks | "
        f"{r['pull_verify_s']} | |",
        f"| … of which `Soil.ingest` | {r['pull_restore_s']} | |",
        "",
        f"Stored on IPFS: {r['stored_mb']} MB in {r['blocks']} blocks for "
        f"{r['envelope_mb']} MB of envelopes ({r['ipfs_node']}). Pull rate / plain ingest "
        f"rate: **{r['pull_to_ingest']}** (goal >= {r['target_ratio']}: "
        f"{'met' if r['meets_target'] else 'NOT met'}).",
    ])

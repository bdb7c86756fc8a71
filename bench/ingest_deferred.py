"""One honest envelope next to 20 000 deferred rows, against an empty store (issue 15 §5).

Members flood a space with envelopes whose content must wait: dated far in the future
(``clock_drift``, 1 000 per author, the cap) and under epochs nobody holds a key for
(``no_key``). Then single honest envelopes are ingested, alternately into that store and
into a store of the same space without the flood, in the same run; the result is the
median time per ingest of each and their ratio (issue 15: within 2x). Before the fix the
flooded store re-read every deferred row on every ingest (160–190 ms instead of 0.5 ms).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from mycelium.crdt import payload as payloads
from mycelium.crdt.hlc import Timestamp
from mycelium.identity.identity import Identity
from mycelium.log.envelope import Envelope, seal
from mycelium.log.limits import MAX_DEFERRED_PER_AUTHOR
from mycelium.spaces import service
from mycelium.store.soil import Soil

DAY_MS = 86_400_000


def _who(i: int) -> Identity:
    return Identity.from_seed(i.to_bytes(2, "big") * 16)


def _listing(who: Identity, space: bytes, seq: int, prev: bytes | None, epoch: int,
             key: bytes, wall_ms: int, doc: str) -> Envelope:
    body = payloads.set_fields("products", doc, {"title": "bench"},
                               Timestamp(wall_ms, 0, who.public_key[:8]))
    return seal(signer=who.signing_key, space=space, seq=seq, prev=prev, epoch=epoch,
                payload=body.encode(), group_key=key)


def _store(path: Path, flooders: int) -> tuple[Soil, bytes, bytes, int]:
    admin = _who(1)
    soil = Soil.open(path, admin, synchronous="NORMAL")
    space = service.create_space(soil, "market")
    for i in range(2, 3 + flooders):
        service.invite(soil, space, _who(i).did)
    epoch = soil.space_state(space).current_epoch
    key = soil.space_state(space).epoch_key(epoch, admin)
    assert key is not None
    return soil, space, key, epoch


def _flood(soil: Soil, space: bytes, key: bytes, epoch: int, rows: int, now: int) -> int:
    """Half clock_drift (capped per author), half no_key rows; returns rows deferred."""
    envs: list[Envelope] = []
    drift_authors = max(1, rows // 2 // MAX_DEFERRED_PER_AUTHOR)
    per_author = rows // 2 // drift_authors
    for a in range(drift_authors):
        who, prev = _who(3 + a), None
        for s in range(1, per_author + 1):
            env = _listing(who, space, s, prev, epoch, key, now + 30 * DAY_MS + s, f"d{a}-{s}")
            envs.append(env)
            prev = env.delta_id
    who, prev = _who(3 + drift_authors), None
    for s in range(1, rows - per_author * drift_authors + 1):
        unknown = int.from_bytes(os.urandom(8), "big") or 1
        env = _listing(who, space, s, prev, unknown, os.urandom(32), now, f"k{s}")
        envs.append(env)
        prev = env.delta_id
    for i in range(0, len(envs), 5000):
        soil.ingest(space, [e.raw for e in envs[i:i + 5000]])
    return soil.metrics()["deferred_now"]


def run(quick: bool = False) -> dict[str, Any]:
    rows = 2_000 if quick else 20_000
    samples = 50 if quick else 200
    now = int(time.time() * 1000)
    with tempfile.TemporaryDirectory() as tmp:
        flooders = max(1, rows // 2 // MAX_DEFERRED_PER_AUTHOR) + 1
        flooded, space_f, key_f, epoch_f = _store(Path(tmp) / "f.db", flooders)
        empty, space_e, key_e, epoch_e = _store(Path(tmp) / "e.db", flooders)
        deferred = _flood(flooded, space_f, key_f, epoch_f, rows, now)
        honest = _who(2)
        times: dict[str, list[float]] = {"flooded": [], "empty": []}
        prev: dict[str, bytes | None] = {"flooded": None, "empty": None}
        setups = {"flooded": (flooded, space_f, key_f, epoch_f),
                  "empty": (empty, space_e, key_e, epoch_e)}
        for i in range(1, samples + 1):
            for name, (soil, space, key, epoch) in setups.items():  # alternate: same run
                env = _listing(honest, space, i, prev[name], epoch, key, now + i, f"h{i}")
                prev[name] = env.delta_id
                t0 = time.perf_counter()
                result = soil.ingest(space, [env.raw])
                times[name].append(time.perf_counter() - t0)
                assert result.accepted, result.rejected
        flooded.close()
        empty.close()
    med = {k: statistics.median(v) * 1e6 for k, v in times.items()}
    return {
        "name": "ingest_deferred",
        "deferred_rows": deferred,
        "samples": samples,
        "flooded_us": round(med["flooded"], 1),
        "empty_us": round(med["empty"], 1),
        "ratio": round(med["flooded"] / med["empty"], 2),
    }


def markdown(result: dict[str, Any]) -> str:
    return "\n".join([
        "### ingest_deferred (issue 15 §5)",
        "",
        "| measurement | value |",
        "|---|---|",
        f"| one honest envelope, median of {result['samples']}: next to "
        f"{result['deferred_rows']} deferred rows / empty store | "
        f"{result['flooded_us']} µs / {result['empty_us']} µs (x{result['ratio']}) |",
    ])


if __name__ == "__main__":
    res = run(quick=False)
    print(markdown(res))

"""Pre-generated writes: real, signed, encrypted envelopes built once before the run.

Sealing costs an Ed25519 signature and an AEAD encryption; doing it inside the event loop
would charge the simulation for work that is the same on every run. So every write of
the scenario is sealed up front (keys, nonces and payloads all drawn from the run's rng,
so the bytes are deterministic), and the event loop only hands the finished bytes to the
writer's store. Each writer node is one author with its own hash chain.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.codec import cbor
from mycelium.log.envelope import Kind, seal
from simnet.scenario import Scenario


@dataclass(frozen=True, slots=True)
class Write:
    at: float
    node: int
    raw: bytes


@dataclass(frozen=True)
class Workload:
    space: bytes
    group_key: bytes
    #: Every write of the run, ordered by time (ties: writer, then seq).
    writes: tuple[Write, ...]
    authors: dict[int, bytes]  # writer node -> author public key


def generate(sc: Scenario, rng: random.Random) -> Workload:
    """Seal ``writes.total`` envelopes split evenly over the writers.

    Writer ``i`` writes its ``k``-th delta at ``start + phase_i + k / rate`` (a random
    phase in one period, so writers do not fire in lockstep).
    """
    space = rng.randbytes(32)
    group_key = rng.randbytes(32)
    w = sc.writes
    writers = w.writers
    writes: list[Write] = []
    authors: dict[int, bytes] = {}
    if not writers or not w.total:
        return Workload(space, group_key, (), authors)
    base, extra = divmod(w.total, len(writers))
    for i, node in enumerate(writers):
        key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
        authors[node] = key.public_key().public_bytes_raw()
        phase = rng.random() / w.rate
        prev: bytes | None = None
        for k in range(base + (1 if i < extra else 0)):
            at = w.start + phase + k / w.rate
            payload = cbor.encode({
                "coll": "notes", "doc": f"n{node}-{k}",
                "ops": [{"field": "text", "value": rng.randbytes(w.payload_bytes)}],
                "hlc": [int(at * 1000), 0, node],
            })
            env = seal(signer=key, space=space, seq=k + 1, prev=prev, epoch=0, payload=payload,
                       group_key=group_key, kind=Kind.DATA, nonce=rng.randbytes(24))
            prev = env.delta_id
            writes.append(Write(at, node, env.raw))
    writes.sort(key=lambda x: x.at)  # stable: per writer, seq order is kept
    return Workload(space, group_key, tuple(writes), authors)

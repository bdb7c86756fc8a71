"""Helpers for Soil tests: deterministic identities, a fake wall clock, a shared space."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mycelium.identity.didkey import did_from_public_key
from mycelium.identity.identity import Identity
from mycelium.spaces import service
from mycelium.store.soil import Soil


def ident(i: int) -> Identity:
    return Identity.from_seed(bytes([i]) * 32)


A, B, C, D = ident(1), ident(2), ident(3), ident(4)


def did(who: Identity) -> str:
    return did_from_public_key(who.public_key)


class Clock:
    """A wall clock the test moves by hand (ms)."""

    def __init__(self, now: int = 1_700_000_000_000) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1
        return self.now


def open_soil(path: Path, who: Identity, clock: Clock | None = None) -> Soil:
    return Soil.open(path, who, clock=clock or Clock())


def sync(src: Soil, dst: Soil, space: bytes) -> None:
    """One-way anti-entropy: dst gets everything src has that dst lacks."""
    while True:
        batch = src.envelopes_since(space, dst.version_vector(space), limit=500, max_bytes=1 << 22)
        if not batch:
            return
        result = dst.ingest(space, batch)
        if not result.accepted:
            return


@dataclass
class Market:
    space: bytes
    a: Soil
    b: Soil
    code_b: str


@pytest.fixture
def market(tmp_path: Path) -> Iterator[Market]:
    a = open_soil(tmp_path / "a.db", A)
    b = open_soil(tmp_path / "b.db", B)
    space = service.create_space(a, "market")
    code = service.invite(a, space, did(B))
    service.join(b, code)
    yield Market(space, a, b, code)
    a.close()
    b.close()

"""Fixtures for spaces tests: identities and a helper to build CONTROL envelopes."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mycelium.identity.identity import Identity
from mycelium.log.envelope import Envelope, Kind, seal

SEEDS = [bytes([i]) * 32 for i in range(1, 9)]


def ident(i: int) -> Identity:
    """Deterministic identity number ``i`` (1-based)."""
    return Identity.from_seed(SEEDS[i - 1])


class Chain:
    """One author's hash chain in one space, to build envelopes like the store would."""

    def __init__(self, identity: Identity, space: bytes) -> None:
        self.identity, self.space = identity, space
        self.seq, self.prev = 0, None

    def control(self, payload: bytes) -> Envelope:
        return self._next(Kind.CONTROL, payload, 0, None)

    def data(self, payload: bytes, epoch: int, key: bytes) -> Envelope:
        return self._next(Kind.DATA, payload, epoch, key)

    def _next(self, kind: Kind, payload: bytes, epoch: int, key: bytes | None) -> Envelope:
        signer: Ed25519PrivateKey = self.identity.signing_key
        env = seal(signer=signer, space=self.space, seq=self.seq + 1, prev=self.prev,
                   epoch=epoch, payload=payload, group_key=key, kind=kind)
        self.seq, self.prev = env.seq, env.delta_id
        return env


@pytest.fixture
def alice() -> Identity:
    return ident(1)


@pytest.fixture
def bob() -> Identity:
    return ident(2)


@pytest.fixture
def carol() -> Identity:
    return ident(3)


def random_key() -> bytes:
    return os.urandom(32)

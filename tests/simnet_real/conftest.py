"""Shared fixtures for simnet's real-backend tests: root gating and leftover cleanup."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from tests.ci import unavailable

NOT_ROOT_REASON = "needs root for network namespaces (run as root or in `unshare -rn --mount`)"


@pytest.fixture
def root_lan_tools() -> Iterator[None]:
    """Skip visibly (fail in CI) when not root or tools are missing; remove any msim-
    leftovers after."""
    if os.geteuid() != 0:
        unavailable(NOT_ROOT_REASON)
    missing = [t for t in ("ip", "nft", "tc") if shutil.which(t) is None]
    if missing:
        unavailable(f"missing tools {missing}: apt-get install -y iproute2 nftables")
    yield
    from simnet.lan import cleanup_leftovers

    for prefix in ("t", "b"):  # run ids used by test_lan and test_netns_backend
        cleanup_leftovers(prefix + str(os.getpid()))

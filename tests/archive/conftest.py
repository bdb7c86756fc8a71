"""A real IPFS node (js-ipfs from tools/ipfs) for the archive tests, one per session.

Missing ``tools/ipfs/node_modules`` (or Node.js) is a failure in CI (``CI=true``) and a
skip elsewhere, so a developer without npm can still run the pure tests here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from bench.archive import load_testnode


def require_installed(missing: str | None) -> None:
    """Fail in CI, skip elsewhere, when the node cannot run (``missing`` says why)."""
    if missing is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"the archive tests need the IPFS test node: {missing}")
    pytest.skip(f"IPFS test node not installed: {missing}")


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A running js-ipfs daemon on loopback (offline); ``.api_url``, ``.repo``."""
    testnode = load_testnode()
    require_installed(testnode.installed())
    node = testnode.JsIpfsNode.start(tmp_path_factory.mktemp("ipfs"))
    try:
        yield node
    finally:
        node.stop()


@pytest.fixture
def ipfs_api(ipfs_node: object) -> str:
    return str(ipfs_node.api_url)  # type: ignore[attr-defined]

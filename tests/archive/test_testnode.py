"""The IPFS test node's guard: missing node_modules fails CI, skips elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.archive import load_testnode

from .conftest import require_installed


def test_missing_node_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="need the IPFS test node: gone"):
        require_installed("gone")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        require_installed("gone")
    require_installed(None)


def test_installed_reports_a_missing_cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    testnode = load_testnode()
    monkeypatch.setattr(testnode, "CLI", tmp_path / "absent" / "cli.js")
    assert "npm install" in testnode.installed()

"""Report files, the ``simnet`` command-line contract and the benchmark hook."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from simnet import report
from simnet.bench import run_bench
from simnet.cli import app
from simnet.scenario import resolve
from simnet.virtual import run

pytestmark = pytest.mark.timeout(60)


def test_report_files_are_written(tmp_path: Path) -> None:
    res = run(resolve("relay-only"), 1)
    data = report.write(res, tmp_path / "out")
    out = tmp_path / "out"
    assert json.loads((out / "report.json").read_text())["trace_hash"] == res.trace_hash
    md = (out / "report.md").read_text()
    assert "converged" in md and res.trace_hash in md
    assert data["plots"]
    for name in data["plots"]:
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000
    assert data["timeline"] and data["traffic"]["bytes_per_node_max"] > 0
    rec = data["recovery"]
    assert [r["kind"] for r in rec] == ["crash", "restart"]
    assert all(r["recovered_after_s"] is not None for r in rec)
    assert "## Events" in md


def test_cli_json_prints_exactly_one_object(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "partition-heal", "--seed", "3", "--out",
                                      str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["converged"] is True
    assert isinstance(data["trace_hash"], str) and len(data["trace_hash"]) == 64
    assert isinstance(data["convergence_ratio"], float) and data["convergence_ratio"] > 0
    assert data["nodes"] == 20 and data["seed"] == 3
    assert isinstance(data["wall_s"], float)
    assert (tmp_path / "report.md").exists()
    again = CliRunner().invoke(app, ["run", "partition-heal", "--seed", "3", "--out",
                                     str(tmp_path / "2"), "--json"])
    assert json.loads(again.stdout)["trace_hash"] == data["trace_hash"]


def test_cli_user_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("duration = 10\n[nodes]\ncount = 3\nflavour = 1\n")
    for args in (["run", str(bad)], ["run", "nope-not-a-scenario"],
                 ["run", "partition-heal", "--backend", "carrier-pigeon"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("simnet: ")
    assert "nodes.flavour: unknown key" in CliRunner().invoke(app, ["run", str(bad)]).stderr


def test_cli_list() -> None:
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0 and "large-community" in result.stdout


def test_bench_hook_shape() -> None:
    rows = run_bench((20, 40), deltas=100, isolate=False)
    assert [r["nodes"] for r in rows] == [20, 40]
    for r in rows:
        assert r["converged"] and r["deltas"] == 100
        assert r["wall_s"] > 0 and r["peak_rss_mb"] > 0 and r["convergence_ratio"] >= 0


def test_cli_reports_non_convergence_with_exit_1(tmp_path: Path) -> None:
    """A partition that never heals cannot converge: one JSON object, exit code 1."""
    sc = tmp_path / "split.toml"
    sc.write_text(
        'duration = 20.0\n[nodes]\ncount = 6\ngroups = { a = "0-2", b = "3-5" }\n'
        '[topology]\nkind = "full"\n[writes]\nwriters = [0, 3]\nrate = 2.0\ntotal = 10\n'
        '[[events]]\nat = 0.5\nkind = "partition"\ngroups = ["a", "b"]\n')
    result = CliRunner().invoke(app, ["run", str(sc), "--out", str(tmp_path / "o"), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["converged"] is False and data["convergence_ratio"] == -1.0
    assert data["convergence"]["problems"]
    assert "DID NOT CONVERGE" in (tmp_path / "o" / "report.md").read_text()

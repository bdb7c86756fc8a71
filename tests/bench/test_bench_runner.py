"""The benchmark runner works in quick mode and writes a complete report (no timing asserts).

(No __init__.py here: a package named ``bench`` under tests/ would shadow the real one.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {"deltas", "deltas_per_s", "raw_rows_per_s", "ratio_to_raw", "peak_rss_mb", "soil_s",
          "raw_s", "meets_rate", "meets_ratio", "targets"}


@pytest.mark.timeout(120)
def test_quick_bench_writes_report(tmp_path: Path) -> None:
    out = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out), "ingest"],
                          cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "report.json").read_text())
    ingest = report["benchmarks"]["ingest"]
    assert ingest.keys() >= FIELDS
    assert ingest["deltas"] == 10_000 and ingest["quick"] is True
    assert ingest["deltas_per_s"] > 0 and ingest["raw_rows_per_s"] > 0
    assert ingest["documents"] > 0
    md = (out / "report.md").read_text()
    assert "Soil ingest" in md and "raw SQLite" in md
    assert json.loads(proc.stdout)["quick"] is True

"""bench/archive.py in quick mode on the session's IPFS node (report shape, no timing)."""

from __future__ import annotations

from bench import archive


def test_quick_archive_bench_reports_push_pull_and_ingest(ipfs_api: str) -> None:
    result = archive.run(quick=True, ipfs_api=ipfs_api)
    assert result["deltas"] == archive.QUICK_DELTAS and result["quick"] is True
    for key in ("ingest_s", "push_s", "pull_s"):
        assert result[key] > 0
    assert abs(result["pull_to_ingest"] - result["ingest_s"] / result["pull_s"]) < 0.01
    assert result["stored_mb"] >= result["envelope_mb"] > 0
    assert "Pull rate / plain ingest" in archive.markdown(result)

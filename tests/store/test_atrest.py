"""Personal-space content never reaches the database files in clear."""

from __future__ import annotations

from pathlib import Path

from mycelium.spaces import service

from .conftest import A, open_soil

MARKER = "PLAINTEXT-MARKER-7f3a"


def test_personal_docs_are_encrypted_at_rest(tmp_path: Path) -> None:
    soil = open_soil(tmp_path / "p.db", A)
    personal = service.ensure_personal_space(soil)
    community = service.create_space(soil, "market")
    soil.put_doc(personal, "diary", f"id-{MARKER}", {"title": MARKER, "body": MARKER * 3})
    soil.put_doc(personal, "health", "h1", {"note": MARKER, "value": 120})
    soil.put_doc(community, "products", "p1", {"title": "COMMUNITY-VISIBLE"})
    assert soil.get_doc(personal, "diary", f"id-{MARKER}") is not None
    assert [d["note"] for d in soil.list_docs(personal, "health")] == [MARKER]
    files = [p for p in tmp_path.iterdir() if p.name.startswith("p.db")]
    assert any(p.name.endswith("-wal") for p in files)  # the WAL is checked too, unmerged
    blob = b"".join(p.read_bytes() for p in files)
    assert MARKER.encode() not in blob
    assert b"COMMUNITY-VISIBLE" in blob  # control: the grep does find plaintext
    soil.close()
    again = open_soil(tmp_path / "p.db", A)
    assert (again.get_doc(personal, "diary", f"id-{MARKER}") or {})["title"] == MARKER
    again.close()

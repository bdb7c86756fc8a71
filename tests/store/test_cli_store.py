"""``mycelium store check`` / ``store rebuild`` through the console script, on damaged
rows, a damaged vector table and a damaged page of the file; and the refusal while a node
runs. Documents must end identical to what they were before the damage."""

from __future__ import annotations

import http.server
import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mycelium.paths import NodePaths
from mycelium.store.local import open_local_soil

MYCELIUM = Path(sys.executable).with_name("mycelium")
ENV = {**os.environ, "MYCELIUM_PASSPHRASE": "pw", "MYCELIUM_INSECURE_FAST_KDF": "1"}
ENV.pop("MYCELIUM_HOME", None)


def run(home: Path, *args: str, code: int = 0, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(MYCELIUM), *args, "--home", str(home)], capture_output=True,
                          text=True, env=ENV, timeout=120, input=stdin)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def js(home: Path, *args: str, code: int = 0) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run(home, *args, "--json", code=code).stdout)
    return data


def documents(home: Path) -> dict[str, Any]:
    return {coll: js(home, "doc", "list", space, coll)["docs"]
            for space, coll in (("market", "products"), ("personal", "diary"))}


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "n"
    run(path, "init")
    run(path, "space", "create", "market")
    soil = open_local_soil(NodePaths(path), "pw")  # many writes: the CLI costs ~1 s a call
    try:
        market = soil.resolve_space("market")
        for i in range(120):
            soil.put_doc(market, "products", f"p{i:03}",
                         {"title": f"item {i}", "quantity": i, "unit": "kg"})
        personal = soil.resolve_space("personal")
        for i in range(20):
            soil.put_doc(personal, "diary", f"d{i}", {"body": f"day {i}"})
        soil.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        soil.close()
    return path


def test_check_and_rebuild_after_damaged_rows_and_vectors(home: Path) -> None:
    want = documents(home)
    assert js(home, "store", "check")["ok"] is True
    db = sqlite3.connect(home / "soil.db")
    db.execute("UPDATE docs SET body=x'ff00ff' WHERE doc IN ('p007', 'p011')")
    db.execute("UPDATE docs SET body=x'00' WHERE doc=(SELECT doc FROM docs "
               "WHERE coll!='products' ORDER BY doc LIMIT 1)")  # a sealed diary row
    db.execute("UPDATE vv SET seq=seq+5")
    db.commit()
    db.close()
    report = js(home, "store", "check", code=1)
    assert report["ok"] is False
    assert {p["kind"] for p in report["problems"]} == {"document", "vector"}
    human = run(home, "store", "check", code=1)
    assert "store rebuild" in human.stdout
    done = js(home, "store", "rebuild")
    assert done["documents"] == 140 and done["salvaged"] is None
    assert js(home, "store", "check")["ok"] is True
    assert documents(home) == want


def _smash_leaf_page(path: Path, table: str) -> None:
    db = sqlite3.connect(path)
    pages = [p for (p,) in db.execute("SELECT pageno FROM dbstat WHERE name=? AND "
                                      "pagetype='leaf' ORDER BY pageno", (table,))]
    size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    assert len(pages) >= 2
    with open(path, "r+b") as fh:
        fh.seek((pages[len(pages) // 2] - 1) * size)
        fh.write(b"\x5a" * size)


def test_damaged_page_one_line_message_then_rebuild(home: Path) -> None:
    want = documents(home)
    _smash_leaf_page(home / "soil.db", "docs")
    broken = run(home, "doc", "list", "market", "products", code=1)
    assert broken.stderr.count("\n") == 1 and "store rebuild" in broken.stderr
    assert "sync the rest from peers" in broken.stderr
    report = js(home, "store", "check", code=1)
    assert report["integrity"] != ["ok"]
    done = js(home, "store", "rebuild")
    assert done["salvaged"]["lost"] == ["docs"]
    assert Path(done["salvaged"]["kept"]).exists()
    assert js(home, "store", "check")["ok"] is True
    assert documents(home) == want


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # the stdlib's name
        self.send_response(200 if self.path == "/v1/health" else 404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def fake_running_node(home: Path) -> Iterator[Path]:
    """A control API that answers the health probe, published in ``api.json`` as a node
    would (this test process's pid stands for the node's)."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    (home / "api.json").write_text(json.dumps({"url": url, "token": "t", "pid": os.getpid()}))
    yield home
    server.shutdown()
    server.server_close()
    (home / "api.json").unlink()


def test_refuses_while_a_node_runs(fake_running_node: Path) -> None:
    for command in ("check", "rebuild"):
        proc = run(fake_running_node, "store", command, code=1)
        assert "a node is running" in proc.stderr and "stop it first" in proc.stderr


def test_a_file_sqlite_calls_corrupt_is_one_line_everywhere(tmp_path: Path) -> None:
    """``run``, ``status`` and ``doc`` on a file whose header is gone: one line with the
    way out, no traceback; ``store rebuild`` then gives a working (empty) store back."""
    home = tmp_path / "n"
    run(home, "init")
    (home / "soil.db").write_bytes(b"\x00" * 4096)
    for side in ("soil.db-wal", "soil.db-shm"):
        (home / side).unlink(missing_ok=True)
    for args in (("run", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0", "--api",
                  "127.0.0.1:0"), ("status",), ("doc", "list", "personal", "diary")):
        proc = run(home, *args, code=1)
        assert proc.stderr.count("\n") == 1, proc.stderr
        assert "damaged" in proc.stderr and "mycelium store rebuild" in proc.stderr
    assert "file" in {p["kind"] for p in js(home, "store", "check", code=1)["problems"]}
    assert js(home, "store", "rebuild")["salvaged"]["lost"] == ["sqlite_master"]
    assert js(home, "doc", "list", "personal", "diary") == {"docs": []}

"""``mycelium doc put --data``: inline JSON, ``@FILE`` and ``-`` (stdin), as curl takes it,
with one-line errors for what cannot be read."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

MYCELIUM = Path(sys.executable).with_name("mycelium")
ENV = {k: v for k, v in os.environ.items() if k != "MYCELIUM_HOME"}
ENV.update(MYCELIUM_PASSPHRASE="pw", MYCELIUM_INSECURE_FAST_KDF="1")


def run(home: Path, *args: str, stdin: str | None = None,
        code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(MYCELIUM), *args, "--home", str(home)], capture_output=True,
                          text=True, env=ENV, timeout=60, input=stdin)
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    return proc


def test_data_from_a_file_and_from_stdin(tmp_path: Path) -> None:
    home = tmp_path / "n"
    run(home, "init")
    long_text = "garlic " * 30_000  # ~210 KB: more than one shell argument may carry
    note = tmp_path / "note.json"
    note.write_text(json.dumps({"title": "long", "body": long_text[:16_000]}))
    run(home, "doc", "put", "personal", "diary", "d1", "--data", f"@{note}")
    run(home, "doc", "put", "personal", "diary", "d2", "--data", "-",
        stdin=json.dumps({"body": "from a pipe", "mood": "calm"}))
    got = json.loads(run(home, "doc", "list", "personal", "diary", "--json").stdout)["docs"]
    assert got == [{"_id": "d1", "title": "long", "body": long_text[:16_000]},
                   {"_id": "d2", "body": "from a pipe", "mood": "calm"}]
    missing = run(home, "doc", "put", "personal", "diary", "d3", "--data", "@nope.json", code=1)
    assert missing.stderr.startswith("error: --data @nope.json: cannot read")
    assert missing.stderr.count("\n") == 1
    bad = tmp_path / "bad.json"
    bad.write_text('{"body": ')
    broken = run(home, "doc", "put", "personal", "diary", "d3", "--data", f"@{bad}", code=1)
    assert "--data is not valid JSON" in broken.stderr and "line 1" in broken.stderr
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe{}")
    assert "not UTF-8" in run(home, "doc", "put", "personal", "diary", "d3", "--data",
                              f"@{binary}", code=1).stderr
    too_big = run(home, "doc", "put", "personal", "diary", "d3", "--data", "-",
                  stdin=json.dumps({"body": long_text}), code=1)
    assert too_big.stderr.startswith("error: ") and too_big.stderr.count("\n") == 1

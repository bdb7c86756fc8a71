"""``mycelium doc …`` through the console script, and open_local_soil."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mycelium.paths import NodePaths
from mycelium.store.local import open_local_soil

MYCELIUM = Path(sys.executable).with_name("mycelium")
ENV = {**os.environ, "MYCELIUM_PASSPHRASE": "pw", "MYCELIUM_INSECURE_FAST_KDF": "1"}


def run(home: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in ENV.items() if k != "MYCELIUM_HOME"}
    proc = subprocess.run([str(MYCELIUM), *args, "--home", str(home)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert (proc.returncode == 0) == ok, proc.stderr
    return proc


def js(home: Path, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(run(home, *args, "--json").stdout)
    return data


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cli") / "n"
    run(path, "init")
    return path


def test_doc_put_get_list_in_personal_space(home: Path) -> None:
    put = js(home, "doc", "put", "personal", "diary", "d1", "--data", '{"body": "hello"}')
    assert len(bytes.fromhex(put["delta_id"])) == 32
    assert js(home, "doc", "get", "personal", "diary", "d1") == {
        "doc": {"_id": "d1", "body": "hello"}}
    js(home, "doc", "put", "personal", "diary", "d2", "--data", '{"title": "t", "mood": "ok"}')
    listed = js(home, "doc", "list", "personal", "diary")
    assert [d["_id"] for d in listed["docs"]] == ["d1", "d2"]
    assert js(home, "doc", "get", "personal", "diary", "nope") == {"doc": None}
    human = run(home, "doc", "list", "personal", "diary").stdout
    assert "d1" in human and "body=hello" in human


@pytest.mark.slow
@pytest.mark.parametrize("args", [
    ("doc", "put", "personal", "diary", "d", "--data", "{not json"),
    ("doc", "put", "personal", "diary", "d", "--data", "[1]"),
    ("doc", "put", "personal", "products", "d", "--data", '{"title": "x"}'),
    ("doc", "put", "personal", "diary", "d", "--data", '{"body": 5}'),
    ("doc", "get", "nosuchspace", "diary", "d"),
    ("doc", "get", "personal", "diary", "missing"),
])
def test_user_mistakes_are_one_line_errors(home: Path, args: tuple[str, ...]) -> None:
    proc = run(home, *args, ok=False)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_one_line_error_for_a_bad_document(home: Path) -> None:
    proc = run(home, "doc", "put", "personal", "diary", "d", "--data", '{"body": 5}', ok=False)
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_open_local_soil_creates_the_personal_space_once(home: Path) -> None:
    paths = NodePaths(home)
    soil = open_local_soil(paths, lambda: "pw")
    first = soil.resolve_space("personal")
    vv = soil.version_vector(first)
    soil.close()
    again = open_local_soil(paths, "pw")
    assert again.resolve_space("personal") == first and again.version_vector(first) == vv
    again.close()

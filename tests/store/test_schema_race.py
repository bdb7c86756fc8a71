"""Processes that open the same new store at once (``mycelium run`` and a CLI command
started together) must all succeed: the schema row and migrations are written under one
write lock, never twice."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from mycelium.store.schema import SCHEMA_VERSION, connect

OPENERS = 4


def _open(path: str, barrier: Any, errors: Any) -> None:
    barrier.wait(timeout=20)
    try:
        connect(Path(path)).close()
    except BaseException as exc:  # reported to the parent, which names it
        errors.put(f"{type(exc).__name__}: {exc}")


def test_concurrent_first_opens_of_one_store_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    errors: Any = ctx.Queue()
    for round_ in range(10):
        path = tmp_path / f"soil-{round_}.db"
        barrier = ctx.Barrier(OPENERS)
        procs = [ctx.Process(target=_open, args=(str(path), barrier, errors))
                 for _ in range(OPENERS)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        conn = connect(path)
        rows = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchall()
        conn.close()
        assert rows == [(SCHEMA_VERSION,)]
    found = []
    while not errors.empty():
        found.append(errors.get(timeout=5))
    assert found == []

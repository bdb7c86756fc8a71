"""``mycelium store check`` and ``mycelium store rebuild`` (issue 17 §2, mycelium/store/repair.py).

Both refuse while a node runs in the same home, instead of going through the control API:
a rebuild rewrites the tables the running node mirrors in memory (heads, pending,
membership) and, for a damaged file, replaces the file under the node's open connection,
so the node would have to stop syncing, writing and notifying anyway. Stopping it is one
Ctrl-C and leaves no half-state to explain. ``check`` only reads, but it compares the
derived tables with the envelopes, which a running node changes under it: a report would
show differences that are not damage.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from mycelium.cli.common import (
    HomeOption,
    JsonOption,
    emit,
    fail,
    node_paths,
    passphrase,
    user_errors,
)
from mycelium.errors import MyceliumError
from mycelium.paths import NodePaths

store_app = typer.Typer(help="Check and repair the local store (soil.db).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(store_app, name="store")


def _refuse_if_running(paths: NodePaths) -> None:
    from mycelium.node.client import running_node

    if running_node(paths) is not None:
        fail(f"a node is running in {paths.home}: stop it first (store check and rebuild need "
             "the database to themselves)")


def _identity(paths: NodePaths) -> Any:
    from mycelium.identity.keystore import load_keystore

    if not paths.keystore.exists():
        fail(f"no identity in {paths.home}: run `mycelium init` first")
    return load_keystore(paths.keystore, passphrase())


@contextmanager
def _progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (stdout stays for ``--json``); silent without a tty."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(),
                   console=Console(stderr=True), transient=True,
                   disable=not sys.stderr.isatty())
    with bar:
        task = bar.add_task(label, total=max(total, 1))
        yield lambda n: bar.advance(task, n)


@store_app.command("check")
@user_errors
def check(home: str | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Verify soil.db: SQLite integrity, chains, version vectors, every document row.

    Exit status 0 when everything is consistent, 1 when something needs `store rebuild`.
    """
    from mycelium.store import repair
    from mycelium.store.soil import Soil

    paths = node_paths(home)
    _refuse_if_running(paths)
    if not paths.soil.exists():
        fail(f"no store at {paths.soil}")
    identity = _identity(paths)
    try:
        with Soil.open(paths.soil, identity) as soil:
            total = repair.count_envelopes(soil.conn, chains_too=False)
            with _progress("checking", total) as advance:
                report = repair.check(soil, advance)
    except sqlite3.DatabaseError as exc:
        if not repair.is_corruption(exc):
            raise
        report = repair.Report(integrity=_integrity_only(paths.soil))
        report.add("file", None, repair.damaged_message(paths.soil, exc))
    except MyceliumError as exc:
        fail(str(exc))
    human = "store is consistent" if report.ok else "\n".join(
        [*(f"sqlite: {m}" for m in report.integrity if m != "ok"),
         *(f"{p['kind']}: {p['detail']}" for p in report.problems),
         "run `mycelium store rebuild` to re-derive them from the envelopes"])
    emit(report.to_json(), as_json, human)
    if not report.ok:
        raise typer.Exit(1)


def _integrity_only(path: Path) -> list[str]:
    from mycelium.store import repair

    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return repair.integrity(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return [str(exc)]


@store_app.command("rebuild")
@user_errors
def rebuild(home: str | None = HomeOption, as_json: bool = JsonOption) -> None:
    """Re-derive documents, indexes and version vectors from the envelopes, atomically.

    A file SQLite calls damaged is first salvaged (every row it can still read, into a new
    file); the damaged file is kept beside it as soil.db.damaged-<time>. Envelopes lost
    with it come back from peers at the next sync.
    """
    from mycelium.store import repair
    from mycelium.store.soil import Soil

    paths = node_paths(home)
    _refuse_if_running(paths)
    if not paths.soil.exists():
        fail(f"no store at {paths.soil}")
    identity = _identity(paths)
    salvaged: dict[str, Any] | None = None
    try:
        try:
            with Soil.open(paths.soil, identity) as soil:
                if repair.integrity(soil.conn) != ["ok"]:
                    raise sqlite3.DatabaseError("database disk image is malformed")
                done = _rebuild(soil)
        except sqlite3.DatabaseError as exc:
            if not repair.is_corruption(exc):
                raise
            salvaged, done = _rebuild_damaged(paths, identity)
    except MyceliumError as exc:
        fail(str(exc))
    except sqlite3.DatabaseError as exc:
        fail(repair.damaged_message(paths.soil, exc) if repair.is_corruption(exc) else
             f"store: {exc}")
    data: dict[str, Any] = {**done.to_json(), "salvaged": salvaged}
    human = (f"rebuilt {done.documents} documents of {done.spaces} spaces from "
             f"{done.envelopes} envelopes")
    if done.parked:
        human += f"; {done.parked} envelopes wait for missing ones from peers"
    if salvaged is not None:
        human += (f"\nthe damaged file was kept as {salvaged['kept']}; lost: "
                  f"{', '.join(salvaged['lost']) or 'nothing'} — run the node to sync the rest "
                  "from peers")
    emit(data, as_json, human)


def _rebuild(soil: Any) -> Any:
    from mycelium.store import repair

    with _progress("rebuilding", repair.count_envelopes(soil.conn)) as advance:
        return repair.rebuild(soil, advance)


def _rebuild_damaged(paths: NodePaths, identity: Any) -> tuple[dict[str, Any], Any]:
    """Salvage into a new file, rebuild it, then swap it in (the damaged file is kept)."""
    from mycelium.store import repair
    from mycelium.store.soil import Soil

    stamp = time.strftime("%Y%m%dT%H%M%S")
    fresh = paths.soil.with_name(f"{paths.soil.name}.rebuild-{stamp}")
    kept = paths.soil.with_name(f"{paths.soil.name}.damaged-{stamp}")
    found = repair.salvage(paths.soil, fresh)
    with Soil.open(fresh, identity) as soil:
        done = _rebuild(soil)
        soil.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    _swap(paths.soil, fresh, kept)
    return {"kept": str(kept), "lost": found.lost, "tables": found.tables}, done


def _swap(current: Path, fresh: Path, kept: Path) -> None:
    """Put ``fresh`` in place of ``current``, keeping ``current`` (and its WAL) as ``kept``.

    The old WAL must not stay beside the new file (SQLite would replay it into it), so it
    moves with the old file first; the last step is one atomic rename."""
    for suffix in ("-wal", "-shm"):
        side = Path(f"{current}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{kept}{suffix}"))
    os.link(current, kept)
    for suffix in ("-wal", "-shm"):
        Path(f"{fresh}{suffix}").unlink(missing_ok=True)
    os.replace(fresh, current)

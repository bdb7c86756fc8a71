"""Crash safety: SIGKILL a writer at many points; the store reopens whole and keeps exactly a
prefix that includes everything acknowledged.

What a SIGKILL can prove: that every transaction boundary is right (a crash between any two
statements leaves all of a batch or none of it, the chain a prefix, every stored delta
materialized) and that nothing is acknowledged before its COMMIT returned. What it cannot
prove: durability against power loss. The killed process's writes sit in the kernel's
page cache, which survives it, so ``synchronous=OFF`` (no fsync at all) passes this test
exactly like ``FULL``. Only pulling the power (or a VM snapshot without the page cache)
would show the difference; :func:`test_soil_commits_with_synchronous_full` therefore
asserts the setting itself on the connections the node and the CLI use.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mycelium.codec import cbor
from mycelium.spaces import service
from mycelium.store.soil import Soil

from .conftest import A, B, Clock, did

WRITER = Path(__file__).with_name("crash_writer.py")
KILL_POINTS = 10
B_WRITES = 1200


def prepare(tmp: Path) -> tuple[Path, Path, bytes]:
    a = Soil.open(tmp / "a.db", A)
    b = Soil.open(tmp / "b.db", B, clock=Clock(), synchronous="NORMAL")
    space = service.create_space(a, "market")
    service.join(b, service.invite(a, space, did(B)))
    for i in range(B_WRITES):
        b.put_doc(space, "products", f"b{i % 400}", {"title": f"v{i}", "price": i})
    theirs = b.envelopes_since(space, a.version_vector(space), limit=10**6, max_bytes=1 << 30)
    assert len(theirs) == B_WRITES
    env_file = tmp / "b-envelopes.cbor"
    env_file.write_bytes(cbor.encode(theirs))
    a.close()
    b.close()
    return tmp / "a.db", env_file, space


def run_and_kill(db: Path, env_file: Path, space: bytes, rnd: random.Random) -> dict[str, int]:
    """Start the writer, SIGKILL it after a random number of acks; return the last acks."""
    proc = subprocess.Popen([sys.executable, str(WRITER), str(db), str(env_file), space.hex()],
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    acked: dict[str, int] = {}
    assert proc.stdout is not None
    try:
        for _ in range(rnd.randint(1, 8)):
            line = proc.stdout.readline()
            if not line:
                break
            who, seq = line.split()
            acked[who] = int(seq)
        time.sleep(rnd.random() * 0.03)  # land anywhere, often inside a transaction
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    # acks already written to the pipe before the kill are acknowledgements too
    for line in proc.stdout.read().splitlines():
        who, seq = line.split()
        acked[who] = int(seq)
    proc.stdout.close()
    return acked


def check(db: Path, space: bytes, acked: dict[str, int], seen_a: int = 0) -> dict[str, int]:
    """The store after a kill; ``seen_a`` is A's head at the previous check (a write in
    flight at an earlier kill may be committed without ever being acknowledged)."""
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    conn.close()
    soil = Soil.open(db, A)
    vv = soil.version_vector(space)
    b_seq, a_seq = vv.get(B.public_key, 0), vv[A.public_key]
    assert b_seq >= acked.get("B", 0) and a_seq >= acked.get("A", 0)
    # at most the one write in flight at this kill, beyond what was acknowledged or seen
    assert a_seq <= max(acked.get("A", 0), seen_a) + 1
    for author, head in ((A.public_key, a_seq), (B.public_key, b_seq)):
        seqs = [s for (s,) in soil.conn.execute(
            "SELECT seq FROM envelopes WHERE space=? AND author=? ORDER BY seq", (space, author))]
        assert seqs == list(range(1, head + 1))  # exactly a prefix, no holes
    docs = {d["_id"]: d for d in soil.list_docs(space, "products")}
    b_docs = {f"b{i % 400}" for i in range(b_seq)}
    assert {k for k in docs if k.startswith("b")} == b_docs
    for i in range(max(0, b_seq - 400), b_seq):  # newest write of each doc is materialized
        assert docs[f"b{i % 400}"]["price"] >= i
    own = {k for k in docs if k.startswith("n")}
    data_seqs = [s for (s,) in soil.conn.execute(
        "SELECT seq FROM envelopes WHERE space=? AND author=? AND kind=0", (space, A.public_key))]
    assert own == {f"n{s}" for s in data_seqs}  # each stored local delta has its document
    if "A" in acked:
        assert f"n{acked['A']}" in own
    soil.close()
    return {"A": a_seq, "B": b_seq}


def test_sigkill_at_many_points_keeps_an_acknowledged_prefix(tmp_path: Path) -> None:
    db, env_file, space = prepare(tmp_path)
    rnd = random.Random(42)
    progress = []
    acked: dict[str, int] = {}  # every acknowledgement so far, across runs
    for _ in range(KILL_POINTS):
        acked.update(run_and_kill(db, env_file, space, rnd))
        progress.append(check(db, space, acked, progress[-1]["A"] if progress else 0))
    assert progress[-1]["B"] > progress[0]["B"] > 0  # the writer really made progress


def test_soil_commits_with_synchronous_full(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """WAL with ``synchronous=FULL`` (schema.py: an acknowledged write survives power loss)
    on every way the node opens its store; the SIGKILL test above cannot tell."""
    from mycelium.identity.keystore import create_keystore
    from mycelium.paths import NodePaths
    from mycelium.store.local import open_local_soil

    with Soil.open(tmp_path / "s.db", A) as soil:
        assert soil.conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        assert soil.conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    monkeypatch.setenv("MYCELIUM_INSECURE_FAST_KDF", "1")
    paths = NodePaths(tmp_path / "home")
    paths.ensure()
    create_keystore(paths.keystore, "pw")
    soil = open_local_soil(paths, "pw")
    try:
        assert soil.conn.execute("PRAGMA synchronous").fetchone() == (2,)
    finally:
        soil.close()
    with Soil.open(tmp_path / "n.db", A, synchronous="NORMAL") as relaxed:  # the opt-out works
        assert relaxed.conn.execute("PRAGMA synchronous").fetchone() == (1,)

"""Instructions per ingested delta, counted by callgrind: a noise-free way to compare code.

Wall-clock rates on shared 2-core VMs drift by ±20 % within minutes, which hides changes of
a few percent. The number of instructions an ingest executes does not drift (to ~0.1 %),
so comparing it between two versions of the code shows what a change is worth::

    python -m bench._instructions                 # the working tree
    python -m bench._instructions HEAD~3 HEAD     # git revisions (temporary worktrees)

Each measurement runs the ingest benchmark's workload (4 authors, ``--deltas`` deltas over
a fifth as many documents, so most deltas update a stored document) under
``valgrind --tool=callgrind`` twice: once stopping just before the ingest, once through it;
the difference divided by the delta count is printed. Crypto counts high under valgrind
(no SIMD), so read the numbers as relative. Needs valgrind (``apt-get install valgrind``);
not used by the tests. Not a benchmark module of ``bench/`` (leading underscore).
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _child(mode: str, deltas: int, cache: Path) -> None:
    """Runs inside valgrind, in the checkout being measured (on ``sys.path`` first)."""
    from bench import ingest
    from mycelium.identity.identity import Identity

    ingest.DOCS = max(1, deltas // 5)
    genesis, control, data = pickle.loads(cache.read_bytes())
    reader = Identity.from_seed(b"\x63" * 32)  # the reader of ingest.make_deltas
    soil, space = ingest._prepared_soil(Path(tempfile.mkdtemp()) / "s.db", genesis, control,
                                        reader)
    if mode == "run":
        ingest._ingest_batches(soil, space, data)
    soil.close()


def _instructions(checkout: Path, mode: str, deltas: int, cache: Path) -> int:
    # this file of the working tree drives the run; ``bench`` and ``mycelium`` come from
    # ``checkout`` (first on the path), which need not have this file
    cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable,
           str(Path(__file__).resolve()), "--child", mode, "--deltas", str(deltas),
           "--cache", str(cache)]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    proc = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, text=True,
                          timeout=1800, check=False)
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed in {checkout}:\n{proc.stderr[-2000:]}")
    return int(found.group(1))


def per_delta(checkout: Path, deltas: int, cache: Path) -> float:
    before = _instructions(checkout, "setup", deltas, cache)
    return (_instructions(checkout, "run", deltas, cache) - before) / deltas


def _deltas_file(deltas: int, tmp: Path) -> Path:
    """The signed deltas, made once (by the working tree) and fed to every version."""
    sys.path.insert(0, str(ROOT))
    from bench import ingest

    ingest.DOCS = max(1, deltas // 5)
    genesis, control, data, _reader = ingest.make_deltas(tmp, deltas)
    cache = tmp / "deltas.pickle"
    cache.write_bytes(pickle.dumps((genesis, control, data)))
    return cache


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("revs", nargs="*", help="git revisions to measure (default: working tree)")
    parser.add_argument("--deltas", type=int, default=5000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.deltas, args.cache)
        return
    if shutil.which("valgrind") is None:
        sys.exit("bench._instructions needs valgrind: apt-get install valgrind")
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp_name:
        tmp = Path(tmp_name)
        cache = _deltas_file(args.deltas, tmp)
        for rev in args.revs or [None]:
            checkout = ROOT
            if rev is not None:
                checkout = tmp / f"rev-{len(list(tmp.iterdir()))}"
                subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                                str(checkout), rev], check=True)
            try:
                print(f"{rev or 'working tree'}: {per_delta(checkout, args.deltas, cache):,.0f} "
                      f"instructions per delta", flush=True)
            finally:
                if rev is not None:
                    subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                    str(checkout)], check=False)


if __name__ == "__main__":
    main()

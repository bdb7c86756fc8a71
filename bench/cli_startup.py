"""Start-up time of offline CLI commands, side by side with ``mycelium --help``.

Commands that do not need the network (``id``, ``id convert``, ``doc list`` on the local
store) should cost about what ``--help`` costs: the interpreter, typer and our own
modules, not py-libp2p (~1 s to import), hypercorn or matplotlib. Each row is the median
wall time of fresh processes in a throwaway home, and its ratio to ``--help``; the
heaviest imports of ``mycelium id`` (``python -X importtime``) are listed so a regression
names its cause.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

MYCELIUM = Path(sys.executable).with_name("mycelium")
#: Modules whose import an offline command should never pay for.
HEAVY = ("libp2p", "hypercorn", "matplotlib", "starlette", "httpx", "zeroconf", "jinja2",
         "playwright", "twilio")


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "MYCELIUM_HOME": str(home), "MYCELIUM_PASSPHRASE": "bench",
            "MYCELIUM_INSECURE_FAST_KDF": "1"}


def _time(cmd: list[str], env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median wall time and median CPU time (user + system) of ``runs`` fresh processes.
    CPU time is the steadier number on a loaded machine."""
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=120)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


_IMPORTTIME = ("import sys; from mycelium.cli import main; "
               "sys.argv = ['mycelium', *sys.argv[1:]]; main()")


def _imports(args: list[str], env: dict[str, str]) -> tuple[list[tuple[str, float]], set[str]]:
    """Top-level imports of ``mycelium ARGS`` with their cumulative ms, and every package
    imported at any depth."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", _IMPORTTIME, *args],
                          env=env, capture_output=True, text=True, timeout=120)
    totals: dict[str, float] = {}
    seen: set[str] = set()
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or line.count("|") != 2:
            continue
        _, cumulative, name = line.split("|")
        package = name.strip().split(".")[0]
        seen.add(package)
        if name.startswith(" ") and not name.startswith("  "):  # a top-level import
            try:
                totals[package] = totals.get(package, 0.0) + int(cumulative.strip()) / 1000
            except ValueError:
                continue
    return sorted(totals.items(), key=lambda kv: -kv[1]), seen


def run(quick: bool) -> dict[str, Any]:
    runs = 3 if quick else 9
    home = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    try:
        env = _env(home)
        subprocess.run([str(MYCELIUM), "init"], env=env, check=True, capture_output=True,
                       timeout=120)
        peer_id = subprocess.run([str(MYCELIUM), "id", "--json"], env=env, check=True,
                                 capture_output=True, text=True, timeout=120).stdout
        pid = peer_id.split('"peer_id": "')[1].split('"')[0]
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "mycelium --help": [str(MYCELIUM), "--help"],
            "mycelium id": [str(MYCELIUM), "id"],
            "mycelium id convert PEER_ID": [str(MYCELIUM), "id", "convert", pid],
            "mycelium doc list personal diary": [str(MYCELIUM), "doc", "list", "personal",
                                                 "diary"],
        }
        rows = {name: _time(cmd, env, runs) for name, cmd in commands.items()}
        imports, packages = _imports(["id"], env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    help_wall, help_cpu = rows["mycelium --help"]
    return {
        "name": "cli_startup", "runs": runs,
        "rows": [{"command": name, "median_s": round(wall, 3), "cpu_s": round(cpu, 3),
                  "vs_help": round(wall / help_wall, 2), "cpu_vs_help": round(cpu / help_cpu, 2)}
                 for name, (wall, cpu) in rows.items()],
        "id_heavy_imports": sorted(packages & set(HEAVY)),
        "id_top_imports_ms": [[name, round(ms, 1)] for name, ms in imports[:8]],
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [f"### CLI start-up (median of {result['runs']} fresh processes)", "",
             "| command | wall s | CPU s | wall vs `--help` | CPU vs `--help` |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| `{r['command']}` | {r['median_s']:.3f} | {r['cpu_s']:.3f} | "
              f"{r['vs_help']:.2f} | {r['cpu_vs_help']:.2f} |" for r in result["rows"]]
    heavy = ", ".join(result["id_heavy_imports"]) or "none"
    top = ", ".join(f"{n} {ms:.0f} ms" for n, ms in result["id_top_imports_ms"])
    lines += ["", f"Heavy packages imported by `mycelium id`: {heavy}. Top imports: {top}."]
    return "\n".join(lines)

"""Run every benchmark in ``bench/`` and write ``bench-report/report.json`` and ``report.md``.

A benchmark is a module ``bench/<name>.py`` defining ``run(quick: bool) -> dict`` (and
optionally ``markdown(result) -> str``). ``--quick`` runs the small variants (CI smoke).
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def discover(only: list[str] | None = None) -> list[str]:
    names = sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))
    return [n for n in names if not only or n in only]


def run_all(quick: bool, out: Path, only: list[str] | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    sections = []
    for name in discover(only):
        module = importlib.import_module(f"bench.{name}")
        if not hasattr(module, "run"):
            continue
        print(f"bench: {name} ({'quick' if quick else 'full'}) ...", file=sys.stderr, flush=True)
        try:
            result = module.run(quick=quick)
        except Exception as exc:  # one broken benchmark must not hide the others' results
            results[name] = {"name": name, "error": f"{type(exc).__name__}: {exc}"}
            sections.append(f"### {name}\n\nFAILED: {type(exc).__name__}: {exc}")
            continue
        results[name] = result
        render = getattr(module, "markdown", None)
        sections.append(render(result) if render else f"### {name}\n\n```\n{result}\n```")
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": quick,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "benchmarks": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    header = f"# Benchmarks ({'quick' if quick else 'full'}, {report['created']})\n\n"
    (out / "report.md").write_text(header + "\n\n".join(sections) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, for CI)")
    parser.add_argument("--out", type=Path, default=Path("bench-report"))
    parser.add_argument("names", nargs="*", help="only these benchmarks (default: all)")
    args = parser.parse_args(argv)
    report = run_all(args.quick, args.out, args.names or None)
    print(json.dumps(report, indent=2, sort_keys=True))
    failed = [n for n, r in report["benchmarks"].items() if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

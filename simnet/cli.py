"""``simnet``: run scenarios and write reports (DESIGN.md §9, §10).

    simnet run SCENARIO [--backend virtual|process|netns] [--seed N] [--out DIR] [--json]
               [--set KEY=VALUE]...
    simnet list

``SCENARIO`` is a path to a TOML file or the name of a built-in scenario. With ``--json``
exactly one JSON object goes to stdout; the progress bar is on stderr. User mistakes
(bad scenario, unavailable backend) are one line on stderr and exit code 2; a run that
does not converge exits with 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from simnet.errors import BackendUnavailable, SimnetError
from simnet.scenario import Scenario, builtin_names, resolve

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Simulate Mycelium networks and check that they converge.")
BACKENDS = ("virtual", "process", "netns")


@app.command("run")
def run_cmd(
    scenario: Annotated[str, typer.Argument(help="scenario file or built-in name")],
    backend: Annotated[str, typer.Option(help="virtual | process | netns")] = "virtual",
    seed: Annotated[int | None, typer.Option(help="seed (default: the scenario's)")] = None,
    out: Annotated[Path | None, typer.Option(help="report directory")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    overrides: Annotated[list[str] | None, typer.Option(
        "--set", help="override a scenario value, e.g. --set nodes.count=500")] = None,
) -> None:
    """Run SCENARIO, check convergence and write report.json, report.md and plots."""
    err = Console(stderr=True)
    try:
        sc = resolve(scenario, overrides or ())
        if backend not in BACKENDS:
            raise BackendUnavailable(f"unknown backend {backend!r} (choose from "
                                     f"{', '.join(BACKENDS)})")
        out_dir = out if out is not None else Path("simnet-out") / f"{sc.name}-{backend}"
        data = execute(sc, backend, seed=seed, out=out_dir, console=err)
    except SimnetError as exc:
        typer.echo(f"simnet: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        sys.stdout.write(json.dumps({k: v for k, v in data.items() if k != "timeline"}) + "\n")
    else:
        verdict = "converged" if data["converged"] else "DID NOT CONVERGE"
        typer.echo(f"{sc.name}: {verdict}; {data['nodes']} nodes, ratio "
                   f"{data['convergence_ratio']:.2f}, wall {data['wall_s']:.2f} s")
        typer.echo(f"trace hash {data['trace_hash'] or '(none: real backend)'}")
        typer.echo(f"report: {out_dir / 'report.md'}")
    if not data["converged"]:
        raise typer.Exit(1)


@app.command("list")
def list_cmd() -> None:
    """List the built-in scenarios."""
    for name in builtin_names():
        sc = resolve(name)
        typer.echo(f"{name:18} {sc.nodes:6} nodes  {sc.description}")


def execute(sc: Scenario, backend: str, *, seed: int | None, out: Path,
            console: Console | None = None) -> dict[str, Any]:
    """Run ``sc`` on ``backend`` and write the report into ``out``; returns its data."""
    if backend == "virtual":
        return _virtual(sc, seed, out, console)
    return _real(sc, backend, seed, out)


def _virtual(sc: Scenario, seed: int | None, out: Path, console: Console | None) -> dict[str, Any]:
    from simnet import report
    from simnet.virtual.sim import Simulation

    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed:.1f}/{task.total:.0f} s simulated"),
               TimeElapsedColumn())
    with Progress(*columns, console=console or Console(stderr=True), transient=True,
                  disable=console is None or not console.is_terminal) as bar:
        task = bar.add_task(sc.name, total=sc.duration)

        def progress(t: float, duration: float) -> None:
            bar.update(task, completed=t)

        result = Simulation(sc, seed, progress=progress).run()
        bar.update(task, completed=sc.duration)
    return report.write(result, out)


def _real(sc: Scenario, backend: str, seed: int | None, out: Path) -> dict[str, Any]:
    """Process and netns backends (:mod:`simnet.backends`): real node processes."""
    try:
        import trio

        from simnet.backends import run_real
    except ImportError as exc:
        raise BackendUnavailable(f"the {backend} backend is not available: {exc}") from exc
    try:
        result = trio.run(lambda: run_real(sc, backend, seed=seed))  # type: ignore[arg-type]
    except ImportError as exc:
        raise BackendUnavailable(f"the {backend} backend is not implemented yet ({exc}); "
                                 "use --backend virtual") from exc
    result.write(out)
    data = result.to_json()
    data.setdefault("trace_hash", "")
    data["nodes"] = result.nodes
    return data


def main() -> None:
    app()


if __name__ == "__main__":
    main()

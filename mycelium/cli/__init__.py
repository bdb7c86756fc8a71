"""The ``mycelium`` command line (typer). Each area registers its commands in its module."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="mycelium",
    help="Mycelium: a local-first peer-to-peer node for eco-communities.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

#: Modules under mycelium.cli that define ``register(app)``; missing ones are skipped so
#: areas can land independently.
_AREAS = (
    "identity", "spaces", "docs", "node", "relay", "archive", "gateway", "store", "device", "web",
)


def _register_all() -> None:
    for area in _AREAS:
        try:
            module = importlib.import_module(f"mycelium.cli.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"mycelium.cli.{area}":
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    app()

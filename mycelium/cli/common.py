"""Helpers shared by every CLI command: home, JSON output, errors, passphrases.

Contract (DESIGN.md §10): with ``--json`` a command prints exactly one JSON object on
stdout; errors are one line on stderr and a non-zero exit, never a traceback for user
mistakes (any :class:`MyceliumError` counts as a user-facing error).
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import sqlite3
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer

from mycelium.errors import MyceliumError
from mycelium.paths import NodePaths, resolve_home

F = TypeVar("F", bound=Callable[..., Any])

HomeOption = typer.Option(
    None, "--home", envvar="MYCELIUM_HOME", help="Node data directory (default ~/.mycelium)."
)
JsonOption = typer.Option(False, "--json", help="Print exactly one JSON object on stdout.")


def node_paths(home: str | None) -> NodePaths:
    return NodePaths(resolve_home(home))


def emit(data: dict[str, Any], as_json: bool, human: str | None = None) -> None:
    """Print ``data`` as one JSON object, or ``human`` (default: key: value lines)."""
    if as_json:
        sys.stdout.write(json.dumps(data, sort_keys=True) + "\n")
        return
    if human is None:
        human = "\n".join(f"{k}: {v}" for k, v in data.items())
    typer.echo(human)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, non-zero exit."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def user_errors(func: F) -> F:
    """Turn MyceliumError (and friends) into a one-line error instead of a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MyceliumError as exc:
            fail(str(exc))
        except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
            fail(str(exc))
        except sqlite3.DatabaseError as exc:
            fail(_database_problem(exc))

    return wrapper  # type: ignore[return-value]


#: SQLite conditions a user can act on (the disk, permissions, another process).
_USER_FACING = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_FULL", "SQLITE_IOERR",
                "SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")


def _database_problem(exc: sqlite3.DatabaseError) -> str:
    """One line for a store SQLite cannot use; a damaged file gets the way out. Anything
    that looks like our own bug (bad SQL, misuse) is re-raised with its traceback."""
    from mycelium.store.repair import damaged_message, is_corruption

    if is_corruption(exc):
        return damaged_message("soil.db", exc)
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(_USER_FACING):
        return f"store: {exc}"
    raise exc


def passphrase(*, confirm: bool = False, env_var: str = "MYCELIUM_PASSPHRASE",
               prompt: str = "Passphrase") -> str:
    """``$env_var`` for scripts (``MYCELIUM_PASSPHRASE``), else an interactive prompt."""
    env = os.environ.get(env_var)
    if env is not None:
        return env
    if not sys.stdin.isatty():
        fail(f"no passphrase: set {env_var} or run in a terminal")
    first = getpass.getpass(f"{prompt}: ")
    if confirm and getpass.getpass(f"Repeat {prompt.lower()}: ") != first:
        fail("passphrases do not match")
    return first

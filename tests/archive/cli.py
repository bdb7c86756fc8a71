"""Running ``mycelium`` commands in-process for the archive tests (CLI contract checks)."""

from __future__ import annotations

import json
from typing import Any

from typer.testing import CliRunner

from mycelium.cli import app

runner = CliRunner()
PASSPHRASE = "correct horse"


def run(*args: str, ok: bool = True) -> Any:
    """Run a command; parsed JSON with ``--json``; on ``ok=False`` the one error line."""
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
        return json.loads(result.stdout) if "--json" in args else result.stdout
    assert result.exit_code != 0, result.stdout
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]

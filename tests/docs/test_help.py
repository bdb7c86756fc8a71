"""Every command's ``--help`` renders as written: rich (which typer uses for help) turns
``:name:`` into an emoji, so ``did:key:z6Mk…`` became ``did🔑z6Mk…`` in three help
texts. Walks the whole command tree in-process."""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.testing import CliRunner

from mycelium.cli import app

#: Emoji and pictographs rich may substitute for ``:name:`` codes.
EMOJI = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")


def _commands(command: Any, path: list[str]) -> list[list[str]]:
    out = [path]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        out += _commands(sub, [*path, name])
    return out


def test_every_help_renders_without_emoji_substitution() -> None:
    runner = CliRunner()
    paths = _commands(typer.main.get_command(app), [])
    assert len(paths) > 30  # the whole tree, not just the top
    for path in paths:
        result = runner.invoke(app, [*path, "--help"], terminal_width=200)
        assert result.exit_code == 0, (path, result.output)
        bad = [line.strip() for line in result.output.splitlines() if EMOJI.search(line)]
        assert not bad, (path, bad)

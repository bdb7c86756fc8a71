"""Where a node keeps its files inside its home directory (``--home`` / ``MYCELIUM_HOME``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = "~/.mycelium"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """``--home`` beats ``MYCELIUM_HOME`` beats ``~/.mycelium``."""
    raw = home if home is not None else os.environ.get("MYCELIUM_HOME", DEFAULT_HOME)
    return Path(raw).expanduser().resolve()


@dataclass(frozen=True)
class NodePaths:
    """All well-known files of one node home."""

    home: Path

    @property
    def keystore(self) -> Path:
        return self.home / "keystore.json"

    @property
    def soil(self) -> Path:
        return self.home / "soil.db"

    @property
    def api(self) -> Path:
        """Control API endpoint and token of a running node (mode 0600)."""
        return self.home / "api.json"

    @property
    def guardians(self) -> Path:
        return self.home / "guardians"

    @property
    def recovery(self) -> Path:
        return self.home / "recovery"

    def ensure(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True, mode=0o700)

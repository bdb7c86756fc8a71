"""Shared helpers for identity tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VECTORS = Path(__file__).resolve().parents[2] / "protocols" / "vectors"


def load_vectors(name: str) -> Any:
    """Parse ``protocols/vectors/<name>``."""
    return json.loads((VECTORS / name).read_text())

"""Error hierarchy shared by every layer.

Every error that bad input can cause derives from :class:`MyceliumError` and carries a
short machine-readable ``reason`` (used as a metric label and in logs) plus a human
message. Callers at the edges (network adapters, CLI) catch ``MyceliumError`` and never
let it crash the node.
"""

from __future__ import annotations


class MyceliumError(Exception):
    """Base class: a precise, expected failure caused by input or state, not a bug."""

    reason: str = "error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class CodecError(MyceliumError):
    """Bytes that are not valid canonical CBOR, or exceed a size limit."""

    reason = "bad_cbor"


class LimitExceeded(CodecError):
    """An explicit size/count limit was exceeded."""

    reason = "oversized"

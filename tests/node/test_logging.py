"""`mycelium run` logging: upstream noise for failures we already report is dropped."""

from __future__ import annotations

import inspect
import logging

import libp2p.transport.tcp.tcp as upstream_tcp
import pytest

from mycelium.node.daemon import configure_logging


def test_upstream_dial_error_line_is_dropped(caplog: pytest.LogCaptureFixture) -> None:
    configure_logging()
    tcp_log = logging.getLogger(upstream_tcp.__name__)
    with caplog.at_level(logging.DEBUG):
        tcp_log.error("Failed to open TCP stream: %s", "[Errno 111] Connect call failed")
        tcp_log.error("Unexpected error opening TCP stream: %s", "boom")
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["Unexpected error opening TCP stream: boom"]


def test_the_filtered_message_still_exists_upstream() -> None:
    """If py-libp2p rewords it, the filter silently stops working: notice here."""
    assert 'logger.error("Failed to open TCP stream: %s", error)' in inspect.getsource(upstream_tcp)

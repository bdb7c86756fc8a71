"""Tests for mycelium.identity and the identity crypto helpers."""

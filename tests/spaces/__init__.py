"""Spaces tests. Installs identity stand-ins until the identity helper's modules land."""

from . import _shim  # noqa: F401

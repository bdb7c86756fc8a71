"""Load ``mycelium._accel`` from the file named by ``MYCELIUM_ACCEL_SO`` (a sanitizer or
deliberately broken build, scripts/sanitize.py) before anything asks for the compiled
path; a pytest plugin (``-p tests.accel.preload``) and a function for scripts.

Nothing in the package reads that variable: only processes that import this module
run another build than the one installed."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
from typing import Any

_VARIABLE = "MYCELIUM_ACCEL_SO"


def install() -> str | None:
    """Put the build named by MYCELIUM_ACCEL_SO in ``sys.modules``; its path, or None if
    the variable is unset. Fails loudly if it cannot be loaded or configured."""
    path = os.environ.get(_VARIABLE)
    if not path:
        return None
    loader = importlib.machinery.ExtensionFileLoader("mycelium._accel", path)
    spec = importlib.util.spec_from_file_location("mycelium._accel", path, loader=loader)
    if spec is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    sys.modules["mycelium._accel"] = module
    import mycelium
    from mycelium import accel

    mycelium._accel = module  # type: ignore[attr-defined]
    if not accel.active():
        raise RuntimeError(f"{path}: compiled path off: {accel.disabled_reason}")
    return path


_PATH = install()


def pytest_report_header(config: Any) -> str:
    return f"mycelium._accel: {_PATH or 'the installed build'}"

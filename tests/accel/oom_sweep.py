"""Make each allocation of each compiled function fail in turn (``_testcapi.set_nomemory``).

Run as a script in a child process (a crash must fail the test, not kill pytest). For
every function of ``accel._NAMES`` and every k below a bound, allocation number k of one
call fails; the call must then return what it returns normally, None (defer to Python),
or raise MemoryError: never crash, never return anything else. Prints one JSON object:
``{name: {"calls": n, "deferred": n, "memory_error": n, "answered": n}}``; exits non-zero
with a message on the first wrong outcome.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import _testcapi

from mycelium import accel
from tests.accel import preload  # noqa: F401  (MYCELIUM_ACCEL_SO: another build of _accel)
from tests.accel.samples import ARGS

#: Allocations per call stay well below this for the sample arguments (checked: the
#: last call of each sweep must run with no failure injected and answer normally).
SWEEP = 600


def _sweep(name: str) -> dict[str, int]:
    factory, pure = ARGS[name]
    function = getattr(accel, name)
    expected = function(*factory())
    counts = {"calls": 0, "deferred": 0, "memory_error": 0, "answered": 0}
    outcome: Any = None
    for k in range(SWEEP):
        args = factory()
        _testcapi.set_nomemory(k, k + 1)
        try:
            outcome = function(*args)
        except MemoryError:
            outcome = MemoryError
        finally:
            _testcapi.remove_mem_hooks()
        counts["calls"] += 1
        if outcome is MemoryError:
            counts["memory_error"] += 1
        elif outcome is None and expected is not None:
            counts["deferred"] += 1
        elif pure and outcome != expected:
            sys.exit(f"{name}: allocation {k} failing gave {outcome!r}, not {expected!r}")
        elif not pure and type(outcome) is not type(expected):
            sys.exit(f"{name}: allocation {k} failing gave a {type(outcome).__name__}")
        else:
            counts["answered"] += 1
    if outcome is MemoryError or (pure and outcome != expected):
        sys.exit(f"{name}: still failing after {SWEEP} allocations: raise SWEEP")
    return counts


def main() -> None:
    if not accel.active():
        sys.exit(f"compiled path off: {accel.disabled_reason}")
    names = sys.argv[1:] or list(accel._NAMES)
    print(json.dumps({name: _sweep(name) for name in names}))


if __name__ == "__main__":
    main()

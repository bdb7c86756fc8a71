"""The pure-Python reference path is itself tested, not only compared (issue 17 §4).

Every other test runs with the compiled path on, so the Python twins run only where the
C code defers. This runs the core directories once more in a child pytest with
``MYCELIUM_NO_ACCEL=1``, so every ingest, merge and codec test exercises the Python
reference end to end. Left out, to stay lean: tests/codec (no code there has a compiled
twin, so the run would repeat the main one), tests that start ``mycelium`` CLI processes
(they test argument handling and output, which the compiled path does not touch) and the
tests marked slow. The compiled-only tests skip there with the reason
"disabled by MYCELIUM_NO_ACCEL", which is how this test knows the child really ran on
the Python path.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
#: The core directories whose code reaches a compiled twin (mycelium/codec has none).
CORE = ["tests/crdt", "tests/log", "tests/store", "tests/sync", "tests/spaces"]
CLI_PROCESS_TESTS = ["tests/spaces/test_cli.py", "tests/store/test_cli_docs.py"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_core_directories_pass_on_the_python_path() -> None:
    # the local example counts (tests/budget.py, the "dev" profile): the main run already
    # runs these directories with CI's counts; this run is about the other code path
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "MYCELIUM_ACCEL_SO")}
    env.update({"MYCELIUM_NO_ACCEL": "1", "HYPOTHESIS_PROFILE": "dev", "PYTHONFAULTHANDLER": "1"})
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow",
           "-rfEs", *(f"--ignore={p}" for p in CLI_PROCESS_TESTS), *CORE]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=580)
    out = done.stdout + done.stderr
    failures = "\n".join(line for line in out.splitlines()
                         if line.startswith(("FAILED", "ERROR")))
    tail = f"{failures}\n...\n{out[-4000:]}"
    assert done.returncode == 0, tail
    assert "disabled by MYCELIUM_NO_ACCEL" in done.stdout, tail  # it ran without the C path
    assert " passed" in done.stdout.splitlines()[-1], tail

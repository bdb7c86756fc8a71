"""The sanitizer job, in the default suite so CI runs it (docs/accel.md, "Sanitizer job").

scripts/sanitize.py builds the extension with AddressSanitizer, UBSan and assertions on,
then runs the equivalence tests, the out-of-memory sweep and the differential fuzzer
against that build. The fuzzer's seed is random and printed (replay: ``--seed``); its
time comes from ``MYCELIUM_SANITIZE_FUZZ_SECONDS`` (default 45 s: the whole job takes
about two minutes on two cores). Outside CI the test skips when the machine has no
sanitizer runtime; in CI that is a failure.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import sanitize  # noqa: E402

from tests.budget import CI  # noqa: E402


def _runnable() -> str | None:
    """Why the job cannot run here, or None."""
    if os.environ.get("MYCELIUM_NO_ACCEL"):
        return "MYCELIUM_NO_ACCEL=1"
    try:
        sanitize.asan_runtime(sanitize.compiler())
    except sanitize.SanitizeError as exc:
        return str(exc)
    return None


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_sanitizer_job_passes() -> None:
    why = _runnable()
    if why is not None:
        if CI and not os.environ.get("MYCELIUM_NO_ACCEL"):
            pytest.fail(f"the sanitizer job cannot run in CI: {why}")
        pytest.skip(f"sanitizer job not runnable here: {why}")
    seconds = os.environ.get("MYCELIUM_SANITIZE_FUZZ_SECONDS", "45")
    done = subprocess.run([sys.executable, "scripts/sanitize.py", "--fuzz-seconds", seconds],
                          cwd=ROOT, capture_output=True, text=True, timeout=880)
    out = done.stdout + done.stderr
    print(out[-4000:])  # seed and step timings in the test's captured output
    assert done.returncode == 0, out[-12_000:]
    assert "sanitize: passed" in out

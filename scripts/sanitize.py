"""The sanitizer job of the compiled ingest path (docs/accel.md, "Sanitizer job").

Builds ``mycelium/_accel.c`` (or ``--source``, e.g. a deliberately broken copy) with
AddressSanitizer, UndefinedBehaviorSanitizer and assertions on into a temporary
directory, then runs against that build, in child processes:

1. the compiled-vs-Python equivalence tests (``EQUIVALENCE_TESTS``);
2. the out-of-memory sweep (tests/accel/oom_sweep.py);
3. the differential fuzzer for ``--fuzz-seconds`` (tests/accel/differential.py), seeded
   (``--seed``, random by default and always printed).

Exit status 0 only if every step passes with no sanitizer report. Needs gcc (or cc)
with libasan/libubsan and the Python headers; run from the repository root::

    .venv/bin/python scripts/sanitize.py --fuzz-seconds 60
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EQUIVALENCE_TESTS = [
    "tests/log/test_envelope_decode.py", "tests/log/test_validate.py",
    "tests/crdt/test_open_payload.py", "tests/crdt/test_lww_compiled.py",
    "tests/crdt/test_state_codec_compiled.py", "tests/store/test_accel_equivalence.py",
    "tests/accel/test_hardening.py", "tests/accel/test_inner_forgery.py",
]
FLAGS = ["-shared", "-fPIC", "-std=c11", "-O1", "-g", "-fno-omit-frame-pointer",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-UNDEBUG",
         "-Wall", "-Wextra"]
#: What the sanitizers print; any of these in a child's output fails the job.
REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "Assertion `", "Fatal Python error")


class SanitizeError(Exception):
    """The sanitizer job cannot run here (no compiler, no sanitizer runtime)."""


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        raise SanitizeError("no C compiler (gcc or cc) found")
    return cc


def asan_runtime(cc: str) -> str:
    """The libasan that must be preloaded into a Python that was not built with ASan."""
    out = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True,
                         timeout=30).stdout.strip()
    if not out or not os.path.isabs(out) or not os.path.exists(out):
        raise SanitizeError(f"libasan.so not found by {cc} (install the gcc sanitizer runtime)")
    return os.path.realpath(out)


def build(source: Path, out_dir: Path, cc: str) -> Path:
    """Compile ``source`` with the sanitizers into ``out_dir``; the module's path."""
    include = sysconfig.get_paths()["include"]
    target = out_dir / ("_accel" + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))
    cmd = [cc, *FLAGS, f"-I{include}", str(source), "-o", str(target), "-lm"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise SanitizeError(f"build failed:\n{done.stderr}")
    return target


def child_env(module: Path, libasan: str) -> dict[str, str]:
    # the local example counts (tests/budget.py): under the sanitizers every example costs
    # several times more, and the fuzzer is where this job spends its time
    env = {k: v for k, v in os.environ.items() if k not in ("MYCELIUM_NO_ACCEL", "CI")}
    env.update({
        "HYPOTHESIS_PROFILE": "dev",
        "MYCELIUM_ACCEL_SO": str(module),
        "PYTHONPATH": str(ROOT),
        "LD_PRELOAD": libasan,
        # Python itself leaks at exit by design; pymalloc would hide small overflows
        "ASAN_OPTIONS": "detect_leaks=0:halt_on_error=1:detect_stack_use_after_return=0",
        "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
        "PYTHONMALLOC": "malloc",
        # pycryptodome dlopens with RTLD_DEEPBIND, which ASan refuses
        "PYCRYPTODOME_DISABLE_DEEPBIND": "1",
        "PYTHONFAULTHANDLER": "1",
    })
    return env


def step(name: str, cmd: list[str], env: dict[str, str], timeout: float) -> bool:
    """Run one child; True if it passed with no sanitizer report."""
    started = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout)
        out, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:  # its output may be bytes despite text=True
        parts = [p.decode(errors="replace") if isinstance(p, bytes) else p or ""
                 for p in (exc.stdout, exc.stderr)]
        out = f"{''.join(parts)}\n(timed out after {timeout:.0f} s)"
        code = -1
    reports = [r for r in REPORTS if r in out]
    ok = code == 0 and not reports
    took = time.monotonic() - started
    print(f"sanitize: {name}: {'ok' if ok else 'FAILED'} in {took:.1f} s", flush=True)
    if not ok:
        print(out[-12_000:], flush=True)
        if reports:
            print(f"sanitize: {name}: sanitizer or assertion report: {reports}", flush=True)
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build _accel with ASan+UBSan and run the "
                                                 "equivalence tests and the differential fuzzer.")
    parser.add_argument("--source", type=Path, default=ROOT / "mycelium" / "_accel.c")
    parser.add_argument("--fuzz-seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--skip-tests", action="store_true",
                        help="only the out-of-memory sweep and the fuzzer")
    parser.add_argument("--pytest-args", default="",
                        help="extra arguments for the equivalence tests (one string)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    print(f"sanitize: seed {seed} (replay: --seed {seed})", flush=True)
    try:
        cc = compiler()
        libasan = asan_runtime(cc)
        with tempfile.TemporaryDirectory(prefix="mycelium-sanitize-") as tmp:
            module = build(args.source.resolve(), Path(tmp), cc)
            env = child_env(module, libasan)
            python = sys.executable
            ok = True
            if not args.skip_tests:
                ok &= step("equivalence tests", [
                    python, "-m", "pytest", "-p", "tests.accel.preload", "-p", "no:cacheprovider",
                    "-q", "-x", "-m", "not slow", *args.pytest_args.split(),
                    *EQUIVALENCE_TESTS], env, timeout=600)
            ok &= step("out-of-memory sweep", [python, "tests/accel/oom_sweep.py"], env,
                       timeout=300)
            ok &= step(f"differential fuzzer ({args.fuzz_seconds:.0f} s, seed {seed})", [
                python, "tests/accel/differential.py", "--seconds", str(args.fuzz_seconds),
                "--seed", str(seed)], env, timeout=args.fuzz_seconds + 300)
    except SanitizeError as exc:
        print(f"sanitize: cannot run: {exc}", file=sys.stderr)
        return 2
    print(f"sanitize: {'passed' if ok else 'FAILED'} (seed {seed})", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

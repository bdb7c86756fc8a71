# Mirrors the README's two commands, plus developer recipes.

# Set up .venv and system packages (idempotent)
setup:
    ./setup.sh

# Run a node with embedded defaults (README command 1)
run *ARGS: setup
    .venv/bin/mycelium run {{ARGS}}

# Run the whole test suite (README command 2; what CI runs)
test *ARGS: setup
    .venv/bin/pytest {{ARGS}}

# Quick local loop: skip slow and root-only tests
test-fast *ARGS: setup
    .venv/bin/pytest -m "not slow and not root" {{ARGS}}

# ruff + mypy on the core
lint: setup
    .venv/bin/ruff check mycelium simnet tests bench
    .venv/bin/mypy mycelium simnet

# Benchmarks: writes bench-report/report.json and report.md
bench *ARGS: setup
    .venv/bin/python -m bench {{ARGS}}

# Two local nodes that find each other (demo)
demo: setup
    ./scripts/demo.sh

# The compiled ingest path under ASan+UBSan: equivalence tests, OOM sweep, seeded fuzzer
sanitize *ARGS: setup
    .venv/bin/python scripts/sanitize.py {{ARGS}}

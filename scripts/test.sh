#!/usr/bin/env bash
# Sets up .venv (Python >= 3.11) and runs the checks: ruff lint, ruff format, mypy, pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k model`; TEST_WORKERS sets how many
# processes run the tests (2 by default, 0 for pytest's own one).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
export PATH="$PWD/.venv/bin:$PATH"
echo "== ruff check"; ruff check .
echo "== ruff format --check"; ruff format --check .
echo "== mypy"; mypy
# Two processes, one test file at a time each (a file's fixtures are built once): the suite
# keeps both cores busy where one waits on servers and subprocesses. TEST_WORKERS=0: one process.
echo "== pytest"; pytest -n "${TEST_WORKERS:-2}" --dist loadfile "$@"

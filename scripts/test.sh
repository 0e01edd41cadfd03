#!/usr/bin/env bash
# The whole test suite: installs what it needs, then lint, types and pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k contract).
# Any failing step fails the script (one command per line: `set -e` ignores
# failures inside `a && b` lists).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
VENV="$ROOT/.venv/bin"
echo "== ruff"
"$VENV/ruff" check .
"$VENV/ruff" format --check .
echo "== mypy"
"$VENV/mypy"
echo "== pytest"
"$VENV/python" -m pytest "$@"

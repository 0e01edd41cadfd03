#!/usr/bin/env bash
# The demo: installs what it needs, then runs the whole pipeline on simulated meters.
# Extra arguments go to `electrocloud demo` (e.g. scripts/demo.sh --days 2 --meters 5).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/bootstrap.sh
exec "$ROOT/.venv/bin/electrocloud" demo "$@"

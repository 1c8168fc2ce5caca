#!/usr/bin/env bash
# The test command: install system packages and the project, lint, type-check, run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/system-deps.sh
bash scripts/setup.sh dev
bash scripts/lint.sh
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"

#!/usr/bin/env bash
# Create .venv and install vidmem (with the dev extra when $1 == dev). Idempotent and quiet.
# torch is pinned to the CPU build 2.13.0; GPU users: see README ("GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=".venv/.vidmem-installed-$(sha1sum pyproject.toml | cut -c1-12)-${1:-base}"
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  if [ "${1:-}" = "dev" ]; then
    .venv/bin/python -m pip install -q -e ".[dev]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
fi

#!/usr/bin/env bash
# Create .venv and install vidmem (with the dev extra when $1 == dev). Idempotent: quiet once set up;
# otherwise one line on stderr before each slow step.
# torch is pinned to the CPU build 2.13.0; GPU users: see README ("GPU").
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
say() { echo "vidmem: $*" >&2; }
if [ ! -x .venv/bin/python ]; then
  say "first run: creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
stamp=".venv/.vidmem-installed-$(sha1sum pyproject.toml | cut -c1-12)-${1:-base}"
if [ ! -f "$stamp" ]; then
  if ls .venv/.vidmem-installed-* >/dev/null 2>&1; then
    say "pyproject.toml changed (or a new extra): updating .venv"
  fi
  say "installing dependencies into .venv: torch 2.13.0 (CPU), transformers, PyAV, FastAPI, Celery... (a few minutes, once)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==2.13.0"
  if [ "${1:-}" = "dev" ]; then
    .venv/bin/python -m pip install -q -e ".[dev]"
  else
    .venv/bin/python -m pip install -q -e .
  fi
  touch "$stamp"
  say ".venv is ready"
fi

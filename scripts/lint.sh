#!/usr/bin/env bash
# ruff (lint + format check) and mypy: the same command locally and in CI.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

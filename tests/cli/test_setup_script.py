"""scripts/setup.sh says what it does on the first run (minutes of pip otherwise look like a hang), and
nothing once .venv is set up. A stand-in Python records the pip calls instead of installing anything."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.conftest import REPO

FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for python3 and for .venv/bin/python: makes a venv by copying itself, logs everything else.
if [ "$1" = "--version" ]; then echo "Python 3.11.0"; exit 0; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then mkdir -p "$3/bin"; cp "$0" "$3/bin/python"; exit 0; fi
echo "$*" >> "$(dirname "$0")/../../calls.log"
"""


def setup(root: Path) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHON": str(root / "fake-python")}
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_the_first_run_says_what_it_does_and_later_runs_are_silent(tmp_path: Path) -> None:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)

    first = setup(tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stderr.splitlines()
    assert lines[0].startswith("vidmem: first run: creating .venv"), lines
    assert lines[1].startswith("vidmem: installing dependencies") and "a few minutes" in lines[1], lines
    assert lines[-1] == "vidmem: .venv is ready"
    assert "pip install -q torch==2.13.0" in (tmp_path / "calls.log").read_text()

    again = setup(tmp_path)
    assert again.returncode == 0 and again.stderr == "" and again.stdout == ""

    with (tmp_path / "pyproject.toml").open("a") as f:
        f.write("\n# changed\n")
    changed = setup(tmp_path)
    assert changed.stderr.splitlines()[0] == "vidmem: pyproject.toml changed (or a new extra): updating .venv"

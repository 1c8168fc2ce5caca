"""What a newcomer meets first, run as a user would (a fresh ``vidmem`` process, a fresh HOME, offline):
a wrong model stops at start-up in one line, a missing file is called missing, credentials never reach
the terminal, the global options work before and after the command, ``--version`` and ``--help`` say what
they should, and ``ask --demo`` works from the repository alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import huggingface_hub.constants
import pytest
import redis

from bench.redis_server import RedisServer
from model.families import model_problem
from model.names import PRESET_NAMES
from stream.demo import demo_path
from tests.conftest import REPO
from tests.stream.clips import make_clip
from tests.stream.servers import serve_directory
from vidmem.cli import build_parser

SECRET = "s3cr3tpassw0rd"


def vidmem(args: list[str], home: Path, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    full = os.environ | {"HOME": str(home), "HF_HUB_OFFLINE": "1", **env}
    full.pop("VIDMEM_REDIS_URL", None)
    full.pop("HF_HOME", None)
    full.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "vidmem.cli", *args], cwd=REPO, env=full,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--model", "nosuchmodel", "--port", "1"],
        [
            "--model",
            "acme/no-such-model",
            "worker",
            "--redis-url",
            "redis://127.0.0.1:1/0",
            "--queues=encode",
        ],
        ["ask", "pyproject.toml", "What happens?", "--model", "./no/such/checkpoint"],  # before the probe
    ],
    ids=["serve", "worker", "ask"],
)
def test_a_wrong_model_stops_the_process_at_start_with_one_line(args: list[str], tmp_path: Path) -> None:
    """Today: serve starts and fails at the first upload (8 tracebacks); the worker starts too."""
    t0 = time.monotonic()
    out = vidmem(args, tmp_path, timeout=60)
    took = time.monotonic() - t0
    assert out.returncode == 2, out.stderr[-2000:]
    [line] = out.stderr.splitlines()
    assert line.startswith("vidmem: model ") and "Traceback" not in out.stderr
    assert all(p in line for p in PRESET_NAMES) and "hf download" in line
    assert took < 20, f"{took:.1f} s to refuse a model name"


def test_a_model_name_is_a_preset_a_checkpoint_or_a_cached_hub_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checked without the network: the hub id only counts when the local cache has its config.json."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(hub))
    snapshot = hub / "models--acme--cam-vlm" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text('{"model_type": "qwen3_vl"}')
    (hub / "models--acme--cam-vlm" / "refs").mkdir()
    (hub / "models--acme--cam-vlm" / "refs" / "main").write_text("0123abcd")
    checkpoint = tmp_path / "ckpt"
    checkpoint.mkdir()
    assert model_problem("tiny") is None and model_problem("random-7b") is None
    assert model_problem("acme/cam-vlm") is None
    assert "hf download acme/other" in (model_problem("acme/other") or "")
    assert "without a config.json" in (model_problem(str(checkpoint)) or "")
    (checkpoint / "config.json").write_text('{"model_type": "bert"}')
    assert "'bert' is not served" in (model_problem(str(checkpoint)) or "")
    (checkpoint / "config.json").write_text('{"model_type": "llava_onevision"}')
    assert model_problem(str(checkpoint)) is None
    assert model_problem("./no/such/dir") is not None  # not a hub id either


@pytest.mark.slow
def test_ask_says_that_a_missing_file_is_missing(tmp_path: Path) -> None:
    """Today: `forbidden_url: local paths are not accepted`."""
    out = vidmem(["ask", "./missing.mp4", "What happens?", "--model", "tiny"], tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip() == "vidmem: no such file: ./missing.mp4"
    out = vidmem(["ask", "concat:/etc/passwd|/etc/hosts", "?", "--model", "tiny"], tmp_path)
    assert out.returncode == 2 and "forbidden_url" in out.stderr  # URL syntax is still checked


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        ["serve", "--redis-url", f"redis://:{SECRET}@127.0.0.1:1/0", "--bogus"],
        ["--redis-url", f"redis://:{SECRET}@127.0.0.1:1/0", "serve", "--bogus"],
        ["ask", "./clip.mp4", "q", "--redis-url=redis://u:" + SECRET + "@10.0.0.5/0"],
        ["keys", "list", "--bogus", f"redis://:{SECRET}@127.0.0.1:1/0"],
        ["serve", "--port", f"redis://:{SECRET}@127.0.0.1:1/0"],
        ["worker", "--queues", f"redis://:{SECRET}@127.0.0.1:1/0", "--redis-url", "redis://127.0.0.1:1/0"],
    ],
)
def test_credentials_never_reach_the_terminal(args: list[str], tmp_path: Path) -> None:
    """Today argparse echoes a refused --redis-url (or any refused value) with its password."""
    out = vidmem(args, tmp_path, timeout=60)
    assert out.returncode == 2 and out.stderr
    assert SECRET not in out.stdout + out.stderr, out.stderr


@pytest.mark.integration
def test_global_options_work_before_and_after_the_command(
    redis_server: RedisServer, real_redis: redis.Redis, tmp_path: Path
) -> None:
    """Today only `vidmem keys --redis-url URL list` works; the other spellings are argparse errors."""
    url = redis_server.url
    places = (["--redis-url", url, "keys", "list"], ["keys", "--redis-url", url, "list"],
              ["keys", "list", "--redis-url", url])  # fmt: skip
    for args in places:
        out = vidmem([*args, "--json"], tmp_path, timeout=60)
        assert out.returncode == 0, (args, out.stderr[-1000:])
        assert json.loads(out.stdout) == []
    parse = build_parser().parse_args
    assert parse(["--model", "tiny", "serve"]).model == "tiny"
    assert parse(["serve", "--model", "tiny"]).model == "tiny"
    assert parse(["--model", "a", "serve", "--model", "b"]).model == "b"  # the later one wins
    assert parse(["serve"]).model is None  # unset: VIDMEM_MODEL or the Settings default


@pytest.mark.slow
def test_version_and_help_with_every_default(tmp_path: Path) -> None:
    out = vidmem(["--version"], tmp_path, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"vidmem {version('vidmem')}"
    out = vidmem(["serve", "--help"], tmp_path, timeout=60)
    flat = " ".join(out.stdout.split())
    assert (
        "Default: 8000 (VIDMEM_PORT)" in flat
        and "Default: the model's (model.families) (VIDMEM_BUDGET)" in flat
    ), out.stdout
    assert "Default: none (VIDMEM_REDIS_URL)" in flat


def test_every_option_has_a_help_text_and_says_its_default() -> None:
    import argparse

    def parsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        subs = [a for a in p._actions if isinstance(a, argparse._SubParsersAction)]
        return [p, *(q for s in subs for c in s.choices.values() for q in parsers(c))]

    missing = []
    for p in parsers(build_parser()):
        for a in p._actions:
            if isinstance(a, argparse._HelpAction | argparse._VersionAction | argparse._SubParsersAction):
                continue
            flag = a.nargs == 0  # --json, --demo, --keyframes: off unless given
            positional_or_required = not a.option_strings or a.required
            if not a.help or not (flag or positional_or_required or "Default:" in a.help):
                missing.append(f"{p.prog} {a.option_strings or a.dest}")
    assert missing == []


@pytest.mark.slow
def test_ask_demo_works_from_the_repository_alone(tmp_path: Path) -> None:
    """Today there is no --demo, and the README's command reads a clip from ../shared/."""
    out = vidmem(["ask", "--demo", "What happens?", "--model", "tiny", "--budget", "300",
                  "--max-new-tokens", "8", "--json"], tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout)
    assert res["frames"] == 30 and 0 < res["tokens_used"] <= 300 and res["budget"] == 300
    assert isinstance(res["answer"], str)
    assert demo_path(tmp_path / ".cache" / "vidmem").is_file()
    assert "making the demo video" in out.stderr


@pytest.mark.slow
def test_ask_reads_the_users_own_local_url(tmp_path: Path, model_cache: Path) -> None:
    """The one-shot ask runs for its user on the user's machine: a loopback URL is read without any
    allowed network (today: forbidden_url ... loopback). The scheme allow-list still holds."""
    (tmp_path / "www").mkdir()
    make_clip(tmp_path / "www" / "c.mp4", seconds=3, fps=10, size=(96, 64))
    env = os.environ.copy()
    env.pop("VIDMEM_URL_ALLOWED_NETWORKS", None)  # the session allows loopback; a user's machine does not
    with serve_directory(tmp_path / "www") as web:
        out = subprocess.run(
            [sys.executable, "-m", "vidmem.cli", "ask", web.url("c.mp4"), "What happens?", "--model", "tiny",
             "--max-new-tokens", "4", "--json"],
            cwd=REPO, env=env | {"HOME": str(tmp_path), "HF_HUB_OFFLINE": "1",
                                 "VIDMEM_MODEL_CACHE": str(model_cache)},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout)["frames"] == 3


@pytest.mark.slow
def test_ask_shows_each_stage_with_honest_counts(tmp_path: Path) -> None:
    """Today: `0/0 frames` while sampling, and the first encode waits for the model with `0/N`."""
    clip = make_clip(tmp_path / "c.mp4", seconds=6, fps=10, size=(96, 64))
    out = vidmem(["ask", str(clip), "What happens?", "--model", "tiny", "--max-new-tokens", "4"], tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stderr.splitlines()
    stages = [line.split(" ", 1)[0].rstrip(".:") for line in lines]
    assert stages[0] == "loading" and "ready in" in lines[1], lines
    assert stages.index("loading") < stages.index("encoding") < stages.index("answering"), lines
    assert lines[-1] == "answering over 6 frames..."
    assert not any("0/0" in line for line in lines), lines
    assert lines[-2].endswith(" 6/6 frames"), lines


def test_the_model_check_of_serve_does_not_import_torch(tmp_path: Path) -> None:
    """`vidmem serve` is an API process: it checks the model name without torch or transformers."""
    code = (
        "import sys; from vidmem.cli import _model_ok; from core.settings import Settings\n"
        "assert _model_ok(Settings(model='tiny')) and not _model_ok(Settings(model='acme/nothing'))\n"
        "assert not {'torch', 'transformers'} & set(sys.modules), 'the model check imported torch'\n"
    )
    env = os.environ | {"HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]

"""``python -m bench <name> [options]``: run one benchmark (``memory``)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="python -m bench", description="vidmem benchmarks")
    sub = parser.add_subparsers(dest="name", required=True)
    from bench import memory

    help_ = "bounded memory: answer time, bytes, ingest, sampling"
    memory.add_arguments(sub.add_parser("memory", help=help_))
    args = parser.parse_args(argv)
    if args.name == "memory":
        return memory.main(args)
    parser.error(f"unknown benchmark {args.name}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

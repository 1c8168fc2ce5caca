"""``python -m bench <name> [options]``: run one benchmark (``memory``, ``live``, ``soak``, ``webrtc``)."""

from __future__ import annotations

import argparse
import os
import sys


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = argparse.ArgumentParser(prog="python -m bench", description="vidmem benchmarks")
    sub = parser.add_subparsers(dest="name", required=True)
    from bench import live, memory, soak, webrtc

    help_ = "bounded memory: answer time, bytes, ingest, sampling"
    memory.add_arguments(sub.add_parser("memory", help=help_))
    live.add_arguments(sub.add_parser("live", help="concurrent live streams and capture->queryable latency"))
    soak.add_arguments(sub.add_parser("soak", help="one RTSP camera for a long time, forced disconnects"))
    webrtc.add_arguments(sub.add_parser("webrtc", help="WebRTC frame->memory latency from a real browser"))
    args = parser.parse_args(argv)
    if args.name == "memory":
        return memory.main(args)
    if args.name == "live":
        return live.main(args)
    if args.name == "soak":
        return soak.main(args)
    if args.name == "webrtc":
        return webrtc.main(args)
    parser.error(f"unknown benchmark {args.name}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

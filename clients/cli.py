"""The `streamer` program: the daemon (`serve`) and the client commands (prompt, status, record, timeline, watch)."""
from __future__ import annotations

import argparse
import sys

from clients.commands import add_client_commands
from streamer.cli import add_serve


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="streamer", description="Endless video streamer (DualParal on Wan)")
    sub = ap.add_subparsers(dest="command", required=True)
    add_serve(sub)
    add_client_commands(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

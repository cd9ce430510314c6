"""`streamer serve`: the daemon's command line. The options are pipeline/settings.py's tree; the `streamer`
program with the client commands as well is clients/cli.py (`python -m streamer` runs `serve` alone)."""
from __future__ import annotations

import argparse
import logging
import sys

from common.cache import use_bytecode_cache
from pipeline.config import ConfigError
from pipeline.settings import add_arguments, resolve


def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the streaming daemon (the toy-world model on CPU by default)")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)


def resolve_serve(args):
    """(EngineConfig, values) from parsed arguments: defaults < model < preset < --config < command line."""
    return resolve(vars(args))


def cmd_serve(args) -> int:
    use_bytecode_cache()  # before the daemon's own imports (the engine ranks do the same)
    try:
        cfg, values = resolve_serve(args)
    except ConfigError as e:
        print(f"streamer: error: {e}", file=sys.stderr)
        return 2
    _setup_logging(values["log_level"])
    if args.token:
        logging.getLogger("streamer").warning("--token is visible to every local user (ps); prefer --token-file or "
                                              "STREAMER_TOKEN")
    # the engine ranks start first: their imports and model load overlap the daemon's own imports and binds
    import zmq
    import zmq.asyncio

    from .engine_link import EngineLink

    try:
        engine = EngineLink(cfg, zmq.asyncio.Context(), on_message=None, attach=values["attach"])
    except zmq.ZMQError as e:
        logging.getLogger("streamer").error("cannot start: engine link %s: %s", values["attach"] or "ipc", e)
        return 2
    engine.start()
    from .daemon import serve
    from .options import ServeOptions

    return serve(cfg, ServeOptions.from_settings(values), engine)


def _setup_logging(level: str):
    handler: logging.Handler
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False)
        fmt = "%(message)s"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=level.upper(), format=fmt, handlers=[handler])


def build_parser(*more) -> argparse.ArgumentParser:
    """`serve`, and the subcommands that each of `more` (add(subparsers)) registers."""
    ap = argparse.ArgumentParser(prog="streamer", description="Endless video streamer (DualParal on Wan)")
    sub = ap.add_subparsers(dest="command", required=True)
    add_serve(sub)
    for add in more:
        add(sub)
    return ap


def main(argv=None, *more) -> int:
    args = build_parser(*more).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

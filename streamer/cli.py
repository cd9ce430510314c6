"""`streamer serve`: the daemon's command line, and `streamer convert` (a causal checkpoint as a model folder). The options are pipeline/settings.py's tree; the `streamer`
program with the client commands as well is clients/cli.py (`python -m streamer` runs `serve` alone)."""
from __future__ import annotations

import argparse
import logging
import sys

from common.cache import use_bytecode_cache
from pipeline.config import ConfigError
from pipeline.resolve import resolve
from pipeline.settings import add_arguments


def add_serve(sub) -> None:
    p = sub.add_parser("serve", help="run the streaming daemon (the toy-world model on CPU by default)")
    add_arguments(p)
    p.set_defaults(func=cmd_serve)


def add_convert(sub) -> None:
    p = sub.add_parser("convert", help="make a folder the causal engine serves from a causal checkpoint "
                       "(Self-Forcing, CausVid, LongLive: .pt or .safetensors in the original Wan key layout)")
    p.add_argument("checkpoint", help="the causal checkpoint (.pt with generator_ema/generator, or .safetensors)")
    p.add_argument("--base", required=True, help="the Wan2.1 diffusers folder it was distilled from (its text "
                   "encoder, tokenizer, VAE and transformer architecture are used)")
    p.add_argument("--out", required=True, help="the folder to write (serve it with `streamer serve --model OUT`)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[:SCALE]",
                   help="fuse this LoRA into the checkpoint first (LongLive ships as one); repeatable")
    p.set_defaults(func=cmd_convert)


def cmd_convert(args) -> int:
    try:
        from pipeline.causal.convert import convert

        out = convert(args.checkpoint, args.base, args.out, lora=args.lora)
    except ConfigError as e:
        print(f"streamer convert: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: serve it with `streamer serve --model {out}`")
    return 0


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
    add_convert(sub)
    for add in more:
        add(sub)
    return ap


def main(argv=None, *more) -> int:
    args = build_parser(*more).parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

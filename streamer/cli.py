"""`streamer` command line: `serve` (the daemon) and the client commands (prompt, status, record, timeline, watch)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

from pipeline.config import PRESETS, ConfigError, EngineConfig, check_options

# serve options that map onto EngineConfig fields (CLI name → field); values come from defaults < --config < CLI
ENGINE_OPTS = {
    "model": str, "height": int, "width": int, "steps": int, "guidance": float, "flow_shift": float,
    "block_frames": int, "context_frames": int, "fps": float, "seed": int, "prompt": str, "negative_prompt": str,
    "dtype": str, "device": str, "attention": str, "reuse_context": bool, "vae_dtype": str, "decode_chunk": int,
    "compile": bool, "quant": str,
}
DAEMON_OPTS = {"preset": str, "control": str, "publish": str, "http": str, "stdout": str, "keyframe_interval": float,
               "crf": int,
               "nvenc": bool, "gpus": int, "ranks": int, "split": str, "pace": bool, "log_level": str,
               "attach": str}
SERVE_DEFAULTS = {"model": "toyworld",
                  "control": "tcp://127.0.0.1:5555", "publish": "tcp://127.0.0.1:5556", "http": "127.0.0.1:8080",
                  "stdout": "", "keyframe_interval": 2.0, "crf": 23, "nvenc": False, "gpus": 0, "ranks": 1,
                  "pace": True, "log_level": "info", "device": "auto", "dtype": "auto", "attach": ""}
# browser viewers (WebRTC, streamer/web.py)
WEB_OPTS = {"ice_servers": str, "ice_username": str, "ice_credential": str, "ice_hosts": str, "token": str,
            "max_viewers": int}
DAEMON_OPTS.update(WEB_OPTS)
SERVE_DEFAULTS.update({"ice_servers": "", "ice_username": "", "ice_credential": "", "ice_hosts": "auto",
                       "token": "", "max_viewers": 32})


def _add_serve(sub):
    p = sub.add_parser("serve", help="run the streaming daemon (the toy-world model on CPU by default)")
    a = p.add_argument
    a("--config", metavar="FILE.toml", help="settings file; keys are these options with '_' for '-'")
    a("--model", help="'toyworld' (default: the small model trained on the toy world, shipped in the package), "
                     "'tiny' (random weights), a local diffusers Wan2.1/2.2 T2V folder, or a hub id; a folder's "
                     "streamer.json sets that model's defaults")
    a("--preset", help="a named set of engine settings, below --config and the options given: realtime (4 steps, "
                       "no CFG, flow shift 5, 16 fps, 8+8 frames, --reuse-context, --compile)")
    a("--gpus", type=int, help="number of GPUs (engine ranks, one process each)")
    a("--ranks", type=int, help="number of engine ranks on CPU (gloo), for testing")
    a("--split", help="transformer blocks per rank, e.g. 8,8,7,7 (default: balanced)")
    a("--attach", metavar="ADDR", help="do not start engine ranks: wait for a rank 0 started by torchrun to "
                                       "connect to this ZMQ address (e.g. tcp://0.0.0.0:5557)")
    a("--device", help="auto (default: cuda:LOCAL_RANK where CUDA devices are visible, else cpu), cpu, cuda "
                      "(= cuda:LOCAL_RANK), cuda:N (one rank only)")
    a("--dtype", help="auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")
    a("--height", type=int)
    a("--width", type=int)
    a("--steps", type=int, help="denoising steps S (= blocks in flight)")
    a("--guidance", type=float, help="classifier-free guidance scale (<= 1 disables CFG)")
    a("--flow-shift", type=float)
    a("--block-frames", type=int, help="latent frames per block B")
    a("--context-frames", type=int, help="context latent frames C on each side")
    a("--fps", type=float, help="output frame rate")
    a("--seed", type=int)
    a("--prompt")
    a("--negative-prompt")
    a("--attention", help="the transformer's attention kernel: cudnn, efficient, math, _native_flash (PyTorch's, "
                         "preferred with the others still enabled) or another diffusers backend (flash, sage, ...)")
    a("--reuse-context", action=argparse.BooleanOptionalAction, default=None,
      help="take the previous block's context frames as the keys/values its own forward cached one tick earlier "
           "instead of recomputing them (about half the FLOPs when context = block frames; approximate)")
    a("--compile", action=argparse.BooleanOptionalAction, default=None,
      help="torch.compile the transformer blocks (slower start; compiled graphs are cached across restarts)")
    a("--quant", choices=["fp8"], help="fp8 linear layers in the transformer blocks (GPUs with fp8 units)")
    a("--vae-dtype", help="VAE decoder dtype: auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16")
    a("--decode-chunk", type=int, help="latent frames per VAE decoder call (0 = auto: a whole block on GPU, 1 on CPU)")
    a("--control", help="control socket (ZMQ ROUTER), default tcp://127.0.0.1:5555")
    a("--publish", help="publish socket (ZMQ PUB), default tcp://127.0.0.1:5556")
    a("--http", help="HOST:PORT for the viewer, /stream.ts, /status, /metrics (default 127.0.0.1:8080; 'off')")
    a("--ice-servers", help="comma-separated STUN/TURN URLs for WebRTC (default: none, host candidates only)")
    a("--ice-username", help="TURN username")
    a("--ice-credential", help="TURN credential")
    a("--ice-hosts", help="addresses for WebRTC host candidates: 'auto' (loopback while --http is loopback), "
                          "'all', or a comma-separated list")
    a("--token", help="shared token required by POST /offer and /control (or STREAMER_TOKEN in the environment)")
    a("--max-viewers", type=int, help="WebRTC viewers at once (default 32)")
    a("--stdout", choices=["mpegts", "y4m"], help="also write the live stream to standard output")
    a("--keyframe-interval", type=float, help="seconds between keyframes (default 2)")
    a("--crf", type=int, help="x264 quality (default 23)")
    a("--nvenc", action="store_true", default=None, help="use NVENC where present")
    a("--no-pace", dest="pace", action="store_false", default=None,
      help="do not hold a fast engine to real time")
    a("--log-level", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)


def _load_toml(path: str) -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path!r} is not valid TOML: {e}") from None
    return check_options(data, {**ENGINE_OPTS, **DAEMON_OPTS}, f"config file {path!r}")


def resolve_serve(args) -> tuple[EngineConfig, dict]:
    """Merge defaults < config file < command line; validate everything before anything starts."""
    if args.gpus is not None and args.ranks is not None:
        raise ConfigError("give either --gpus (GPU ranks) or --ranks (CPU ranks), not both")
    if args.gpus is not None and args.gpus < 1:
        raise ConfigError(f"--gpus must be >= 1, got {args.gpus}")
    from pipeline.modelinfo import model_defaults

    from_file = _load_toml(args.config) if args.config else {}
    model = args.model or from_file.get("model") or SERVE_DEFAULTS["model"]
    values = dict(SERVE_DEFAULTS)
    values.update(model_defaults(model, ENGINE_OPTS))  # the model's own defaults (its folder's streamer.json)
    preset = args.preset or from_file.get("preset")
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(sorted(PRESETS))}, got {preset!r}")
        values.update(PRESETS[preset])
    values.update(from_file)
    for k in list(ENGINE_OPTS) + list(DAEMON_OPTS):
        v = getattr(args, k, None)
        if v is not None:
            values[k] = v
    if values.get("gpus"):
        values["ranks"] = values["gpus"]
        if values["device"] == "auto":
            values["device"] = "cuda"
    elif (args.ranks is not None or "ranks" in from_file) and values["device"] == "auto":
        values["device"] = "cpu"  # --ranks: engine ranks on the CPU (gloo)
    fields = {k: values[k] for k in ENGINE_OPTS if k in values and k != "attention"}
    fields["attention_backend"] = values.get("attention", "") or ""
    fields["ranks"] = values["ranks"]
    fields["extra"] = {"pace": values["pace"], "split": values.get("split", "")}
    cfg = EngineConfig(**fields)
    cfg.validate()
    model = cfg.model
    if model != "tiny" and (model.startswith(("/", ".", "~")) or os.path.exists(model)):
        path = os.path.expanduser(model)
        if not os.path.isdir(path):
            raise ConfigError(f"--model {model!r}: no such directory")
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise ConfigError(f"--model {model!r}: not a diffusers pipeline folder (no model_index.json)")
    if values["http"] not in ("", "off"):
        host, sep, port = values["http"].rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"--http must be HOST:PORT or 'off', got {values['http']!r}")
    if values["keyframe_interval"] <= 0:
        raise ConfigError("--keyframe-interval must be > 0")
    if not 0 <= values["crf"] <= 51:
        raise ConfigError("--crf must be in 0..51")
    if values.get("split"):
        counts = str(values["split"]).split(",")
        if len(counts) != cfg.ranks or not all(c.strip().isdigit() and int(c) > 0 for c in counts):
            raise ConfigError(f"--split must list {cfg.ranks} positive layer counts, got {values['split']!r}")
    return cfg, values


def cmd_serve(args) -> int:
    try:
        cfg, values = resolve_serve(args)
    except ConfigError as e:
        print(f"streamer: error: {e}", file=sys.stderr)
        return 2
    _setup_logging(values["log_level"])
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
    from .daemon import ServeOptions, serve

    opts = ServeOptions(control=values["control"], publish=values["publish"], http=values["http"],
                        stdout=values["stdout"], keyframe_interval=values["keyframe_interval"], crf=values["crf"],
                        nvenc=values["nvenc"], attach=values["attach"], **{k: values[k] for k in WEB_OPTS})
    return serve(cfg, opts, engine)


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


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="streamer", description="Endless video streamer (DualParal on Wan)")
    sub = ap.add_subparsers(dest="command", required=True)
    _add_serve(sub)
    from clients.commands import add_client_commands

    add_client_commands(sub)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

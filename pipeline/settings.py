"""Every option of `streamer serve`, defined once: name, type, default, help, and where it goes.

From this one tree come the command line (`add_arguments`), the checks of a `--config` TOML file and of a model
folder's `streamer.json` (`check`), the engine's configuration (`EngineConfig.from_settings`), the daemon's options
(`streamer.daemon.ServeOptions`) and the configuration of ranks started by torchrun (`pipeline.process.worker`).
Values merge as: defaults < the model's streamer.json < --preset < the --config file < the command line
(`pipeline.resolve.resolve`).

Scopes: `engine` options are EngineConfig fields (a model's streamer.json may set them), `ranks` say how many engine
processes there are and how the layers are split, `daemon` and `web` options configure the daemon's sockets,
encoder and viewers. No torch here: the CLI resolves all of this before it starts anything.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from common.errors import ConfigError

WAN_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, poorly "
    "drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, messy "
    "background, three legs, many people in the background, walking backwards"
)


DTYPE_CHOICES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Option:
    name: str  # the --config key; the flag is --name with '-' for '_'
    type: type
    default: object
    help: str
    scope: str  # engine | ranks | daemon | web
    choices: tuple = ()
    field: str = ""  # the EngineConfig field, where it differs from the name
    metavar: str | None = None


def _o(name, typ, default, help_, scope, **kw) -> Option:
    return Option(name, typ, default, help_, scope, **kw)


OPTIONS = (
    _o("model", str, "toyworld", "'toyworld' (the small model trained on the toy world, shipped in the package), "
       "'toyworld-rt' (its 4-step real-time member), 'tiny' (random weights), a local diffusers Wan2.1/2.2 T2V folder, or a hub id; a folder's streamer.json "
       "sets that model's defaults", "engine"),
    _o("engine", str, "dualparal", "dualparal: bidirectional Wan, blocks denoised together in a queue (DualParal); "
       "causal: a causal few-step checkpoint (Self-Forcing, CausVid, LongLive) block after block with a key/value "
       "cache (its folder's streamer.json says so; `streamer convert` writes one)", "engine",
       choices=("dualparal", "causal")),
    _o("stream_batch", bool, False, "the causal engine: denoise S blocks at once, one per step, in one batched "
       "forward (StreamDiffusionV2's stream batch): a block at step j attends to the earlier blocks' keys/values as "
       "they were at step j, a cache per step, instead of to clean ones; one forward a block instead of S + 1, a "
       "block out S ticks after it entered", "engine"),
    _o("height", int, 64, "frame height, a multiple of 16 (of 32 for Wan 2.2 TI2V-5B, whose default is 704)",
       "engine"),
    _o("width", int, 64, "frame width, a multiple of 16 (of 32 for Wan 2.2 TI2V-5B, whose default is 1280)",
       "engine"),
    _o("steps", int, 8, "denoising steps S (= blocks in flight)", "engine"),
    _o("guidance", float, 5.0, "classifier-free guidance scale (<= 1 disables CFG)", "engine"),
    _o("guidance_2", float, 0.0, "two-expert models (Wan 2.2 A14B): the low-noise expert's guidance scale (0 = the "
       "model folder's, else --guidance)", "engine"),
    _o("boundary_ratio", float, -1.0, "two-expert models (Wan 2.2 A14B): steps whose timestep is below this x 1000 "
       "use the low-noise expert (-1 = the folder's boundary_ratio, 0.875 for T2V-A14B)", "engine"),
    _o("flow_shift", float, 3.0, "the scheduler's flow shift", "engine"),
    _o("block_frames", int, 2, "latent frames per block B", "engine"),
    _o("context_frames", int, 1, "context latent frames C: the last C frames before a block (they may span several "
       "earlier blocks of its shot); a block also sees the first min(C, B) frames of its successor (the causal engine: the "
       "window of earlier frames a block attends to besides the sinks)", "engine"),
    _o("sink_frames", int, 0, "with --reuse-context (or the causal engine): the first K frames of the current shot "
       "stay in every later block's context as cached keys/values ('sink' frames)", "engine"),
    _o("fps", float, 8.0, "output frame rate", "engine"),
    _o("seed", int, 0, "seed of the coordinated noise", "engine"),
    _o("prompt", str, "a red circle moving left on a black background", "the first prompt", "engine"),
    _o("negative_prompt", str, WAN_NEGATIVE_PROMPT, "the negative prompt of classifier-free guidance", "engine"),
    _o("device", str, "auto", "auto (cuda:LOCAL_RANK where CUDA devices are visible, else cpu), cpu, cuda "
       "(= cuda:LOCAL_RANK), cuda:N (one rank only)", "engine"),
    _o("dtype", str, "auto", "auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, float16", "engine",
       choices=DTYPE_CHOICES),
    _o("attention", str, "", "the transformer's attention kernel: cudnn, efficient, math, _native_flash (PyTorch's, "
       "preferred with the others still enabled) or another diffusers backend (flash, sage, ...)", "engine",
       field="attention_backend"),
    _o("reuse_context", bool, False, "take the previous block's context frames as the keys/values its own forward "
       "cached one tick earlier instead of recomputing them (about half the FLOPs when context = block frames; "
       "approximate)", "engine"),
    _o("compile", bool, False, "torch.compile the transformer blocks and the VAE decoder (slower start; compiled "
       "graphs are cached across restarts)", "engine"),
    _o("quant", str, "", "fp8: float8 linear layers in the transformer blocks (GPUs with fp8 units)", "engine",
       choices=("", "fp8")),
    _o("vae_dtype", str, "auto", "VAE decoder dtype: auto (bfloat16 on GPU, float32 on CPU), float32, bfloat16, "
       "float16", "engine", choices=DTYPE_CHOICES),
    _o("tiny_vae", str, "", "decode with a tiny autoencoder in TAEHV format instead of the model's VAE (Wan 2.1 "
       "latents: taew2_1.safetensors or .pth; 'model': the one the model folder ships, e.g. toyworld-rt's): ~30x "
       "fewer FLOPs per block, lower picture quality", "engine",
       metavar="PATH"),
    _o("decode_overlap", bool, True, "decode beside the engine's ticks on a stream of its own where that is safe "
       "(not while torch.compile'd code traces: the tiny decoder's CUDA graphs are; the compiled Wan decoder takes "
       "turns); --no-decode-overlap: decode and ticks always take turns", "engine"),
    _o("decode_chunk", int, 0, "latent frames per VAE decoder call (0 = auto: a whole block on GPU, 1 on CPU); on a "
       "GPU, 1 lowers the decode's peak memory (~7 GiB less at 480x832) for ~6 percent more decode time", "engine"),
    _o("lora", list, [], "a LoRA to fuse into the transformer at SCALE (default 1): diffusers or original Wan "
       "format (distilled few-step checkpoints ship so); @high or @low: only into that expert of a two-expert "
       "model (Wan 2.2 A14B's LoRAs come in such pairs; default: every expert); repeatable (a list in --config)",
       "engine", metavar="PATH[:SCALE][@high|@low]"),
    _o("pace", bool, True, "hold a fast engine to real time (--no-pace: as fast as it goes)", "engine"),
    _o("lead", float, 0.0, "seconds of video a paced engine may run ahead of the wall clock, which every viewer "
       "waits through after a prompt change: 0 = auto (what the stream needs: a high quantile of recent full "
       "ticks plus the spread of recent decode times plus 0.1 s, between one frame and 2 s; 2 s until four full "
       "ticks were seen), or a fixed positive number up to 30", "engine", metavar="S"),
    _o("gpus", int, 0, "number of GPUs (engine ranks, one process each)", "ranks"),
    _o("ranks", int, 1, "number of engine ranks on CPU (gloo), for testing", "ranks"),
    _o("split", str, "", "transformer blocks per rank, e.g. 8,8,7,7 (default: balanced)", "ranks"),
    _o("attach", str, "", "do not start engine ranks: wait for a rank 0 started by torchrun to connect to this ZMQ "
       "address (e.g. tcp://0.0.0.0:5557)", "ranks"),
    _o("control", str, "tcp://127.0.0.1:5555", "control socket (ZMQ ROUTER)", "daemon"),
    _o("publish", str, "tcp://127.0.0.1:5556", "publish socket (ZMQ PUB)", "daemon"),
    _o("http", str, "127.0.0.1:8080", "HOST:PORT for the viewer, /stream.ts, /status, /metrics ('off': none)",
       "daemon"),
    _o("stdout", str, "", "also write the live stream to standard output", "daemon", choices=("", "mpegts", "y4m")),
    _o("keyframe_interval", float, 2.0, "seconds between keyframes", "daemon"),
    _o("crf", int, 23, "x264 quality (0..51)", "daemon"),
    _o("nvenc", bool, False, "use NVENC where present", "daemon"),
    _o("log_level", str, "info", "log level", "daemon", choices=("debug", "info", "warning", "error")),
    _o("push", list, [], "push the stream to a media server: rtmp://, rtmps:// (FLV) or srt:// (MPEG-TS); "
       "repeatable (a list in --config)", "daemon", metavar="URL"),
    _o("push_audio", bool, False, "add a silent AAC track to pushed streams (ingests that insist on audio)",
       "daemon"),
    _o("ice_servers", str, "", "comma-separated STUN/TURN URLs for WebRTC (default: none, host candidates only)",
       "web"),
    _o("ice_username", str, "", "TURN username", "web"),
    _o("ice_credential", str, "", "TURN credential", "web"),
    _o("ice_hosts", str, "auto", "addresses for WebRTC host candidates: 'auto' (loopback while --http is loopback), "
       "'all', or a comma-separated list", "web"),
    _o("token", str, "", "shared token that every data route (HTTP, WebRTC, ZMQ control) then requires; prefer "
       "--token-file or STREAMER_TOKEN: a command line is visible to every local user", "web"),
    _o("token_file", str, "", "read the token from this file (its first line)", "web"),
    _o("allow_no_token", bool, False, "allow binding HTTP, control or --attach beyond loopback without a token",
       "web"),
    _o("allowed_hosts", str, "", "extra names the HTTP Host and Origin may carry (comma-separated); loopback names "
       "and the bound address are always allowed (a guard against DNS rebinding)", "web"),
    _o("max_viewers", int, 32, "WebRTC viewers at once", "web"),
)
OPTION = {o.name: o for o in OPTIONS}
TINY_VAE_FILE = "tiny_vae.safetensors"  # in a model folder: its own tiny decoder (--tiny-vae model)
DEFAULTS = {o.name: o.default for o in OPTIONS}
TYPES = {o.name: o.type for o in OPTIONS}
MODEL_KEYS = {o.name: o.type for o in OPTIONS if o.scope == "engine" and o.name != "model"}  # streamer.json
FILE_KEYS = {**TYPES, "preset": str}  # a --config file

# Named sets of engine settings (`--preset NAME`): above the model's own defaults, below a --config file's keys and
# the command line.
PRESETS = {
    # the few-step recipe of the distilled Wan checkpoints (4 steps, no CFG, flow shift 5, 16 fps; LightX2V's
    # step-distilled Wan2.1 uses timesteps 1000/750/500/250 at shift 5) at the best point of the measured
    # quality-speed-latency frontier (benchmarks/RESULTS.md §9, tenth follow-up): blocks of 2 latent frames with 1
    # of context, recomputed (no approximation), compiled
    "realtime": {"steps": 4, "guidance": 1.0, "flow_shift": 5.0, "fps": 16.0, "block_frames": 2, "context_frames": 1,
                 "reuse_context": False, "compile": True},
}
# the frontier's lowest reaction (RESULTS §9, eleventh follow-up): the same recipe with blocks of ONE latent frame
# (0.25 s of video at 16 fps), so a change waits for a shorter slot; ~0.6-0.75x the frames per second unpaced
PRESETS["lowlatency"] = {**PRESETS["realtime"], "block_frames": 1}


def describe_preset(name: str) -> str:
    """A preset's settings as the options that give them (for --help)."""
    out = []
    for k, v in PRESETS[name].items():
        flag = "--" + k.replace("_", "-")
        out.append(flag if v is True else "--no-" + k.replace("_", "-") if v is False else f"{flag} {v:g}"
                   if isinstance(v, float) else f"{flag} {v}")
    return " ".join(out)


SCOPE_TITLES = {"engine": "Engine (a model folder's streamer.json may set these)", "ranks": "Engine ranks",
                "daemon": "Daemon: sockets, encoder, outputs", "web": "Viewers and access"}


def reference_markdown() -> str:
    """docs/options.md: every `serve` option and preset, from this tree (tests/test_docs.py keeps it in step)."""
    out = ["# `streamer serve` options", "",
           "Generated from `pipeline/settings.py` (`python -c \"from pipeline.settings import reference_markdown; "
           "print(reference_markdown(), end='')\" > docs/options.md`). Values merge as: defaults < the model "
           "folder's streamer.json < `--preset` < the `--config` file < the command line. In a `--config` TOML "
           "file the keys are the option names with `_` for `-`.", ""]
    for scope, title in SCOPE_TITLES.items():
        out += [f"## {title}", "", "| option | default | |", "|---|---|---|"]
        for o in OPTIONS:
            if o.scope != scope:
                continue
            flag = "--" + o.name.replace("_", "-")
            if o.type is bool:
                flag = f"{flag} / --no-{o.name.replace('_', '-')}"
            elif o.metavar:
                flag = f"{flag} {o.metavar}"
            default = "" if o.default in ("", None, []) else f"`{o.default!r}`"
            text = o.help.replace("|", "\\|")
            if o.choices:
                text += " (one of: " + ", ".join(f"`{c}`" for c in o.choices if c) + ")"
            out.append(f"| `{flag}` | {default} | {text} |")
        out.append("")
    out += ["## Presets (`--preset NAME`)", ""]
    out += [f"- `{name}`: {describe_preset(name)}" for name in PRESETS]
    return "\n".join(out) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve options as flags; an option not given is None (so that `resolve` can tell)."""
    parser.add_argument("--config", metavar="FILE.toml", help="settings file; keys are these options with '_' for '-'")
    parser.add_argument("--preset", help="a named set of engine settings, below --config and the options given: "
                        + "; ".join(f"{name} ({describe_preset(name)})" for name in PRESETS))
    for o in OPTIONS:
        flag = "--" + o.name.replace("_", "-")
        shown = o.default not in ("", None) and o.type is not bool
        helptext = f"{o.help} (default: {o.default!r})" if shown else o.help
        if o.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        elif o.type is list:
            parser.add_argument(flag, action="append", default=None, metavar=o.metavar, help=helptext)
        else:
            parser.add_argument(flag, type=o.type, default=None, help=helptext,
                                choices=[c for c in o.choices if c] or None)


def check(data: dict, allowed: dict, where: str) -> dict:
    """Settings read from a file (`where` names it in errors): every key must be in `allowed` (name → type) with a
    value of that type (an int is a float; a bool is no int). Returns them with ints given for floats as floats."""
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    out = {}
    for k, v in data.items():
        typ = allowed[k]
        if typ is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)) or (
                typ is list and not all(isinstance(x, str) for x in v)):
            raise ConfigError(f"{where}: {k} must be {'a list of strings' if typ is list else typ.__name__}, "
                              f"got {v!r}")
        if k in OPTION and OPTION[k].choices and v not in OPTION[k].choices:
            raise ConfigError(f"{where}: {k} must be one of {', '.join(c for c in OPTION[k].choices if c)}")
        out[k] = v
    return out


def load_toml(path: str) -> dict:
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
    return check(data, FILE_KEYS, f"config file {path!r}")

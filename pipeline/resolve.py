"""Resolve `streamer serve`'s settings: the options tree's defaults (pipeline/settings.py) < the model folder's family
and streamer.json < --preset < the --config file < the command line, then every value checked before anything
starts (the EngineConfig, the daemon's sockets, token and exposure). The CLI, and ranks started by torchrun
(pipeline.process.worker), call `resolve`; no torch here."""
from __future__ import annotations

import os

from common.errors import ConfigError
from common.netaddr import is_loopback, zmq_host

from .config import EngineConfig
from .family import describe
from .modelinfo import model_defaults, resolve_model
from .settings import DEFAULTS, MODEL_KEYS, OPTION, PRESETS, TINY_VAE_FILE, load_toml


def tiny_vae_file(value: str, model: str) -> str:
    """--tiny-vae's file: 'model' is the tiny decoder the model folder ships for its own VAE; '' none. ConfigError
    for a file that is not there."""
    if value == "model":
        value = os.path.join(os.path.expanduser(resolve_model(model)), TINY_VAE_FILE)
        if not os.path.isfile(value):
            raise ConfigError(f"--tiny-vae model: the model {model!r} ships no tiny decoder ({TINY_VAE_FILE})")
    if value and not os.path.isfile(os.path.expanduser(value)):
        raise ConfigError(f"--tiny-vae {value!r}: no such file")
    return value


def resolve(given: dict):
    """`given`: the command line's values (None = not given; may hold "config" and "preset"). Returns
    (EngineConfig, values), every value checked before anything starts."""
    given = {k: v for k, v in given.items() if v is not None}
    if given.get("gpus") is not None and given.get("ranks") is not None:
        raise ConfigError("give either --gpus (GPU ranks) or --ranks (CPU ranks), not both")
    if given.get("gpus") is not None and given["gpus"] < 1:
        raise ConfigError(f"--gpus must be >= 1, got {given['gpus']}")
    from_file = load_toml(given["config"]) if given.get("config") else {}
    model = given.get("model") or from_file.get("model") or DEFAULTS["model"]
    values = {k: list(v) if isinstance(v, list) else v for k, v in DEFAULTS.items()}
    family = describe(model)  # read once (a hub id's JSON files are fetched)
    values.update(family.defaults)  # the family's (TI2V-5B: 704x1280 at 24 fps)
    values.update(model_defaults(model, MODEL_KEYS))
    preset = given.get("preset") or from_file.pop("preset", None)
    if preset:
        if preset not in PRESETS:
            raise ConfigError(f"--preset must be one of {', '.join(sorted(PRESETS))}, got {preset!r}")
        values.update(PRESETS[preset])
    values.update(from_file)
    values.update({k: v for k, v in given.items() if k in OPTION})
    if values["gpus"]:
        values["ranks"] = values["gpus"]
        if values["device"] == "auto":
            values["device"] = "cuda"
    elif ("ranks" in given or "ranks" in from_file) and values["device"] == "auto":
        values["device"] = "cpu"  # --ranks: engine ranks on the CPU (gloo)
    cfg = EngineConfig.from_settings(values)
    cfg.family = family.to_dict()
    cfg.validate()
    _check_daemon(values, cfg)
    return cfg, values


def _token(values: dict) -> str:
    """--token, else the first line of --token-file, else $STREAMER_TOKEN."""
    if values["token"]:
        return values["token"]
    if values["token_file"]:
        try:
            with open(os.path.expanduser(values["token_file"])) as f:
                token = f.readline().strip()
        except OSError as e:
            raise ConfigError(f"--token-file {values['token_file']!r}: {e.strerror}") from None
        if not token:
            raise ConfigError(f"--token-file {values['token_file']!r} is empty")
        return token
    return os.environ.get("STREAMER_TOKEN", "").strip()


def _check_exposure(values: dict) -> None:
    """Anything bound beyond loopback needs the token, unless --allow-no-token says otherwise."""
    if values["token"] or values["allow_no_token"]:
        return
    exposed = []
    if values["http"] not in ("", "off") and not is_loopback(values["http"].rpartition(":")[0]):
        exposed.append(f"--http {values['http']}")
    for name in ("control", "attach"):
        host = zmq_host(values[name]) if values[name] else None
        if host is not None and not is_loopback(host):
            exposed.append(f"--{name} {values[name]}")
    if exposed:
        raise ConfigError(f"{', '.join(exposed)} is reachable from other machines: set a token (--token-file, "
                          "STREAMER_TOKEN or --token) or pass --allow-no-token")


def _check_daemon(values: dict, cfg) -> None:
    model = cfg.model
    if model != "tiny" and (model.startswith(("/", ".", "~")) or os.path.exists(model)):
        path = os.path.expanduser(model)
        if not os.path.isdir(path):
            raise ConfigError(f"--model {model!r}: no such directory")
        if not os.path.isfile(os.path.join(path, "model_index.json")):
            raise ConfigError(f"--model {model!r}: not a diffusers pipeline folder (no model_index.json)")
    values["tiny_vae"] = cfg.tiny_vae = tiny_vae_file(values["tiny_vae"], model)
    if values["http"] not in ("", "off"):
        host, sep, port = values["http"].rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ConfigError(f"--http must be HOST:PORT or 'off', got {values['http']!r}")
    if values["keyframe_interval"] <= 0:
        raise ConfigError("--keyframe-interval must be > 0")
    if not 0 <= values["crf"] <= 51:
        raise ConfigError("--crf must be in 0..51")

    if values["split"]:
        counts = str(values["split"]).split(",")
        if len(counts) != cfg.ranks or not all(c.strip().isdigit() and int(c) > 0 for c in counts):
            raise ConfigError(f"--split must list {cfg.ranks} positive layer counts, got {values['split']!r}")
    values["token"] = _token(values)
    _check_exposure(values)

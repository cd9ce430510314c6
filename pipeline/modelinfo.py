"""Where a model's files are and what its folder says about itself, without importing torch (the daemon's CLI reads
this before it starts the engine ranks)."""
from __future__ import annotations

import json
import os

from common.errors import ConfigError
from pipeline.settings import check

_TOYWORLD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toyworld")
# the models shipped in the package (pipeline/toyworld/): the toy world, the daemon's default, and its real-time
# member (4 steps, no CFG, with a tiny decoder for the toy world's VAE)
SHIPPED = {"toyworld": os.path.join(_TOYWORLD, "model"), "toyworld-rt": os.path.join(_TOYWORLD, "model_rt")}
DEFAULTS_FILE = "streamer.json"  # in a model folder: the daemon's defaults for that model (EngineConfig fields)


def resolve_model(model: str) -> str:
    """'toyworld', 'toyworld-rt' → the folders of the models shipped in the package; anything else unchanged."""
    return SHIPPED.get(model, model)


def model_defaults(model: str, allowed: dict) -> dict:
    """The model folder's own defaults (DEFAULTS_FILE), restricted to `allowed` (name → type); {} if none."""
    path = os.path.join(os.path.expanduser(resolve_model(model)), DEFAULTS_FILE)
    if model == "tiny" or not os.path.isfile(path):
        return {}
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise ConfigError(f"model defaults {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"model defaults {path}: expected a JSON object")
    return check(data, {k: t for k, t in allowed.items() if k != "model"}, f"model defaults {path}")

"""Read a weights file a user names (a tiny decoder, a causal checkpoint, a LoRA for it): .safetensors, or a .pt/.pth
read with weights_only (tensors and plain containers only: no code runs). Errors name the option and the file."""
from __future__ import annotations

import os

from common.errors import ConfigError


def read_weights(path: str, label: str):
    """The file's content (a state dict, or a training checkpoint's dict of them). `label` names it in errors, e.g.
    "--tiny-vae" or "checkpoint"."""
    path = os.path.expanduser(path)
    if not os.path.isfile(path):
        raise ConfigError(f"{label} {path!r}: no such file")
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file
        raise ConfigError(f"{label} {path!r}: cannot read it as a checkpoint ({type(e).__name__}: {e})") from None

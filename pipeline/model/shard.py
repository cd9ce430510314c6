"""Each rank reads only its own transformer weights from the checkpoint's safetensors.

The model skeleton is built on the `meta` device (no memory); only the tensors of the modules this rank owns are
read from the safetensors files (straight to the target device) and assigned. Everything else stays on `meta`.
"""
from __future__ import annotations

import json
import os

import torch

from ..config import ConfigError

PROLOGUE = ("patch_embedding.", "condition_embedder.")
EPILOGUE = ("norm_out.", "proj_out.", "scale_shift_table")


def owned(name: str, layers: tuple[int, int], first: bool, last: bool) -> bool:
    if name.startswith("blocks."):
        return layers[0] <= int(name.split(".")[1]) < layers[1]
    if name.startswith(PROLOGUE):
        return first
    if name.startswith(EPILOGUE):
        return last
    return False


def _weight_files(folder: str) -> dict[str, str]:
    """tensor name → safetensors file, for a single file or a sharded checkpoint."""
    index = os.path.join(folder, "diffusion_pytorch_model.safetensors.index.json")
    if os.path.isfile(index):
        with open(index) as f:
            return {k: os.path.join(folder, v) for k, v in json.load(f)["weight_map"].items()}
    single = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    if os.path.isfile(single):
        from safetensors import safe_open

        with safe_open(single, framework="pt") as f:
            return {k: single for k in f.keys()}
    raise ConfigError(f"no safetensors weights in {folder!r}")


def load_transformer_slice(source: str, layers: tuple[int, int], first: bool, last: bool, device, dtype,
                           subfolder: str = "transformer"):
    """A WanTransformer3DModel (from `subfolder`: transformer, or a two-expert model's transformer_2) whose owned
    parts (blocks[a:b], prologue if first, epilogue if last) hold real weights on `device`; the rest of its
    parameters are on `meta`."""
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed
    from safetensors import safe_open

    folder = os.path.join(source, subfolder)
    if not os.path.isdir(folder):
        raise ConfigError(f"{source!r} has no {subfolder}/ folder")
    config = WanTransformer3DModel.load_config(folder)
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
    n = len(model.blocks)
    if not (0 <= layers[0] < layers[1] <= n):
        raise ConfigError(f"layer slice {layers} does not fit a model with {n} blocks")
    keep = WanTransformer3DModel._keep_in_fp32_modules
    files = _weight_files(folder)
    wanted: dict[str, list[str]] = {}
    for name in files:
        if owned(name, layers, first, last):
            wanted.setdefault(files[name], []).append(name)
    dev = torch.device(device)
    state = {}
    for path, names in wanted.items():
        with safe_open(path, framework="pt", device=str(dev)) as f:
            for name in names:
                t = f.get_tensor(name)
                want = torch.float32 if any(k in name.split(".") for k in keep) else dtype
                state[name] = t.to(want) if t.is_floating_point() else t
    missing = [k for k in model.state_dict() if owned(k, layers, first, last) and k not in state]
    if missing:
        raise ConfigError(f"checkpoint {source!r} lacks {len(missing)} tensors of this rank, e.g. {missing[0]}")
    model.load_state_dict(state, strict=False, assign=True)
    cfg = model.config
    with torch.device(dev):  # the rotary table is computed, not stored
        model.rope = WanRotaryPosEmbed(cfg.attention_head_dim, cfg.patch_size, cfg.rope_max_seq_len)
    return model.eval().requires_grad_(False)


def materialised(model) -> set[str]:
    """Names of the parameters and buffers that hold real memory (not on `meta`)."""
    return {k for k, v in model.state_dict().items() if v.device.type != "meta"}

"""`streamer convert CKPT --base WAN_FOLDER --out DIR`: a causal checkpoint (Self-Forcing, CausVid, LongLive) as a
folder the daemon serves with the causal engine.

Such checkpoints are the Wan 2.1 transformer's weights in the original Wan key layout, inside a `.pt` dict
(`generator_ema` or `generator`, each key prefixed `model.` by their training wrapper) or as safetensors. They are
read with weights_only (no code runs), unwrapped, mapped to diffusers' names with diffusers' own single-file
converter and loaded strictly into the base folder's transformer architecture: a checkpoint that does not fit is
refused by name. The output folder is the base folder (its text encoder, tokenizer, VAE and scheduler by symlink)
with the converted transformer and a streamer.json that selects the causal engine and the recipe: 4 steps at
shift 5, blocks of 3 latent frames, no CFG, a window of 18 earlier frames (Self-Forcing's 21-frame attention), 16
fps. `--lora FILE[:SCALE]` fuses a LoRA first (LongLive ships its model as a LoRA over Self-Forcing's weights): a
PEFT state dict in the original key layout (`generator_lora` in a .pt, or flat; `blocks.N.self_attn.q.lora_A.weight`
and `lora_B`, any `base_model.model.` prefix) is merged into the original weights as W + SCALE x B A (SCALE: PEFT's
alpha / rank, 1 by default, as LongLive trains with alpha = rank); any other LoRA format goes through the diffusers
loader after conversion (pipeline/model/lora.py).
"""
from __future__ import annotations

import json
import os

import torch

from common.errors import ConfigError

from ..model.checkpoint_io import read_weights

PICK = ("generator_ema", "generator", "generator_lora", "model", "state_dict")  # where a checkpoint's weights sit
PREFIXES = ("base_model.", "model.", "module.", "_orig_mod.", "_fsdp_wrapped_module.", "diffusion_model.")
RECIPE = {"engine": "causal", "steps": 4, "flow_shift": 5.0, "guidance": 1.0, "block_frames": 3,
          "context_frames": 18, "sink_frames": 0, "fps": 16.0, "negative_prompt": ""}
SHARED = ("text_encoder", "tokenizer", "vae", "scheduler")


def read_state(path: str) -> dict:
    """A checkpoint's tensors (wrappers and prefixes removed), read with weights_only."""
    state = read_weights(path, "checkpoint")
    while isinstance(state, dict):  # a training checkpoint: descend into its generator's weights
        inner = next((state[k] for k in PICK if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"checkpoint {path!r}: no weights found (keys: {', '.join(list(state)[:6])})")
    if not isinstance(state, dict):
        raise ConfigError(f"checkpoint {path!r}: not a state dict")
    out = {}
    for k, v in state.items():
        if not isinstance(v, torch.Tensor):
            continue
        changed = True
        while changed:
            changed = False
            for p in PREFIXES:
                if k.startswith(p):
                    k, changed = k[len(p):], True
        out[k] = v
    return out


def read_checkpoint(path: str) -> dict:
    """The transformer's tensors in the original key layout (wrappers and prefixes removed)."""
    out = read_state(path)
    if "patch_embedding.weight" not in out:
        raise ConfigError(f"checkpoint {path!r}: not a Wan transformer (no patch_embedding.weight)")
    return out


def is_original_lora(state: dict) -> bool:
    """A PEFT LoRA over the original Wan layout (LongLive's): blocks.N.self_attn/cross_attn/ffn ... lora_A/B."""
    return any(".lora_A." in k for k in state) and any(k.startswith("blocks.") and (
        ".self_attn." in k or ".cross_attn." in k or ".ffn." in k) for k in state)


def merge_original_lora(state: dict, lora: dict, scale: float, where: str) -> int:
    """W += scale x B A for every lora_A/lora_B pair of `lora` (original layout) into `state`; returns how many."""
    n = 0
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        b = lora.get(key.replace(".lora_A.", ".lora_B."))
        base = key.replace(".lora_A.weight", ".weight").replace(".lora_A.default.weight", ".weight")
        if b is None or base not in state:
            raise ConfigError(f"{where}: {key} has no {'lora_B pair' if b is None else 'weight in the checkpoint'}")
        w = state[base]
        if tuple(w.shape) != (b.shape[0], a.shape[1]):
            raise ConfigError(f"{where}: {key} does not fit {base} {tuple(w.shape)}")
        state[base] = (w.float() + scale * (b.float() @ a.float())).to(w.dtype)
        n += 1
    if not n:
        raise ConfigError(f"{where}: no lora_A/lora_B pairs")
    return n


def to_diffusers(state: dict) -> dict:
    """Original Wan key layout -> diffusers' WanTransformer3DModel names (diffusers' single-file converter)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    return convert_wan_transformer_to_diffusers(dict(state))


def load_converted(state: dict, config: dict, where: str, dtype=torch.float32):
    """A WanTransformer3DModel of `config` holding `state` (diffusers names), loaded strictly."""
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{n} {len(ks)} (e.g. {ks[0]})" for n, ks in (("missing", missing), ("unexpected", unexpected),
                                                               ("wrong shape", wrong)) if ks]
        raise ConfigError(f"{where} does not fit the base model's transformer: {'; '.join(parts)}")
    model.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    cfg = model.config
    model.rope = WanRotaryPosEmbed(cfg.attention_head_dim, cfg.patch_size, cfg.rope_max_seq_len)
    return model.eval().requires_grad_(False)


def convert(ckpt: str, base: str, out: str, lora: list | None = None, recipe: dict | None = None) -> str:
    """Write DIR (`out`): the base Wan 2.1 folder with the causal checkpoint as its transformer. Returns `out`."""
    from diffusers import WanTransformer3DModel

    from ..family import describe_folder
    from ..modelinfo import DEFAULTS_FILE

    base = os.path.abspath(os.path.expanduser(base))
    fam = describe_folder(base, base)
    if fam.name != "wan2.1":
        raise ConfigError(f"--base {base!r} is a {fam.name} folder; causal checkpoints are distilled from Wan 2.1")
    out = os.path.abspath(os.path.expanduser(out))
    if os.path.exists(out) and os.listdir(out):
        raise ConfigError(f"--out {out!r} exists and is not empty")
    config = WanTransformer3DModel.load_config(os.path.join(base, "transformer"))
    state = read_checkpoint(ckpt)
    later = []  # LoRAs in other formats: after conversion, through the diffusers loader
    for spec in lora or []:
        from ..model.lora import parse_spec

        path, scale = parse_spec(spec)
        extra = read_state(path)
        if is_original_lora(extra):
            merge_original_lora(state, extra, scale, f"--lora {spec!r}")
        else:
            later.append(spec)
    model = load_converted(to_diffusers(state), config, f"checkpoint {ckpt!r}")
    if later:
        from ..model.lora import apply_loras

        apply_loras(model, later)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(os.path.join(out, "transformer"))
    for name in SHARED:
        if os.path.exists(os.path.join(base, name)):
            os.symlink(os.path.join(base, name), os.path.join(out, name))
    with open(os.path.join(base, "model_index.json")) as f:
        index = json.load(f)
    with open(os.path.join(out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(out, DEFAULTS_FILE), "w") as f:
        json.dump({**RECIPE, **(recipe or {})}, f, indent=2)
    return out

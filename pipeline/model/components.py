"""Load the Wan components the engine needs: the tiny in-code model, a local diffusers folder, or a hub id.

Only the requested parts are loaded ("transformer", "vae", "text" = text encoder + tokenizer); the scheduler is
always built (it is only a config). Transformer and text encoder get `dtype`, the VAE `vae_dtype` (float32 by
default, Wan practice).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import torch

from pipeline.config import ConfigError
from pipeline.modelinfo import DEFAULTS_FILE, model_defaults, resolve_model  # noqa: F401 - re-exported
from pipeline.model.random_wan import TINY_TEXT_MAX_LEN, WAN_TEXT_MAX_LEN, build_tiny_components, wan_scheduler

PARTS = ("transformer", "vae", "text")


@dataclass
class Components:
    transformer: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler: Any
    text_max_len: int
    transformer_2: Any = None  # a two-expert model's low-noise expert (Wan 2.2 A14B), else None

    @property
    def transformers(self) -> list:
        """The experts, high-noise first: what the engine takes."""
        return [t for t in (self.transformer, self.transformer_2) if t is not None]


def _is_local(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or os.path.isdir(model)


def _text_max_len(tokenizer_max: int | None) -> int:
    # Wan pads prompts to 512 tokens; a tokenizer that declares less (the tiny one: 32) wins.
    if tokenizer_max is None or tokenizer_max <= 0:
        return WAN_TEXT_MAX_LEN
    return min(int(tokenizer_max), WAN_TEXT_MAX_LEN)


def _local_tokenizer_max(path: str) -> int | None:
    try:
        with open(os.path.join(path, "tokenizer", "tokenizer_config.json")) as f:
            return json.load(f).get("model_max_length")
    except (OSError, ValueError):
        return None


def _scheduler_from(source: str, flow_shift: float):
    from diffusers import UniPCMultistepScheduler

    cfg = UniPCMultistepScheduler.load_config(source, subfolder="scheduler")
    if cfg.get("_class_name") != "UniPCMultistepScheduler" or cfg.get("prediction_type") != "flow_prediction":
        return wan_scheduler(flow_shift)
    return UniPCMultistepScheduler.from_config(cfg, flow_shift=flow_shift)


def _reloaded(model, dtype: torch.dtype, device):
    """Cast a freshly built model exactly as from_pretrained(dtype) would (modules kept in fp32 stay fp32)."""
    if dtype == torch.float32:
        return model.to(device)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        kw = {"torch_dtype": dtype} if type(model).__module__.startswith("diffusers") else {"dtype": dtype}
        return type(model).from_pretrained(tmp, **kw).to(device).eval()


def load_components(
    model: str,
    *,
    device="cpu",
    dtype: torch.dtype = torch.float32,
    flow_shift: float = 3.0,
    parts=PARTS,
    vae_dtype: torch.dtype = torch.float32,
) -> Components:
    parts = tuple(parts)
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ConfigError(f"unknown model part(s) {bad}; choose from {list(PARTS)}")

    if model == "tiny":
        c = build_tiny_components()
        from diffusers import UniPCMultistepScheduler

        return Components(
            transformer=_reloaded(c["transformer"], dtype, device) if "transformer" in parts else None,
            # nn.Module.to: diffusers' own `to` warns about fp32 modules even when the VAE keeps none
            vae=torch.nn.Module.to(c["vae"], device, vae_dtype) if "vae" in parts else None,
            text_encoder=_reloaded(c["text_encoder"], dtype, device) if "text" in parts else None,
            tokenizer=c["tokenizer"] if "text" in parts else None,
            scheduler=UniPCMultistepScheduler.from_config(c["scheduler"].config, flow_shift=flow_shift),
            text_max_len=TINY_TEXT_MAX_LEN,
        )

    model = resolve_model(model)
    source = model
    if _is_local(model):
        source = os.path.abspath(os.path.expanduser(model))
        if not os.path.isdir(source):
            raise ConfigError(f"model directory {model!r} does not exist")
        if not os.path.isfile(os.path.join(source, "model_index.json")):
            raise ConfigError(f"model directory {model!r} has no model_index.json (not a diffusers pipeline folder)")
    from pipeline.family import describe

    family = describe(model)  # refuses what cannot be served; a hub id's experts are known before it downloads

    try:
        from diffusers import AutoencoderKLWan, WanTransformer3DModel
        from transformers import AutoTokenizer, UMT5EncoderModel

        transformer = transformer_2 = vae = text_encoder = tokenizer = None
        if "transformer" in parts:
            transformer = WanTransformer3DModel.from_pretrained(source, subfolder="transformer", torch_dtype=dtype)
            transformer = transformer.to(device).eval()
            if "transformer_2" in family.experts:
                transformer_2 = WanTransformer3DModel.from_pretrained(source, subfolder="transformer_2",
                                                                      torch_dtype=dtype).to(device).eval()
        if "vae" in parts:
            vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", torch_dtype=vae_dtype)
            vae = vae.to(device).eval()
        if "text" in parts:
            tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
            text_encoder = UMT5EncoderModel.from_pretrained(source, subfolder="text_encoder", dtype=dtype)
            text_encoder = text_encoder.to(device).eval()
        scheduler = _scheduler_from(source, flow_shift)
    except Exception as e:  # noqa: BLE001 - any failure to load is a user-facing configuration problem
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(f"could not load model {model!r}: {type(e).__name__}: {msg}") from e

    if tokenizer is not None:
        max_len = _text_max_len(tokenizer.model_max_length)
    else:
        max_len = _text_max_len(_local_tokenizer_max(source) if _is_local(model) else None)
    return Components(transformer, vae, text_encoder, tokenizer, scheduler, max_len, transformer_2)


def vae_configs(model: str) -> tuple[dict | None, dict]:
    """(the model's VAE config, or None for the in-code tiny model; diffusers' defaults for AutoencoderKLWan, which
    are the Wan 2.1 VAE's), without loading any weights."""
    import inspect

    from diffusers import AutoencoderKLWan

    wan = {k: p.default for k, p in inspect.signature(AutoencoderKLWan.__init__).parameters.items()
           if p.default is not inspect.Parameter.empty}
    if model == "tiny":
        return None, wan
    source = resolve_model(model)
    if _is_local(source):
        source = os.path.abspath(os.path.expanduser(source))
    try:
        return dict(AutoencoderKLWan.load_config(source, subfolder="vae")), wan
    except Exception as e:  # noqa: BLE001 - a model without a readable VAE config is a configuration problem
        raise ConfigError(f"could not read the VAE config of model {model!r}: {type(e).__name__}: {e}") from e


def save_components(components, path) -> None:
    """Write a diffusers WanPipeline folder (model_index.json + one subfolder per component). `components`: a
    Components, or the dict of pipeline.model.random_wan.build_tiny_components (whose two-expert and TI2V variants carry
    transformer_2 / boundary_ratio / expand_timesteps)."""
    from diffusers import WanPipeline

    c = components if isinstance(components, dict) else dict(components.__dict__)
    pipe = WanPipeline(
        tokenizer=c["tokenizer"],
        text_encoder=c["text_encoder"],
        vae=c["vae"],
        scheduler=c["scheduler"],
        transformer=c["transformer"],
        transformer_2=c.get("transformer_2"),
        boundary_ratio=c.get("boundary_ratio"),
        expand_timesteps=bool(c.get("expand_timesteps", False)),
    )
    pipe.save_pretrained(str(path))

"""The model seam: what the engine needs to know about a model family, read from a diffusers folder's JSON files
(no torch, no weights), so that bad folders are refused before anything loads.

One description covers every Wan checkpoint DualParal serves:
- Wan 2.1 T2V (1.3B, 14B): one transformer, the Wan 2.1 VAE (16 latent channels, 8x spatial, 4x temporal);
- Wan 2.2 T2V-A14B: two transformers, `transformer` for the high-noise steps and `transformer_2` for the low-noise
  ones, switched at `boundary_ratio x num_train_timesteps` (model_index.json), each with its own guidance scale;
- Wan 2.2 TI2V-5B (text-to-video): one transformer on the Wan 2.2 VAE (48 latent channels, 16x spatial: the VAE
  patchifies 2x2 itself), per-token timesteps (`expand_timesteps`), which for text-to-video are all the step's
  timestep, i.e. what a scalar timestep gives.
How a block's forward runs on a slice of layers (pipeline/model/split.py), how weights are split per rank
(pipeline/model/shard.py) and what travels between ranks (pipeline/dualparal/stages.py) are the same for all three: a Wan block is a
Wan block. What differs is here: the latent geometry, the experts and when each one runs, the family's defaults.
Anything else (an image-to-video checkpoint with an image encoder, another transformer or VAE class, a VAE whose
latents do not fit the transformer) is refused by name.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from common.errors import ConfigError

from .modelinfo import resolve_model

TRANSFORMER_CLASS = "WanTransformer3DModel"
VAE_CLASS = "AutoencoderKLWan"
PIPELINE_CLASSES = ("WanPipeline",)  # text-to-video; WanImageToVideoPipeline & co. are refused by name
EXPERT_NAMES = ("high", "low")  # transformer, transformer_2 (Wan 2.2 A14B's high- and low-noise experts)


@dataclass(frozen=True)
class Family:
    """A model family as the engine sees it."""

    name: str  # wan2.1 | wan2.2-a14b | wan2.2-ti2v
    experts: tuple[str, ...] = ("transformer",)  # subfolders, in routing order (high noise first)
    boundary_ratio: float | None = None  # steps with t < ratio x num_train_timesteps use the second expert
    latent_channels: int = 16
    vae_spatial: int = 8  # pixels per latent, each side (the VAE's own patchifying included)
    vae_temporal: int = 4  # video frames per latent frame (after the first, which gives one)
    patch: tuple[int, int, int] = (1, 2, 2)  # the transformer's patch (frames, height, width)
    expand_timesteps: bool = False  # per-token timesteps (TI2V); for text-to-video equal to a scalar one
    guidance_2: float | None = None  # the low-noise expert's guidance scale from the folder, where it has one
    defaults: dict = field(default_factory=dict)  # serve defaults of the family (below the folder's streamer.json)

    @property
    def size_multiple(self) -> int:
        """Height and width must be multiples of this: the VAE's factor times the transformer's patch."""
        return self.vae_spatial * max(self.patch[1], self.patch[2])

    def to_dict(self) -> dict:
        return {**self.__dict__, "experts": list(self.experts), "patch": list(self.patch),
                "defaults": dict(self.defaults)}

    @classmethod
    def from_dict(cls, data: dict) -> "Family":
        return cls(**{**data, "experts": tuple(data["experts"]), "patch": tuple(data["patch"])})


# The Wan 2.1 geometry: the in-code tiny model, the toy world and every Wan 2.1 folder.
WAN21 = Family("wan2.1")
# The families' own inference settings (Wan-Video/Wan2.2's configs): TI2V-5B at 704x1280 and 24 fps, shift 5,
# guidance 5; T2V-A14B at shift 12, 16 fps, guidance 4 for the high-noise expert (3 for the low-noise one is
# Wan2.2's too, but left to --guidance-2: as a default it would keep CFG on under --guidance 1, e.g. --preset realtime).
TI2V_DEFAULTS = {"height": 704, "width": 1280, "fps": 24.0, "flow_shift": 5.0, "guidance": 5.0}
A14B_DEFAULTS = {"flow_shift": 12.0, "guidance": 4.0, "fps": 16.0}


def expert_for(timestep: float, boundary: float | None) -> int:
    """Which expert denoises a window at `timestep`: 0 (`transformer`) unless there is a boundary and the timestep
    is below it, exactly as diffusers' WanPipeline chooses (t >= boundary: the high-noise expert)."""
    return 1 if boundary is not None and timestep < boundary else 0


def parse_target(spec: str) -> tuple[str, str | None]:
    """'x@high' → ('x', 'high'); 'x@low' → ('x', 'low'); anything else → (spec, None): every expert. A two-expert
    model's (Wan 2.2 A14B) LoRAs come in pairs, one for its high-noise expert and one for its low-noise one."""
    rest, sep, target = spec.rpartition("@")
    if sep and rest and target in EXPERT_NAMES:
        return rest, target
    return spec, None


def _read(path: str, what: str) -> dict:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{what}: {path} is missing") from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"{what}: cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what}: {path} is not a JSON object")
    return data


def _component(index: dict, name: str) -> str | None:
    """The class model_index.json names for a component, or None where it has none (absent or [null, null])."""
    entry = index.get(name)
    if isinstance(entry, list) and len(entry) == 2 and entry[1]:
        return str(entry[1])
    return None


def describe_folder(path: str, label: str | None = None) -> Family:
    """The family of a diffusers folder, or ConfigError naming what cannot be served."""
    label = label or path
    if not os.path.isfile(os.path.join(path, "model_index.json")):
        raise ConfigError(f"--model {label!r}: not a diffusers pipeline folder (no model_index.json)")
    index = _read(os.path.join(path, "model_index.json"), f"model {label!r}")
    pipe = index.get("_class_name")
    if pipe not in PIPELINE_CLASSES:
        raise ConfigError(f"model {label!r}: unsupported pipeline {pipe!r} (served: text-to-video "
                          f"{', '.join(PIPELINE_CLASSES)})")
    if _component(index, "image_encoder") or _component(index, "image_processor"):
        raise ConfigError(f"model {label!r}: an image-to-video checkpoint with a CLIP image encoder is not supported "
                          "(served: text-to-video Wan 2.1, Wan 2.2 A14B and TI2V-5B)")
    experts = tuple(n for n in ("transformer", "transformer_2") if _component(index, n))
    if "transformer" not in experts:
        raise ConfigError(f"model {label!r}: no transformer (a folder with only transformer_2 is not supported)")
    tcfgs = {}
    for name in experts:
        cls = _component(index, name)
        if cls != TRANSFORMER_CLASS:
            raise ConfigError(f"model {label!r}: unsupported {name} class {cls!r} (served: {TRANSFORMER_CLASS})")
        cfg = _read(os.path.join(path, name, "config.json"), f"model {label!r}")
        if cfg.get("image_dim") or cfg.get("added_kv_proj_dim"):
            raise ConfigError(f"model {label!r}: {name} has image conditioning (image_dim / added_kv_proj_dim): an "
                              "image-to-video transformer is not supported")
        tcfgs[name] = cfg
    vae_cls = _component(index, "vae")
    if vae_cls != VAE_CLASS:
        raise ConfigError(f"model {label!r}: unsupported VAE class {vae_cls!r} (served: {VAE_CLASS})")
    vcfg = _read(os.path.join(path, "vae", "config.json"), f"model {label!r}")
    return _family(label, index, tcfgs, vcfg)


def _family(label: str, index: dict, tcfgs: dict, vcfg: dict) -> Family:
    t0 = tcfgs["transformer"]
    patch = tuple(t0.get("patch_size") or (1, 2, 2))
    z = int(vcfg.get("z_dim", 16))
    for name, cfg in tcfgs.items():
        if tuple(cfg.get("patch_size") or (1, 2, 2)) != patch:
            raise ConfigError(f"model {label!r}: {name}'s patch size {cfg.get('patch_size')} differs from "
                              f"transformer's {list(patch)}")
        for key in ("in_channels", "out_channels"):
            if int(cfg.get(key, 16)) != z:
                raise ConfigError(f"model {label!r}: mismatched VAE: {name} has {key}={cfg.get(key, 16)} but the "
                                  f"VAE's latents have {z} channels")
    if len(tcfgs) == 2:
        a, b = tcfgs["transformer"], tcfgs["transformer_2"]
        dims = ("num_attention_heads", "attention_head_dim", "num_layers", "text_dim", "freq_dim", "ffn_dim")
        diff = [k for k in dims if a.get(k) != b.get(k)]
        if diff:
            raise ConfigError(f"model {label!r}: transformer and transformer_2 differ in {', '.join(diff)} (both "
                              "experts must share one architecture)")
    boundary = index.get("boundary_ratio")
    if boundary is not None:
        if isinstance(boundary, bool) or not isinstance(boundary, (int, float)) or not 0.0 <= boundary <= 1.0:
            raise ConfigError(f"model {label!r}: boundary_ratio must be a number in 0..1, got {boundary!r}")
        if len(tcfgs) < 2:
            raise ConfigError(f"model {label!r}: boundary_ratio {boundary} names a second expert, but the folder "
                              "has no transformer_2")
    for key in ("latents_mean", "latents_std"):  # the un-normalisation of every decoded latent
        stats = vcfg.get(key)
        if stats is not None and (not isinstance(stats, list) or len(stats) != z):
            n = len(stats) if isinstance(stats, list) else type(stats).__name__
            raise ConfigError(f"model {label!r}: mismatched VAE: {key} has {n} entries but the VAE's latents have "
                              f"{z} channels")
    spatial = int(vcfg.get("scale_factor_spatial", 8))
    temporal = int(vcfg.get("scale_factor_temporal", 4))
    vae_patch = vcfg.get("patch_size")
    # the VAE's down-sampling stages (2x each) times its own patchify must give its declared factor
    stages = 2 ** (len(vcfg.get("dim_mult", [1, 2, 4, 4])) - 1)
    if stages * int(vae_patch or 1) != spatial:
        raise ConfigError(f"model {label!r}: the VAE declares scale_factor_spatial={spatial} but its layout gives "
                          f"{stages * int(vae_patch or 1)}")
    expand = bool(index.get("expand_timesteps", False))
    g2 = index.get("guidance_scale_2")
    common = dict(latent_channels=z, vae_spatial=spatial, vae_temporal=temporal, patch=patch,
                  expand_timesteps=expand, guidance_2=float(g2) if isinstance(g2, (int, float)) else None)
    if len(tcfgs) == 2:
        return Family("wan2.2-a14b", experts=("transformer", "transformer_2"),
                      boundary_ratio=None if boundary is None else float(boundary), defaults=dict(A14B_DEFAULTS),
                      **common)
    if z == 48 or vae_patch:
        return Family("wan2.2-ti2v", defaults=dict(TI2V_DEFAULTS), **common)
    return Family("wan2.1", **common)


def _short(text: str, limit: int = 240) -> str:
    """One line: the text's first sentence, cut at a word with "…" if even that is longer than `limit`."""
    text = " ".join(text.split())
    end = text.find(". ")
    if 0 < end < limit:
        return text[:end + 1]
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " …"


def describe(model: str) -> Family:
    """The family of `model`: 'tiny' (built in code) is Wan 2.1; a local folder (the shipped toy-world models
    included) is read; for a hub id its JSON files are fetched (or taken from the local hub cache) and read."""
    if model == "tiny":
        return WAN21
    path = os.path.expanduser(resolve_model(model))
    if os.path.isdir(path) or model.startswith(("/", ".", "~")):
        return describe_folder(path, model) if os.path.isdir(path) else WAN21  # (a missing folder: named later)
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(model, allow_patterns=["model_index.json", "*/config.json"])
    except Exception as e:  # noqa: BLE001 - offline, unknown repo, ...: the model cannot be described
        raise ConfigError(f"--model {model!r}: not a local folder, and its configuration cannot be read from the "
                          f"hub: {type(e).__name__}: {_short(str(e))}") from None
    return describe_folder(path, model)

"""`--lora PATH[:SCALE][@high|@low]`: LoRAs fused into the transformer at load (distilled few-step Wan checkpoints
ship so; @high / @low: one expert of a two-expert model).

Files are read with the Wan pipeline's own loader (`WanPipeline.lora_state_dict`), which takes diffusers-format
LoRAs and converts the original Wan / ComfyUI / LightX2V key layouts. Each rank keeps only the entries of the layers
it holds (a rank's slice of the blocks, the prologue on rank 0, the epilogue on the last), loads them as PEFT
adapters, fuses them at their scales and unloads the adapters: afterwards the model is a plain model with changed
weights, as fast as before. A file that cannot be read, or whose keys or shapes do not fit the model, is refused at
start with a message that names it.
"""
from __future__ import annotations

import os

import torch

from ..config import ConfigError
from ..family import EXPERT_NAMES, parse_target  # noqa: F401 - parse_target re-exported


def parse_spec(spec: str) -> tuple[str, float]:
    """'path' → (path, 1.0); 'path:0.8' → (path, 0.8); an '@high' / '@low' suffix is dropped (parse_target). A
    path may itself contain ':' (the scale is the last part, when it is a number)."""
    spec, _ = parse_target(spec)
    path, sep, scale = spec.rpartition(":")
    if sep and path:
        try:
            return os.path.expanduser(path), float(scale)
        except ValueError:
            pass
    return os.path.expanduser(spec), 1.0


def _module_of(key: str) -> str:
    """'transformer.blocks.3.attn1.to_q.lora_A.weight' → 'blocks.3.attn1.to_q'."""
    key = key.removeprefix("transformer.")
    for marker in (".lora_A.", ".lora_B.", ".lora_magnitude_vector", ".diff_b", ".diff"):
        if marker in key:
            return key.split(marker)[0]
    return key.rsplit(".", 1)[0]


def _brief(e: BaseException) -> str:
    """An exception on one line of at most ~200 characters, for a start-up error message."""
    return f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"


def apply_loras(transformer, specs, layers: tuple[int, int] | None = None, first: bool = True,
                last: bool = True, expert: int = 0, experts: int = 1) -> int:
    """Fuse every LoRA of `specs` ('PATH[:SCALE][@high|@low]') meant for this expert (`expert` of `experts`, high
    noise first) into `transformer` (a whole model, or a rank's slice: `layers`, `first`, `last` as in
    pipeline.model.shard). Returns how many modules were changed."""
    from diffusers import WanPipeline

    from .shard import owned

    modules = {name for name, _ in transformer.named_modules()}  # the model's own, before any adapter is added
    names = []
    for i, spec in enumerate(specs):
        _, target = parse_target(spec)
        if target is not None and experts < 2:
            raise ConfigError(f"--lora {spec!r}: @{target} names an expert, but the model has one transformer "
                              "(@high / @low are for two-expert models such as Wan 2.2 A14B)")
        if target is not None and EXPERT_NAMES.index(target) != expert:
            continue  # the other expert's
        path, scale = parse_spec(spec)
        if not os.path.exists(path):
            raise ConfigError(f"--lora {spec!r}: no such file")
        try:
            state = WanPipeline.lora_state_dict(path)
        except Exception as e:  # noqa: BLE001 - any failure to read is the file's
            raise ConfigError(f"--lora {spec!r}: cannot read it as a LoRA: {_brief(e)}") from None
        state = state[0] if isinstance(state, tuple) else state
        unknown = sorted({_module_of(k) for k in state} - modules)
        if unknown:
            raise ConfigError(f"--lora {spec!r} does not fit this model: it changes {len(unknown)} module(s) the "
                              f"model does not have, e.g. {unknown[0]!r} (another architecture?)")
        mine = {k.removeprefix("transformer."): v for k, v in state.items()
                if owned(_module_of(k) + ".weight", layers or (0, len(transformer.blocks)), first, last)}
        if not mine:
            continue  # nothing of it lives on this rank
        name = f"lora{i}"
        try:
            transformer.load_lora_adapter(mine, adapter_name=name, prefix=None)
        except Exception as e:  # noqa: BLE001 - shapes or layouts that do not fit
            raise ConfigError(f"--lora {spec!r} does not fit this model: {_brief(e)}") from None
        names.append((name, scale, len({_module_of(k) for k in mine})))
    if not names:
        return 0
    transformer.set_adapters([n for n, _, _ in names], weights=[s for _, s, _ in names])
    with torch.no_grad():
        transformer.fuse_lora(lora_scale=1.0, adapter_names=[n for n, _, _ in names])
    transformer.unload_lora()
    return sum(n for _, _, n in names)

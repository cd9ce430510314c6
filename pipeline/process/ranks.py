"""Multi-rank set-up: torch.distributed (NCCL on GPU, gloo on CPU), the layer split, and the loop of ranks > 0.

Ranks are started by the daemon (one process per GPU, env RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT) or
by torchrun on several hosts. Rank 0 talks to the daemon; the others only to their ring neighbours.
"""
from __future__ import annotations

import datetime
import os

import torch
import torch.distributed as dist

from ..config import ConfigError, EngineConfig
from ..dualparal.engine import DTYPES
from ..compat import diffusers as diffusers_compat
from ..model.compile import compile_blocks
from ..model.lora import apply_loras
from ..model.quant import quantize_blocks
from ..model.sdpa import apply_backend, preferred_kernel
from ..model.shard import load_transformer_slice
from ..dualparal.ring import setup_ring_groups
from ..dualparal.stages import balanced_split, build_stage, serve_stage


def dist_env() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), \
        int(os.environ.get("LOCAL_RANK", "0"))


def init_dist(device: torch.device, world: int, rank: int) -> None:
    if world == 1 or dist.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world,
                            # a paused stream leaves ranks waiting on a receive: no collective timeout
                            timeout=datetime.timedelta(days=30),
                            device_id=device if device.type == "cuda" else None)
    setup_ring_groups(device)


def layer_split(cfg: EngineConfig, num_layers: int, world: int) -> list[tuple[int, int]]:
    split = cfg.extra.get("split")
    if not split:
        return balanced_split(num_layers, world)
    counts = [int(x) for x in str(split).split(",")]
    if len(counts) != world or sum(counts) != num_layers or min(counts) < 1:
        raise ConfigError(f"--split {split} must give {world} positive counts summing to {num_layers}")
    out, a = [], 0
    for c in counts:
        out.append((a, a + c))
        a += c
    return out


def model_source(cfg: EngineConfig, rank: int) -> str:
    """A local folder every rank can read its slice from. The tiny model is written there by rank 0 first."""
    if cfg.model == "tiny":
        path = os.path.join(cfg.extra.get("scratch") or "/tmp", "tiny-model")
        if rank == 0:
            from ..model.components import load_components, save_components

            save_components(load_components("tiny"), path)
        dist.barrier()
        return path
    from ..model.components import resolve_model

    local = os.path.expanduser(resolve_model(cfg.model))
    if os.path.isdir(local):
        return local
    from huggingface_hub import snapshot_download

    if rank == 0:
        path = snapshot_download(cfg.model)
    dist.barrier()
    return path if rank == 0 else snapshot_download(cfg.model, local_files_only=True)


def load_rank_slice(cfg: EngineConfig, rank: int, world: int, device):
    from diffusers import WanTransformer3DModel

    source = model_source(cfg, rank)
    num_layers = WanTransformer3DModel.load_config(os.path.join(source, "transformer"))["num_layers"]
    layers = layer_split(cfg, num_layers, world)[rank]
    models = []
    for i, sub in enumerate(cfg.model_family().experts):  # a two-expert model: this rank's slice of each
        model = load_transformer_slice(source, layers, first=rank == 0, last=rank == world - 1, device=device,
                                       dtype=DTYPES[cfg.dtype], subfolder=sub)
        if cfg.lora:
            apply_loras(model, cfg.lora, layers, first=rank == 0, last=rank == world - 1, expert=i,
                        experts=len(cfg.model_family().experts))
        apply_backend(model, cfg.attention_backend, device, DTYPES[cfg.dtype])
        models.append(model)
    return source, models, layers


def serve_rank(config_json: str) -> int:
    """Ranks 1..W-1: load the slice, then pass windows along the ring until rank 0 says stop."""
    rank, world, local = dist_env()
    diffusers_compat.self_test()
    cfg = EngineConfig.from_json(config_json).validate().resolved(local_rank=local)
    device = torch.device(cfg.device)
    init_dist(device, world, rank)
    with preferred_kernel(cfg.attention_backend):
        _, models, layers = load_rank_slice(cfg, rank, world, device)
        if cfg.quant == "fp8":
            for model in models:
                quantize_blocks(model.blocks[slice(*layers)], device)
        if cfg.engine == "causal":  # a causal checkpoint's slice (pipeline/causal/stage.py)
            from ..causal.stage import CausalStage

            stage = CausalStage(cfg, models[0], layers, last=rank == world - 1, device=device)
        else:
            stage = build_stage(cfg, models, layers, rank, world, device)
        if cfg.compile:
            compile_blocks(stage.blocks)
        with torch.inference_mode():
            serve_stage(stage, rank, world, device)
    dist.destroy_process_group()
    return 0

"""Which device a rank runs on, as pure logic (no torch): `--device` plus the facts of the host.

    auto      cuda:LOCAL_RANK on a host with CUDA devices (cuda:0 for one rank), cpu elsewhere
    cuda      cuda:LOCAL_RANK; an error on a host without CUDA devices
    cuda:N    that GPU (one rank only: with several ranks, rank r takes GPU r; pick GPUs with CUDA_VISIBLE_DEVICES)
    cpu       cpu
"""
from __future__ import annotations

import os

from common.errors import ConfigError


def resolve_device(spec: str, *, cuda_count: int, local_rank: int = 0, world: int = 1) -> str:
    """The concrete device string ('cpu' or 'cuda:N') for the rank with this LOCAL_RANK."""
    spec = (spec or "auto").strip()
    if spec == "cpu":
        return "cpu"
    if spec == "auto":
        if cuda_count == 0:
            return "cpu"
        spec = "cuda"
    if spec == "cuda":
        if cuda_count == 0:
            raise ConfigError("--device cuda: no CUDA device is visible on this host (use --device cpu or auto)")
        if local_rank >= cuda_count:
            raise ConfigError(f"engine rank with LOCAL_RANK {local_rank} needs GPU {local_rank}, but only "
                              f"{cuda_count} GPU(s) are visible")
        return f"cuda:{local_rank}"
    if spec.startswith("cuda:"):
        index = spec[5:]
        if not index.isdigit():
            raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")
        if world > 1:
            raise ConfigError(f"--device {spec} names one GPU, but {world} ranks need one each: use --device cuda "
                              "(rank r takes GPU r) and choose the GPUs with CUDA_VISIBLE_DEVICES")
        if int(index) >= cuda_count:
            raise ConfigError(f"--device {spec}: only {cuda_count} CUDA device(s) are visible")
        return f"cuda:{int(index)}"
    raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got {spec!r}")


def resolve_dtype(spec: str, device: str) -> str:
    """'auto' → bfloat16 on a GPU, float32 on the CPU; anything else unchanged."""
    if spec != "auto":
        return spec
    return "float32" if device == "cpu" else "bfloat16"


def runs_on_cpu(spec: str) -> bool:
    """Without importing torch: will ranks given this --device run on the CPU? ('auto' on a host with no NVIDIA
    driver device node counts as the CPU.) Used to give CPU ranks one OpenMP thread each."""
    return spec == "cpu" or (spec == "auto" and not os.path.exists("/dev/nvidiactl"))

"""`--attention`: which attention kernel the transformer uses, chosen without touching other users of SDPA.

PyTorch's own kernels (cuDNN, flash, memory-efficient, math) are selected through process-wide flags. diffusers'
`_native_*` backends flip those flags around every call (`sdpa_kernel`), so a VAE decoding on another thread at
that moment finds only, say, cuDNN enabled, which has no float32 kernel: "No available kernel". Here a PyTorch
kernel is instead made the *first choice* for the whole engine process, with every kernel still enabled:
scaled_dot_product_attention takes it wherever it can run (the transformer in bf16) and falls back by dtype
elsewhere (the float32 VAE). Other diffusers backends (flash-attn, sage, xformers, flex, …) call their own
kernels and are set on the transformer alone.

A backend that cannot run on the engine's device and dtype is refused at start with a message that names it.
"""
from __future__ import annotations

import contextlib

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import ConfigError

# PyTorch's kernels, by diffusers' names and short aliases
_SDPA = {"_native_cudnn": SDPBackend.CUDNN_ATTENTION, "_native_flash": SDPBackend.FLASH_ATTENTION,
         "_native_efficient": SDPBackend.EFFICIENT_ATTENTION, "_native_math": SDPBackend.MATH}
_ALIASES = {"cudnn": "_native_cudnn", "efficient": "_native_efficient", "math": "_native_math", "native": "",
            "default": ""}
_ORDER = [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def canonical(name: str) -> str:
    """'' (PyTorch's default choice), a `_native_*` name, or another diffusers backend name; ConfigError if
    diffusers knows no such backend."""
    name = _ALIASES.get((name or "").strip(), (name or "").strip())
    if not name or name in _SDPA:
        return name
    from diffusers.models.attention_dispatch import AttentionBackendName

    known = sorted(b.value for b in AttentionBackendName)
    if name not in known:
        raise ConfigError(f"--attention {name!r} is not an attention backend; choose from "
                          f"{', '.join(sorted(_ALIASES) + known)}")
    return name


@contextlib.contextmanager
def preferred_kernel(name: str):
    """For the engine process's lifetime: PyTorch's kernel `name` first, every kernel enabled (a no-op for the
    default and for non-PyTorch backends)."""
    name = canonical(name)
    if name not in _SDPA:
        yield
        return
    first = _SDPA[name]
    with sdpa_kernel([first] + [b for b in _ORDER if b != first], set_priority=True):
        yield


def apply_backend(model, name: str, device, dtype) -> None:
    """Check that the backend runs on this device and dtype with the model's head size (ConfigError naming it if
    not), then set a non-PyTorch backend on the transformer. Call once at load, before other threads use SDPA."""
    name = canonical(name)
    if not name:
        return
    heads = model.config.num_attention_heads
    q = torch.randn(1, 16, heads, model.config.attention_head_dim, device=device, dtype=dtype)
    try:
        if name in _SDPA:
            with sdpa_kernel(_SDPA[name]):  # exactly this kernel, once, while no other thread runs SDPA
                torch.nn.functional.scaled_dot_product_attention(*(q.transpose(1, 2),) * 3)
        else:
            from diffusers.models.attention_dispatch import dispatch_attention_fn

            dispatch_attention_fn(q, q, q, backend=name)
    except Exception as e:  # noqa: BLE001 - any failure means: this backend cannot run here
        reason = " ".join(str(e).split())[:200]
        raise ConfigError(f"--attention {name} cannot run on {device} in {str(dtype).replace('torch.', '')}: "
                          f"{type(e).__name__}: {reason}") from None
    if name not in _SDPA:
        model.set_attention_backend(name)

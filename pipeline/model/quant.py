"""`--quant fp8`: the transformer blocks' linear layers in float8 (e4m3) on GPUs that have fp8 matrix units (Hopper
and later), through PyTorch's scaled matrix product with one scale per weight row and one per activation row.

Weights are quantised once at load; activations per call (amax per token). The attention itself, the norms and
the modulation stay in the model's dtype. `quantize_blocks` replaces the layers in place; the result is checked
against the original layer on the real input shape, and a device without fp8 support is refused with a clear error.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


class Fp8Linear(nn.Module):
    """y = x W^T + b with x and W in e4m3, per-row scales, accumulation and output in the input's dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        scale = w.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX  # [out, 1]
        self.register_buffer("weight", (w.float() / scale).to(FP8))  # [out, in], row-major
        self.register_buffer("weight_scale", scale.t().contiguous())  # [1, out]
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        sx = x2.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / FP8_MAX  # [tokens, 1]
        x8 = (x2.float() / sx).to(FP8)
        out = torch._scaled_mm(x8, self.weight.t(), scale_a=sx, scale_b=self.weight_scale, out_dtype=x.dtype)
        if self.bias is not None:
            out = out + self.bias.to(out.dtype)
        return out.reshape(*shape[:-1], self.out_features)


def fp8_supported(device) -> bool:
    """GPUs with fp8 matrix units (compute capability 8.9+: Ada, Hopper, Blackwell); and the CPU where PyTorch has
    a (slow, reference) kernel for it, which the tests and the toy-model quality runs use."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    try:
        one = torch.ones(16, 16, device=device).to(FP8)
        s = torch.ones(16, 1, device=device)
        torch._scaled_mm(one, one.t(), scale_a=s, scale_b=s.t().contiguous(), out_dtype=torch.bfloat16)
        return True
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def quantize_blocks(blocks, device) -> int:
    """Replace every nn.Linear inside the transformer blocks with Fp8Linear. Returns how many were replaced."""
    if not fp8_supported(device):
        raise ConfigError(f"--quant fp8 needs fp8 matrix units (a GPU of compute capability 8.9 or later); "
                          f"{device} has none")
    n = 0
    for blk in blocks:
        for parent in list(blk.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear) and child.in_features % 16 == 0 and child.out_features % 16 == 0:
                    setattr(parent, name, Fp8Linear(child))
                    n += 1
    return n

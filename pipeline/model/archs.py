"""Real Wan architectures with random weights (for benchmarks: the config matters, not the weights)."""
from __future__ import annotations

import zlib

import torch

from ..family import A14B_DEFAULTS, TI2V_DEFAULTS, WAN21, Family

WAN_ARCHS = {
    # Wan2.1-T2V-1.3B: 30 blocks, width 1536, 12 heads
    "wan2.1-1.3b": dict(num_attention_heads=12, attention_head_dim=128, ffn_dim=8960, num_layers=30),
    # Wan2.1-T2V-14B: 40 blocks, width 5120, 40 heads
    "wan2.1-14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
    # Wan2.2-T2V-A14B: two experts (transformer, transformer_2), each of the Wan2.1-14B architecture
    "wan2.2-a14b": dict(num_attention_heads=40, attention_head_dim=128, ffn_dim=13824, num_layers=40),
    # Wan2.2-TI2V-5B: 30 blocks, width 3072, 24 heads, on the Wan 2.2 VAE's 48 latent channels
    "wan2.2-5b": dict(num_attention_heads=24, attention_head_dim=128, ffn_dim=14336, num_layers=30,
                      in_channels=48, out_channels=48),
    # a few-layer stand-in with the same interfaces, for smoke runs of the benchmarks on CPU
    "wan-smoke": dict(num_attention_heads=2, attention_head_dim=16, ffn_dim=64, num_layers=8),
}
EXPERTS = {"wan2.2-a14b": 2}  # architectures with a second (low-noise) expert; boundary_ratio 0.875 (T2V)
A14B_BOUNDARY = 0.875
COMMON = dict(patch_size=(1, 2, 2), in_channels=16, out_channels=16, text_dim=4096, freq_dim=256,
              cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)
# the Wan 2.2 VAE (TI2V-5B): residual blocks, 48 channels, its own 2x2 pixel patch, 16x spatial
WAN22_VAE = dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2,
                 temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12,
                 patch_size=2, scale_factor_temporal=4, scale_factor_spatial=16,
                 # 48 latent statistics, as its config has (diffusers' defaults are Wan 2.1's 16): fixed values
                 # of a trained VAE's size; only their count matters to a random-weight benchmark
                 latents_mean=[0.0] * 48, latents_std=[1.0] * 48)


def arch_config(arch: str) -> dict:
    if arch not in WAN_ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(WAN_ARCHS)}")
    return {**COMMON, **WAN_ARCHS[arch]}


def random_transformer(arch: str, device="cuda", dtype=torch.bfloat16, seed: int = 0, layers=None):
    """A randomly initialised WanTransformer3DModel of a real architecture, in `dtype`, with the modules diffusers
    keeps in float32 (time embedder, norms, modulation tables) kept in float32, as from_pretrained does.
    `layers`: optional (start, stop) to build only that slice of the blocks' weights (others stay on `meta`)."""
    from diffusers import WanTransformer3DModel

    config = arch_config(arch)
    torch.manual_seed(seed)
    with torch.device(device):
        model = WanTransformer3DModel(**config)
    model.to(dtype)
    keep = WanTransformer3DModel._keep_in_fp32_modules
    for name, module in model.named_modules():
        if any(k in name.split(".") for k in keep):
            module.float()
    return model.eval().requires_grad_(False)


def random_transformer_slice(arch: str, layers: tuple[int, int], first: bool, last: bool, device="cuda",
                             dtype=torch.bfloat16, seed: int = 0):
    """Like `random_transformer`, but only this rank's parts are materialised (random values); the rest stays on
    `meta`, as with `pipeline.model.shard.load_transformer_slice` for a real checkpoint. Each tensor's values depend only
    on (seed, its name), so every split of the layers gives the same model."""
    from diffusers import WanTransformer3DModel
    from diffusers.models.transformers.transformer_wan import WanRotaryPosEmbed

    from .shard import owned

    with torch.device("meta"):
        model = WanTransformer3DModel(**arch_config(arch))
    keep = WanTransformer3DModel._keep_in_fp32_modules
    g = torch.Generator(device=device)
    state = {}
    for name, p in model.state_dict().items():
        if not owned(name, layers, first, last):
            continue
        g.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
        want = torch.float32 if any(k in name.split(".") for k in keep) else dtype
        t = (torch.randn(p.shape, generator=g, device=device) * 0.02).to(want)
        if name.endswith("bias"):
            t.zero_()
        elif ("norm" in name and name.endswith("weight")) or p.ndim == 1:
            t.fill_(1.0)
        state[name] = t
    model.load_state_dict(state, strict=False, assign=True)
    cfg = model.config
    with torch.device(device):
        model.rope = WanRotaryPosEmbed(cfg.attention_head_dim, cfg.patch_size, cfg.rope_max_seq_len)
    return model.eval().requires_grad_(False)


def random_wan_vae(device="cuda", dtype=torch.float32, seed: int = 0, wan22: bool = False):
    """The Wan 2.1 VAE architecture (diffusers' defaults for AutoencoderKLWan), or with `wan22` the Wan 2.2 VAE
    (TI2V-5B's), with random weights."""
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    with torch.device(device):
        vae = AutoencoderKLWan(**WAN22_VAE) if wan22 else AutoencoderKLWan()
    return vae.to(dtype).eval().requires_grad_(False)


def arch_family(arch: str) -> Family:
    """The model family of an architecture, as pipeline.family reads it from a folder of that architecture: what an
    in-process benchmark (no folder) gives EngineConfig as `family`."""
    arch_config(arch)  # (an unknown architecture is refused by name)
    if EXPERTS.get(arch, 1) > 1:
        return Family("wan2.2-a14b", experts=("transformer", "transformer_2"), boundary_ratio=A14B_BOUNDARY,
                      defaults=dict(A14B_DEFAULTS))
    if arch == "wan2.2-5b":
        return Family("wan2.2-ti2v", latent_channels=48, vae_spatial=16, expand_timesteps=True,
                      defaults=dict(TI2V_DEFAULTS))
    return WAN21

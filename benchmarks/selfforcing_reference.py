"""Write the fixture that checks the causal engine (pipeline/causal/) against the original Self-Forcing inference.

The original is not part of this repository: fetch https://github.com/guandeh17/Self-Forcing and pass its folder.
Its own code runs here, unchanged, on the CPU in float32: `CausalInferencePipeline.inference` with a
`CausalWanModel` (few layers, random weights). Stubbed are only things that cannot run on a CPU or that it would
download: torch.cuda.current_device (queried at import time by wan/modules/t5.py and demo_utils/memory.py), flash
attention (replaced by the same attention in float32: its CPU fallback computes in bfloat16), the `wan` package's
__init__ (it imports the image-to-video pipeline, which needs torchvision's compiled operators),
the text encoder (replaced by a fixed prompt embedding) and the VAE (unused: latents are returned). The key/value
cache buffers are allocated for the tiny model's head shapes (the original allocates them for 12 heads of 128).

The fixture (tests/fixtures/selfforcing_reference.safetensors) holds the model's weights in the original key layout
(`model.` prefix, as in a Self-Forcing `generator` state dict), the prompt embedding, the initial noise, the
re-noising draws in the order the original made them, and the original's latents for two attention settings:
global attention, and a local window of 9 frames with 3 sink frames (eviction from the fourth chunk on).

    python benchmarks/selfforcing_reference.py --self-forcing /path/to/Self-Forcing
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import types

import torch

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                   "selfforcing_reference.safetensors")
# the tiny causal model (the original's CausalWanModel arguments)
MODEL = dict(model_type="t2v", patch_size=(1, 2, 2), text_len=8, in_dim=16, dim=32, ffn_dim=64, freq_dim=32,
             text_dim=32, out_dim=16, num_heads=2, num_layers=3, qk_norm=True, cross_attn_norm=True, eps=1e-6)
LAT_H, LAT_W = 4, 6  # latent size: 2 x 3 = 6 tokens a frame
CHUNK, CHUNKS = 3, 7  # frames per chunk, chunks generated
CASES = {"global": (-1, 0), "local": (9, 3)}  # local_attn_size (frames, -1: global), sink_size (frames)
STEPS = [1000, 750, 500, 250]
SEED = 20251203


def _import_original(root: str):
    sys.path.insert(0, root)
    torch.cuda.current_device = lambda: 0  # queried at import time (default arguments), never used on the CPU
    memory = types.ModuleType("demo_utils.memory")
    for name in ("gpu", "get_cuda_free_memory_gb", "DynamicSwapInstaller",
                 "move_model_to_device_with_memory_preservation"):
        setattr(memory, name, None)
    sys.modules["demo_utils.memory"] = memory
    wan = types.ModuleType("wan")  # the package without its __init__ (which imports the I2V pipeline)
    wan.__path__ = [os.path.join(root, "wan")]
    sys.modules["wan"] = wan
    import wan.modules.causal_model as causal_model
    import wan.modules.model as wan_model
    from utils.scheduler import FlowMatchScheduler
    from utils.wan_wrapper import WanDiffusionWrapper

    # flash attention (CUDA only; its CPU fallback casts to bfloat16): the same attention in float32
    causal_model.attention = wan_model.flash_attention = _attention_fp32
    CausalWanModel = causal_model.CausalWanModel

    # the original's `pipeline` package would clash with ours by name: load its module from the file
    spec = importlib.util.spec_from_file_location("sf_causal_inference",
                                                  os.path.join(root, "pipeline", "causal_inference.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.CausalInferencePipeline, CausalWanModel, WanDiffusionWrapper, FlowMatchScheduler


def _attention_fp32(q, k, v, q_lens=None, k_lens=None, **_):
    """softmax(q k^T / sqrt(d)) v over [B, L, heads, d] tensors, unmasked (the original passes no lengths here)."""
    if q_lens is not None or k_lens is not None:
        raise RuntimeError("the reference run passes no sequence lengths")
    out = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).contiguous()


def _random_weights(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (the original initialises the head to zero, which would make the test trivial)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * r)
            elif name.endswith("bias"):
                p.copy_(0.05 * r)
            else:
                p.copy_(r * (0.5 / max(1, p.shape[-1] if p.ndim > 1 else 1)) ** 0.5)


class _Text(torch.nn.Module):
    def __init__(self, emb):
        super().__init__()
        self.emb = emb

    def forward(self, text_prompts):
        return {"prompt_embeds": self.emb}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--self-forcing", required=True, help="a checkout of github.com/guandeh17/Self-Forcing")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    torch.set_num_threads(1)
    Pipeline, CausalWanModel, Wrapper, FlowMatchScheduler = _import_original(os.path.abspath(a.self_forcing))

    g = torch.Generator().manual_seed(SEED)
    emb = torch.randn(1, MODEL["text_len"], MODEL["text_dim"], generator=g)
    noise = torch.randn(1, CHUNK * CHUNKS, MODEL["in_dim"], LAT_H, LAT_W, generator=g)
    tensors = {"prompt_embeds": emb, "noise": noise}
    weights = None
    tpf = (LAT_H // 2) * (LAT_W // 2)
    heads, head_dim = MODEL["num_heads"], MODEL["dim"] // MODEL["num_heads"]
    for case, (window, sink) in CASES.items():
        model = CausalWanModel(**MODEL, local_attn_size=window, sink_size=sink).eval()
        _random_weights(model, SEED + 1)
        if weights is None:
            weights = {f"model.{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
        gen = Wrapper.__new__(Wrapper)  # its __init__ loads a checkpoint from disk: set up what it sets up
        torch.nn.Module.__init__(gen)
        gen.model = model
        gen.uniform_timestep = False
        gen.scheduler = FlowMatchScheduler(shift=5.0, sigma_min=0.0, extra_one_step=True)
        gen.scheduler.set_timesteps(1000, training=True)
        gen.seq_len = 32760
        gen.post_init()
        args = types.SimpleNamespace(denoising_step_list=STEPS, warp_denoising_step=True, num_frame_per_block=CHUNK,
                                     independent_first_frame=False, context_noise=0, model_kwargs={})
        vae = types.SimpleNamespace(decode_to_pixel=lambda lat, use_cache=False: torch.zeros(1))
        pipe = Pipeline(args, device="cpu", generator=gen, text_encoder=_Text(emb), vae=vae)
        pipe.num_transformer_blocks = MODEL["num_layers"]
        pipe.frame_seq_length = tpf
        size = (window if window != -1 else CHUNK * CHUNKS) * tpf
        pipe.kv_cache1 = [{"k": torch.zeros(1, size, heads, head_dim), "v": torch.zeros(1, size, heads, head_dim),
                           "global_end_index": torch.tensor([0]), "local_end_index": torch.tensor([0])}
                          for _ in range(MODEL["num_layers"])]
        pipe.crossattn_cache = [{"k": torch.zeros(1, MODEL["text_len"], heads, head_dim),
                                 "v": torch.zeros(1, MODEL["text_len"], heads, head_dim), "is_init": False}
                                for _ in range(MODEL["num_layers"])]
        draws, rg = [], torch.Generator().manual_seed(SEED + 2)
        original = torch.randn_like

        def recorded(t, **kw):
            x = torch.randn(t.shape, generator=rg, dtype=t.dtype)
            draws.append(x.clone())
            return x

        torch.randn_like = recorded
        try:
            with torch.no_grad():
                _, latents = pipe.inference(noise.clone(), ["a prompt"], return_latents=True)
        finally:
            torch.randn_like = original
        if len(draws) != CHUNKS * (len(STEPS) - 1):
            raise SystemExit(f"{case}: expected {CHUNKS * (len(STEPS) - 1)} re-noising draws, got {len(draws)}")
        tensors[f"{case}.latents"] = latents.contiguous()
        tensors[f"{case}.renoise"] = torch.stack(draws).contiguous()  # [chunks * (steps - 1), F, C, h, w]
        print(case, tuple(latents.shape), float(latents.abs().mean()))
    tensors.update(weights)
    from safetensors.torch import save_file

    meta = {"model": json.dumps(MODEL), "cases": json.dumps(CASES), "chunk": str(CHUNK), "chunks": str(CHUNKS),
            "steps": json.dumps(STEPS), "shift": "5.0", "latent": json.dumps([LAT_H, LAT_W])}
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    save_file(tensors, a.out, metadata=meta)
    print("wrote", a.out, os.path.getsize(a.out), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

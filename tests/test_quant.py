"""--quant fp8: float8 linear layers agree with the bf16 ones to fp8 precision and drive the engine."""
import torch
from torch import nn

from pipeline.config import EngineConfig
from pipeline.dualparal.engine import Engine
from pipeline.model.components import load_components
from pipeline.model.quant import Fp8Linear, quantize_blocks
from pipeline.model.text import PromptEncoder


def test_fp8_linear_matches_bf16_to_fp8_precision():
    torch.manual_seed(0)
    lin = nn.Linear(256, 128).to(torch.bfloat16)
    x = torch.randn(3, 50, 256, dtype=torch.bfloat16)
    ref = lin(x).float()
    got = Fp8Linear(lin)(x).float()
    rel = ((got - ref).norm() / ref.norm()).item()
    assert got.shape == ref.shape
    assert 1e-4 < rel < 0.06, rel  # e4m3 keeps 3 mantissa bits: a few percent, never exact


def test_quantized_engine_runs_and_stays_close_to_bf16():
    comps = load_components("tiny", dtype=torch.bfloat16)
    penc = PromptEncoder(comps.tokenizer, comps.text_encoder, comps.text_max_len, dtype=torch.bfloat16)
    cfg = EngineConfig(steps=3, block_frames=2, context_frames=1, dtype="bfloat16", guidance=1.0, seed=2)

    def run():
        eng = Engine(cfg, comps.transformer, comps.scheduler, penc.encode)
        return [fb.latents.float() for _ in range(5) for fb in eng.tick().finished]
    ref = run()
    n = quantize_blocks(comps.transformer.blocks, "cpu")
    assert n == 10 * len(comps.transformer.blocks)  # q, k, v, out of both attentions and the two FFN layers
    got = run()
    assert len(got) == len(ref) >= 2
    for a, b in zip(got, ref):
        assert torch.isfinite(a).all()
        rel = ((a - b).norm() / b.norm()).item()
        assert 1e-4 < rel < 0.2, rel

"""--lora: a LoRA made here is fused into the tiny model's weights by exactly its delta, scale 0 leaves the model
bit for bit, a rank fuses only its own layers' share, and files that do not fit are refused by name."""
import pytest
import torch
from safetensors.torch import save_file

from pipeline.config import ConfigError
from pipeline.model.lora import apply_loras, parse_spec
from pipeline.model.random_wan import build_tiny_components

R = 2


def _lora(tmp_path, modules, name="l.safetensors", layout="diffusers", seed=0):
    model = build_tiny_components()["transformer"]
    g = torch.Generator().manual_seed(seed)
    state, deltas = {}, {}
    for m in modules:
        w = model.get_submodule(m).weight
        a, b = torch.randn(R, w.shape[1], generator=g) * 0.1, torch.randn(w.shape[0], R, generator=g) * 0.1
        if layout == "diffusers":
            state[f"transformer.{m}.lora_A.weight"], state[f"transformer.{m}.lora_B.weight"] = a, b
        else:  # the original Wan layout (diffusion_model.blocks.N.self_attn.q ...)
            orig = m.replace("attn1.to_q", "self_attn.q").replace("attn1.to_k", "self_attn.k")
            state[f"diffusion_model.{orig}.lora_A.weight"], state[f"diffusion_model.{orig}.lora_B.weight"] = a, b
        deltas[m] = b @ a
    path = tmp_path / name
    save_file(state, str(path))
    return str(path), deltas


def _out(model):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 16, 2, 8, 8, generator=g)
    text = torch.randn(1, 8, model.config.text_dim, generator=g)
    with torch.no_grad():
        return model(x, torch.tensor([500]), text, return_dict=False)[0]


def test_fused_weights_move_by_exactly_the_scaled_delta(tmp_path):
    path, deltas = _lora(tmp_path, ["blocks.0.attn1.to_q", "blocks.2.ffn.net.2"])
    base = build_tiny_components()["transformer"]
    model = build_tiny_components()["transformer"]
    assert apply_loras(model, [f"{path}:0.5"]) == 2
    for m, delta in deltas.items():
        want = base.get_submodule(m).weight + 0.5 * delta
        assert torch.allclose(model.get_submodule(m).weight, want, atol=1e-6), m
    assert type(model.get_submodule("blocks.0.attn1.to_q")) is torch.nn.Linear  # fused: no adapter left
    assert (_out(model) - _out(base)).abs().max() > 1e-4


def test_scale_zero_is_the_base_model_bit_for_bit(tmp_path):
    path, _ = _lora(tmp_path, ["blocks.0.attn1.to_q", "blocks.1.attn2.to_v"])
    base = build_tiny_components()["transformer"]
    model = build_tiny_components()["transformer"]
    apply_loras(model, [f"{path}:0"])
    assert torch.equal(_out(model), _out(base))


def test_the_original_wan_layout_is_converted(tmp_path):
    path, deltas = _lora(tmp_path, ["blocks.1.attn1.to_q"], layout="wan")
    base = build_tiny_components()["transformer"]
    model = build_tiny_components()["transformer"]
    assert apply_loras(model, [path]) == 1
    assert torch.allclose(model.blocks[1].attn1.to_q.weight, base.blocks[1].attn1.to_q.weight +
                          deltas["blocks.1.attn1.to_q"], atol=1e-6)


def test_a_rank_fuses_only_its_own_layers(tmp_path):
    path, deltas = _lora(tmp_path, ["blocks.0.attn1.to_q", "blocks.3.attn1.to_q"])
    base = build_tiny_components()["transformer"]
    model = build_tiny_components()["transformer"]
    assert apply_loras(model, [path], layers=(2, 4), first=False, last=True) == 1
    assert torch.equal(model.blocks[0].attn1.to_q.weight, base.blocks[0].attn1.to_q.weight)
    assert not torch.equal(model.blocks[3].attn1.to_q.weight, base.blocks[3].attn1.to_q.weight)


def test_files_that_do_not_fit_are_refused_by_name(tmp_path):
    model = build_tiny_components()["transformer"]
    with pytest.raises(ConfigError, match="no such file"):
        apply_loras(model, [str(tmp_path / "missing.safetensors")])
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="junk.safetensors.*cannot read it as a LoRA"):
        apply_loras(model, [str(tmp_path / "junk.safetensors")])
    save_file({"transformer.blocks.9.attn1.to_q.lora_A.weight": torch.zeros(R, 32),
               "transformer.blocks.9.attn1.to_q.lora_B.weight": torch.zeros(32, R)}, str(tmp_path / "big.safetensors"))
    with pytest.raises(ConfigError, match="does not fit this model.*blocks.9.attn1.to_q"):
        apply_loras(model, [str(tmp_path / "big.safetensors")])
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(R, 7),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, R)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match="bad.safetensors.*does not fit"):
        apply_loras(model, [str(tmp_path / "bad.safetensors")])


def test_specs():
    assert parse_spec("/m/l.safetensors") == ("/m/l.safetensors", 1.0)
    assert parse_spec("/m/l.safetensors:0.7") == ("/m/l.safetensors", 0.7)
    assert parse_spec("C:/weird:name") == ("C:/weird:name", 1.0)


def test_the_daemon_fuses_a_lora_and_refuses_a_bad_one(tmp_path):
    from conftest import DaemonProc

    path, _ = _lora(tmp_path, ["blocks.0.attn1.to_q"])
    d = DaemonProc("--lora", f"{path}:0.8", http=False)
    try:
        d.wait_streaming()
        assert "fusing 1 LoRA(s)" in d.log()
    finally:
        assert d.stop() == 0, d.log()
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    bad = DaemonProc("--lora", str(tmp_path / "junk.safetensors"), http=False)
    try:
        rc = bad.proc.wait(timeout=120)
    finally:
        bad.stop()
    errors = [ln for ln in bad.log().splitlines() if " ERROR " in ln]
    assert rc == 2 and len(errors) == 1 and "junk.safetensors" in errors[0] and "cannot read it as a LoRA" in errors[0]


def test_a_slice_with_the_other_layers_on_meta_takes_its_share(tmp_path):
    from pipeline.model.components import load_components, save_components
    from pipeline.model.shard import load_transformer_slice

    save_components(load_components("tiny"), tmp_path / "m")
    path, deltas = _lora(tmp_path, ["blocks.0.attn1.to_q", "blocks.3.ffn.net.2"])
    part = load_transformer_slice(str(tmp_path / "m"), (2, 4), first=False, last=True, device="cpu",
                                  dtype=torch.float32)
    before = part.blocks[3].ffn.net[2].weight.clone()
    assert part.blocks[0].attn1.to_q.weight.device.type == "meta"
    assert apply_loras(part, [path], (2, 4), first=False, last=True) == 1
    assert torch.allclose(part.blocks[3].ffn.net[2].weight, before + deltas["blocks.3.ffn.net.2"], atol=1e-6)
    assert part.blocks[0].attn1.to_q.weight.device.type == "meta"  # untouched, still not materialised

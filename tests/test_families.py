"""Every Wan checkpoint DualParal serves, on tiny random models built in code: Wan 2.2 A14B's two experts (routed by
each window's timestep, as diffusers' WanPipeline routes them), Wan 2.2 TI2V-5B as text-to-video (48-channel
16x VAE), and the folders that cannot be served, refused by name."""
import json
import os
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp
from diffusers import WanPipeline
from safetensors.torch import load_file, save_file

from conftest import free_port
from pipeline.config import ConfigError, EngineConfig
from pipeline.decoders.wan_vae import StreamingDecoder
from pipeline.dualparal.engine import Engine
from pipeline.family import describe_folder, expert_for
from pipeline.model.components import load_components, save_components
from pipeline.model.text import PromptEncoder
from pipeline.model.random_wan import TINY_TEXT_MAX_LEN, build_tiny_components
from test_ranks import _drive, _rank_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    for fam in ("wan2.2-a14b", "wan2.2-ti2v"):
        path = tmp_path_factory.mktemp(fam)
        save_components(build_tiny_components(0, fam), path)
        out[fam] = str(path)
    return out


def _encode(comps):
    return PromptEncoder(comps.tokenizer, comps.text_encoder, comps.text_max_len).encode


def _blocks(folder, ticks, **kw):
    """Finished blocks {index: latents} of an engine on the folder's model (one rank, CPU, float32)."""
    comps = load_components(folder)
    cfg = EngineConfig(**{"model": folder, "steps": 4, "block_frames": 2, "context_frames": 1, "seed": 3,
                          "guidance": 5.0, **kw})
    eng = Engine(cfg, comps.transformers, comps.scheduler, _encode(comps))
    routed = []
    submit = eng.pipe.submit
    eng.pipe.submit = lambda meta, carry: (routed.append(meta.expert), submit(meta, carry))[1]
    out = {}
    for _ in range(ticks):
        for fb in eng.tick().finished:
            out[fb.index] = fb.latents
    return out, eng, comps, routed


def _reference(comps, eng, block, guidance, guidance_2=None, boundary="folder"):
    """diffusers' WanPipeline denoising the block's own noise (no context) on the same components."""
    fam = describe_folder(eng.cfg.model)
    pipe = WanPipeline(tokenizer=comps.tokenizer, text_encoder=comps.text_encoder, transformer=comps.transformer,
                       transformer_2=comps.transformer_2, vae=comps.vae, scheduler=comps.scheduler,
                       boundary_ratio=fam.boundary_ratio if boundary == "folder" else boundary,
                       expand_timesteps=fam.expand_timesteps)
    enc = eng.conds._encode
    kw = {"guidance_scale_2": guidance_2} if guidance_2 is not None else {}
    lat = eng.noise.block_noise(block)
    return pipe(prompt_embeds=enc(eng.cfg.prompt), negative_prompt_embeds=enc(eng.cfg.negative_prompt),
                latents=lat.clone(), num_frames=4 * (lat.shape[2] - 1) + 1, height=eng.cfg.height,
                width=eng.cfg.width, num_inference_steps=4, guidance_scale=guidance, output_type="latent",
                max_sequence_length=TINY_TEXT_MAX_LEN, **kw).frames


def test_the_folders_describe_their_families(folders):
    a14b, ti2v = describe_folder(folders["wan2.2-a14b"]), describe_folder(folders["wan2.2-ti2v"])
    assert a14b.name == "wan2.2-a14b" and a14b.experts == ("transformer", "transformer_2")
    assert a14b.boundary_ratio == 0.875 and a14b.size_multiple == 16
    assert ti2v.name == "wan2.2-ti2v" and ti2v.latent_channels == 48 and ti2v.vae_spatial == 16
    assert ti2v.size_multiple == 32 and ti2v.defaults["height"] == 704 and ti2v.defaults["width"] == 1280
    assert a14b.defaults == {"flow_shift": 12.0, "guidance": 4.0, "fps": 16.0}  # Wan2.2's own
    assert expert_for(875.0, 875.0) == 0 and expert_for(874.9, 875.0) == 1 and expert_for(10.0, None) == 0


def test_a_hub_error_is_worded_in_one_whole_sentence():
    """--model with a hub id that cannot be read: the hub's error goes into the one log line whole (its first
    sentence), never cut mid-word ("...for the specified revision on")."""
    from pipeline.family import _short

    long = ("Cannot find an appropriate cached snapshot folder for the specified revision on the local disk and "
            "outgoing traffic has been disabled. To enable repo look-ups and downloads online, set "
            "'HF_HUB_OFFLINE=0' as environment variable.")
    assert _short(long) == long.split(". ")[0] + "."
    assert _short("  short\n  error ") == "short error"
    cut = _short("word " * 100)
    assert cut.endswith("word …") and len(cut) <= 242


def test_two_experts_equal_diffusers_wan_pipeline_with_both_guidance_scales(folders):
    got, eng, comps, routed = _blocks(folders["wan2.2-a14b"], 4 + 2, context_frames=0, guidance_2=3.0)
    assert set(routed) == {0, 1}  # both experts ran: timesteps on both sides of 875
    for b in (0, 2):
        ref = _reference(comps, eng, b, 5.0, 3.0)
        diff = (got[b] - ref).abs().max().item()
        assert diff < 1e-4, diff  # CFG batched here, separate in WanPipeline: float32 rounding only


def test_the_second_expert_matters_unless_the_boundary_is_zero(folders, tmp_path):
    base, _, _, _ = _blocks(folders["wan2.2-a14b"], 5)
    changed = str(tmp_path / "changed")
    c = build_tiny_components(0, "wan2.2-a14b")
    with torch.no_grad():
        for p in c["transformer_2"].parameters():
            p.add_(torch.randn_like(p) * 0.05)
    save_components(c, changed)
    other, _, _, _ = _blocks(changed, 5)
    assert all((other[b] - base[b]).abs().max() > 1e-3 for b in base)
    # boundary 0: every timestep >= 0, so transformer_2 never runs: its weights change nothing
    zero_base, _, _, routed = _blocks(folders["wan2.2-a14b"], 5, boundary_ratio=0.0)
    zero_other, _, _, _ = _blocks(changed, 5, boundary_ratio=0.0)
    assert set(routed) == {0}
    assert all(torch.equal(zero_other[b], zero_base[b]) for b in zero_base)


def test_ti2v_block_equals_diffusers_wan_pipeline_with_expanded_timesteps(folders):
    got, eng, comps, _ = _blocks(folders["wan2.2-ti2v"], 4 + 2, context_frames=0, height=64, width=96)
    assert got[0].shape == (1, 48, 2, 4, 6)  # 16x spatial
    for b in (0, 2):
        diff = (got[b] - _reference(comps, eng, b, 5.0)).abs().max().item()
        assert diff < 1e-4, diff


def test_ti2v_streaming_decode_equals_the_vae_decode(folders):
    vae = load_components(folders["wan2.2-ti2v"], parts=("vae",)).vae
    g = torch.Generator().manual_seed(0)
    blocks = [torch.randn(1, 48, 2, 3, 4, generator=g) for _ in range(3)]
    dec = StreamingDecoder(vae)
    got = torch.cat([dec.decode_block_float(b) for b in blocks], dim=2)
    z = torch.cat(blocks, dim=2)
    shape = (1, 48, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape)
    std = torch.tensor(vae.config.latents_std).view(shape)
    with torch.no_grad():
        ref = vae.decode(z * std + mean).sample
    assert got.shape == ref.shape == (1, 3, 4 * 6 - 3, 48, 64)  # 16x: the VAE's own 2x2 patch undone
    assert (got - ref).abs().max().item() < 1e-5


@pytest.mark.parametrize("family, extra", [("wan2.2-a14b", {"guidance_2": 3.0}),
                                           ("wan2.2-ti2v", {"height": 64, "width": 64})])
def test_w_equals_one_rank_for_the_wan22_families(family, extra, folders, tmp_path):
    folder = folders[family]
    comps = load_components(folder)
    base = dict(model=folder, steps=4, block_frames=2, context_frames=1, seed=11, guidance=5.0, **extra)
    ref = _drive(Engine(EngineConfig(**base), comps.transformers, comps.scheduler, _encode(comps)))
    cfg = EngineConfig(**base, extra={"scratch": str(tmp_path)})
    mp.spawn(_rank_main, args=(2, free_port(), cfg.to_json(), str(tmp_path)), nprocs=2, join=True)
    got = load_file(str(tmp_path / "latents.safetensors"))
    blocks = sorted(int(k[1:]) for k in got if k.startswith("b"))
    assert blocks == sorted(ref) and len(blocks) >= 6
    for b in blocks:
        assert torch.equal(got[f"b{b}"], ref[b][0]), f"block {b} differs at W=2"


def _lora_file(tmp_path, module="blocks.1.attn1.to_q"):
    model = build_tiny_components()["transformer"]
    w = model.get_submodule(module).weight
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(2, w.shape[1], generator=g) * 0.1, torch.randn(w.shape[0], 2, generator=g) * 0.1
    path = str(tmp_path / "low.safetensors")
    save_file({f"transformer.{module}.lora_A.weight": a, f"transformer.{module}.lora_B.weight": b}, path)
    return path, module


def test_a_lora_for_one_expert_changes_only_that_expert(folders, tmp_path):
    from pipeline.model.lora import apply_loras

    path, module = _lora_file(tmp_path)
    comps = load_components(folders["wan2.2-a14b"])
    before = [m.get_submodule(module).weight.clone() for m in comps.transformers]
    for i, m in enumerate(comps.transformers):
        apply_loras(m, [f"{path}@low"], expert=i, experts=2)
    after = [m.get_submodule(module).weight for m in comps.transformers]
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    with pytest.raises(ConfigError, match="@low names an expert"):
        EngineConfig(model="tiny", lora=[f"{path}@low"]).validate()
    with pytest.raises(ConfigError, match="two experts"):
        EngineConfig(model="tiny", guidance_2=3.0).validate()


def _serve(folder, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", "streamer", "serve", "--model", folder, *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, env=env)
    return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip()]


def _edit(folder, tmp_path, name, change):
    """A copy of the folder (by symlinks) whose JSON file `name` was changed by `change(dict)`."""
    out = tmp_path / "edited"
    for root, dirs, files in os.walk(folder):
        rel = os.path.relpath(root, folder)
        os.makedirs(out / rel, exist_ok=True)
        for f in files:
            os.symlink(os.path.join(root, f), out / rel / f)
    target = out / name
    data = json.loads(target.read_text())
    change(data)
    target.unlink()
    target.write_text(json.dumps(data))
    return str(out)


SERVED_THROUGH_THE_CLI = ("unsupported pipeline", "mismatched VAE")  # the others: describe_folder alone (faster)


@pytest.mark.parametrize("name, change, needle", [
    ("model_index.json", lambda d: d.update(_class_name="WanImageToVideoPipeline"),
     "unsupported pipeline 'WanImageToVideoPipeline'"),
    ("model_index.json", lambda d: d.update(image_encoder=["transformers", "CLIPVisionModel"]),
     "image-to-video checkpoint with a CLIP image encoder"),
    ("model_index.json", lambda d: d.update(transformer=["diffusers", "SkyReelsV2Transformer3DModel"]),
     "unsupported transformer class 'SkyReelsV2Transformer3DModel'"),
    ("vae/config.json", lambda d: d.update(z_dim=48, latents_mean=[0.0] * 48, latents_std=[1.0] * 48),
     "mismatched VAE: transformer has in_channels=16 but the VAE's latents have 48 channels"),
    ("vae/config.json", lambda d: d.update(latents_mean=[0.0] * 48),
     "mismatched VAE: latents_mean has 48 entries but the VAE's latents have 16 channels"),
    ("model_index.json", lambda d: d.update(transformer_2=[None, None]),
     "boundary_ratio 0.875 names a second expert, but the folder has no transformer_2"),
    ("transformer/config.json", lambda d: d.update(image_dim=1280), "image-to-video transformer"),
])
def test_a_folder_that_cannot_be_served_is_refused_by_name(name, change, needle, folders, tmp_path):
    folder = _edit(folders["wan2.2-a14b"], tmp_path, name, change)
    with pytest.raises(ConfigError) as e:
        describe_folder(folder)
    assert needle in str(e.value)
    if needle.startswith(SERVED_THROUGH_THE_CLI):  # `streamer serve` stops with that one line, exit 2
        code, lines = _serve(folder)
        assert code == 2 and len(lines) == 1 and needle in lines[0], lines


def test_ti2v_sizes_are_multiples_of_32_and_default_to_704x1280(folders):
    from pipeline.resolve import resolve

    cfg, values = resolve({"model": folders["wan2.2-ti2v"]})
    assert (cfg.height, cfg.width, cfg.fps) == (704, 1280, 24.0)
    assert (cfg.latent_height, cfg.latent_width) == (44, 80)
    with pytest.raises(ConfigError, match="multiple of 32 for a wan2.2-ti2v model"):
        resolve({"model": folders["wan2.2-ti2v"], "height": 48})


@pytest.mark.parametrize("family, args, size", [
    ("wan2.2-a14b", ("--ranks", "2", "--guidance-2", "3"), (64, 64)),  # each rank: its slice of both experts
    ("wan2.2-ti2v", ("--height", "64", "--width", "96"), (96, 64)),  # Wan 2.2 VAE, 16x: 4x6 latents
])
def test_the_daemon_streams_a_wan22_folder(family, args, size, folders, tmp_path):
    from conftest import DaemonProc
    from test_daemon_ranks_equal import y4m_frames

    out = tmp_path / "out.y4m"
    with open(out, "wb") as f:
        d = DaemonProc("--stdout", "y4m", *args, http=False, stdout=f, model=folders[family])
        d.wait_streaming()
        st = d.wait_status(lambda s: s["blocks_published"] >= 2, "2 published blocks")
        assert d.stop() == 0, d.log()
    assert st["config"]["family"] == family and st["config"]["experts"] == (2 if family == "wan2.2-a14b" else 1)
    data = out.read_bytes()
    header = data.partition(b"\n")[0]
    assert f" W{size[0]} H{size[1]} ".encode() in header, header
    frames = y4m_frames(data)
    assert len(frames) >= 5 + 8 and len(set(frames)) > 1


def test_an_architecture_has_the_family_its_folder_would_have(folders):
    """benchmarks without a folder (engine_gpu.py) give EngineConfig the family of the architecture: the same as
    pipeline.family reads from a folder of that layout (the tiny folders here have Wan 2.2's layouts)."""
    from pipeline.family import describe_folder
    from pipeline.model.archs import arch_family

    for arch, fam in (("wan2.2-a14b", "wan2.2-a14b"), ("wan2.2-5b", "wan2.2-ti2v")):
        want = describe_folder(folders[fam]).to_dict()
        got = arch_family(arch).to_dict()
        assert {k: v for k, v in got.items() if k != "guidance_2"} == \
            {k: v for k, v in want.items() if k != "guidance_2"}, arch
    assert arch_family("wan2.1-1.3b").name == "wan2.1"
    # the full-size random folder benchmarks/daemon_gpu.py writes for the 5B passes the same checks (its VAE
    # config once kept diffusers' 16 Wan 2.1 statistics for 48 channels, and the daemon stopped at its start)
    from pipeline.family import _family
    from pipeline.model.archs import WAN22_VAE, arch_config

    fam = _family("5b", {"_class_name": "WanPipeline", "expand_timesteps": True},
                  {"transformer": arch_config("wan2.2-5b")}, dict(WAN22_VAE))
    assert fam.to_dict() == arch_family("wan2.2-5b").to_dict()
    with pytest.raises(ValueError, match="unknown architecture"):
        arch_family("wan3")

"""The causal engine against the original Self-Forcing inference code: tests/fixtures/selfforcing_reference.
safetensors holds what the original (github.com/guandeh17/Self-Forcing, run by benchmarks/selfforcing_reference.py
on a tiny random causal model, float32, CPU) made from a prompt embedding and noise; the engine, given the same
weights (converted from the original key layout), embedding and noise, must make the same latents chunk by chunk,
with global attention and with a local window and sink frames."""
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from diffusers import WanTransformer3DModel
from safetensors.torch import load_file

from pipeline.causal.cache import KVCache, positions, window
from pipeline.causal.convert import load_converted, read_checkpoint, to_diffusers
from pipeline.causal.engine import CausalEngine
from pipeline.causal.schedule import FlowTable
from pipeline.config import ConfigError, EngineConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "selfforcing_reference.safetensors")


@pytest.fixture(scope="module")
def ref():
    with safe_open(FIXTURE, framework="pt") as f:
        meta = f.metadata()
    return load_file(FIXTURE), {k: json.loads(v) for k, v in meta.items()}


def _model(tensors, meta):
    m = meta["model"]
    config = dict(patch_size=tuple(m["patch_size"]), num_attention_heads=m["num_heads"],
                  attention_head_dim=m["dim"] // m["num_heads"], in_channels=m["in_dim"], out_channels=m["out_dim"],
                  text_dim=m["text_dim"], freq_dim=m["freq_dim"], ffn_dim=m["ffn_dim"], num_layers=m["num_layers"],
                  cross_attn_norm=m["cross_attn_norm"], qk_norm="rms_norm_across_heads", eps=m["eps"],
                  rope_max_seq_len=1024)
    state = {k: v for k, v in tensors.items() if k.startswith("model.")}
    return load_converted(to_diffusers({k[len("model."):]: v for k, v in state.items()}), config, "fixture")


def _engine(tensors, meta, case, **kw):
    window_frames, sink = meta["cases"][case]
    chunk, chunks = meta["chunk"], meta["chunks"]
    context = chunk * chunks if window_frames == -1 else window_frames - sink - chunk
    h, w = meta["latent"]
    cfg = EngineConfig(engine="causal", height=8 * h, width=8 * w, steps=len(meta["steps"]), block_frames=chunk,
                       flow_shift=meta["shift"], guidance=1.0, context_frames=context, sink_frames=sink, **kw)
    noise, renoise = tensors["noise"], tensors[f"{case}.renoise"]
    steps = len(meta["steps"])

    def supply(block, step):
        if step == 0:
            return noise[:, block * chunk:(block + 1) * chunk].permute(0, 2, 1, 3, 4)
        return renoise[block * (steps - 1) + step - 1].unsqueeze(0).permute(0, 2, 1, 3, 4)  # drawn [F, C, h, w]

    emb = tensors["prompt_embeds"]
    return CausalEngine(cfg, _model(tensors, meta), lambda text: emb, noise=supply)


@pytest.mark.parametrize("case", ["global", "local"])
def test_chunks_equal_the_original_self_forcing_inference(case, ref):
    tensors, meta = ref
    eng = _engine(tensors, meta, case)
    want = tensors[f"{case}.latents"].permute(0, 2, 1, 3, 4)  # [1, C, F, h, w]
    chunk = meta["chunk"]
    for b in range(meta["chunks"]):
        got = eng.tick().finished[0].latents
        diff = (got - want[:, :, b * chunk:(b + 1) * chunk]).abs().max().item()
        assert diff <= 1e-4, f"{case}: chunk {b} differs by {diff}"
    # the window really was local: the cache holds the sinks and the last frames only
    if case == "local":
        assert eng.cache.frames() == [0, 1, 2, 18, 19, 20]


def test_the_fixture_tells_global_from_local_attention(ref):
    tensors, _ = ref
    g, loc = tensors["global.latents"], tensors["local.latents"]
    assert torch.equal(g[:, :9], loc[:, :9])  # the window is not full before the fourth chunk
    assert (g[:, 9:] - loc[:, 9:]).abs().max() > 1e-3  # after it, eviction changes the picture


def test_the_recipe_timesteps():
    table = FlowTable(5.0)
    ts = table.denoising_timesteps(4)
    assert torch.allclose(ts, torch.tensor([1000.0, 937.5, 833.3333, 625.0]), atol=1e-3)
    x, v = torch.randn(2, 3), torch.randn(2, 3)
    assert torch.allclose(table.to_x0(v, x, ts[1]), x - 0.9375 * v, atol=1e-6)


def test_windows_and_positions_stay_inside_the_rotary_table():
    assert window(9, 3, 3).frames == (0, 1, 2, 6, 7, 8)
    assert window(3, 3, 3).frames == (0, 1, 2)  # sinks not repeated among the recent frames
    assert window(0, 3, 3).frames == ()
    # far beyond the table: the window and the block move back, sinks stay at the start, distances kept
    cached, own = positions((0, 1, 2, 5997, 5998, 5999), [6000, 6001, 6002], 3, 1024)
    assert cached[:3] == [0, 1, 2] and own[-1] == 1023 and cached[3:] == [1018, 1019, 1020]
    assert own == [1021, 1022, 1023]


def test_memory_stays_flat_over_many_blocks(ref):
    """A long stream (far past the 21 frames the original could make, and past the rotary table's 1024 frames with
    a short table) holds the same number of cached frames from the window's filling on."""
    tensors, meta = ref
    eng = _engine(tensors, meta, "local")
    eng.noise = eng._seeded_noise
    eng.model.rope.max_seq_len = 40  # a short rotary table: positions must be re-indexed after ~13 blocks
    sizes = []
    for _ in range(20):
        eng.tick()
        sizes.append(sum(len(layer) for layer in eng.cache.layers))
    assert len(set(sizes[2:])) == 1 and eng.block == 20
    assert torch.isfinite(eng.tick().finished[0].latents).all()


def test_warm_up_runs_every_cache_length_and_changes_no_latent(ref):
    """--compile's warm-up (every cache length before the first frame) leaves the stream bitwise as it was."""
    tensors, meta = ref
    plain, warmed = _engine(tensors, meta, "local"), _engine(tensors, meta, "local")
    assert warmed.warm_up() == 3  # cache lengths 0, 3 and 6 frames (3 sinks + 3 recent): then it stays 6
    assert warmed.cache.frames() == [0, 1, 2, 6, 7, 8] and warmed.block == 0
    for b in range(5):
        want, got = plain.tick().finished[0], warmed.tick().finished[0]
        assert got.index == want.index == b and torch.equal(got.latents, want.latents)
    assert warmed.cache.frames() == plain.cache.frames()


def test_prompt_changes_recache_and_cuts_start_a_new_shot(ref):
    tensors, meta = ref
    embs = {"a": tensors["prompt_embeds"], "b": tensors["prompt_embeds"].flip(-1)}  # flip(1): the same prompt
    eng = _engine(tensors, meta, "local", prompt="a")
    eng.conds._encode = lambda text: embs[text]
    base = [eng.tick().finished[0] for _ in range(4)]
    eng.submit_prompt("b", "soft")
    soft = eng.tick()
    assert soft.applied and soft.finished[0].cond.prompt == "b" and eng.stats["recache_ms"] > 0
    same = _engine(tensors, meta, "local", prompt="a")  # the same stream without the change
    same.conds._encode = lambda text: embs[text]
    unchanged = [same.tick().finished[0] for _ in range(5)]
    assert all(torch.equal(x.latents, y.latents) for x, y in zip(unchanged, base))
    assert not torch.allclose(unchanged[4].latents, soft.finished[0].latents, atol=1e-3)  # the change shows
    eng.submit_prompt("a", "cut")
    cut = eng.tick()
    assert cut.finished[0].shot_start and eng.shot == 5 and eng.cache.frames() == [0, 1, 2]
    # a new shot starts like the stream did: block 5 of the new shot equals a fresh stream's first block, given
    # the same noise
    fresh = _engine(tensors, meta, "local", prompt="a")
    fresh.noise = lambda block, step: eng.noise(block + 5, step)
    assert torch.equal(fresh.tick().finished[0].latents, cut.finished[0].latents)
    assert not torch.equal(base[0].latents, cut.finished[0].latents)


def test_bad_causal_settings_are_refused():
    with pytest.raises(ConfigError, match="without classifier-free guidance"):
        EngineConfig(engine="causal", guidance=5.0).validate()
    with pytest.raises(ConfigError, match="is for the DualParal engine"):
        EngineConfig(engine="causal", guidance=1.0, reuse_context=True).validate()


def test_a_checkpoint_in_the_original_layout_converts_and_a_wrong_one_is_refused(ref, tmp_path):
    tensors, meta = ref
    state = {k: v for k, v in tensors.items() if k.startswith("model.")}
    path = str(tmp_path / "ckpt.pt")
    torch.save({"generator_ema": state, "step": torch.tensor(3)}, path)
    got = read_checkpoint(path)
    assert set(got) == {k[len("model."):] for k in state}
    model = _model(tensors, meta)
    bad = to_diffusers(got)
    bad.pop("blocks.0.attn1.to_q.weight")
    with pytest.raises(ConfigError, match="missing 1"):
        load_converted(bad, dict(model.config), "ckpt.pt")
    with pytest.raises(ConfigError, match="not a Wan transformer"):
        torch.save({"generator": {"x": torch.zeros(1)}}, str(tmp_path / "x.pt"))
        read_checkpoint(str(tmp_path / "x.pt"))


def _base_folder(tmp_path, meta, layers=None):
    """The tiny model's folder with a transformer of the fixture's architecture (`layers` to make it differ)."""
    from pipeline.model.components import save_components
    from pipeline.model.random_wan import build_tiny_components

    m = meta["model"]
    comps = build_tiny_components()
    comps["transformer"] = WanTransformer3DModel(
        patch_size=tuple(m["patch_size"]), num_attention_heads=m["num_heads"],
        attention_head_dim=m["dim"] // m["num_heads"], in_channels=m["in_dim"], out_channels=m["out_dim"],
        text_dim=m["text_dim"], freq_dim=m["freq_dim"], ffn_dim=m["ffn_dim"], num_layers=layers or m["num_layers"],
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=m["eps"], rope_max_seq_len=1024)
    path = tmp_path / f"base{layers or ''}"
    save_components(comps, path)
    return str(path)


def _convert(*args):
    r = subprocess.run([sys.executable, "-m", "streamer", "convert", *args], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    return r.returncode, [ln for ln in r.stderr.splitlines() if ln.strip()], r.stdout


def test_convert_then_serve_a_causal_checkpoint_with_the_daemon(ref, tmp_path):
    from conftest import DaemonProc
    from test_daemon_ranks_equal import y4m_frames

    tensors, meta = ref
    ckpt = str(tmp_path / "self_forcing.pt")
    torch.save({"generator_ema": {k: v for k, v in tensors.items() if k.startswith("model.")}}, ckpt)
    # a base of another architecture is refused by name, and nothing is written
    code, lines, _ = _convert(ckpt, "--base", _base_folder(tmp_path, meta, layers=4), "--out", str(tmp_path / "x"))
    assert code == 2 and len(lines) == 1 and "does not fit the base model's transformer: missing" in lines[0], lines
    assert not (tmp_path / "x").exists()
    out = str(tmp_path / "causal")
    from pipeline.causal.convert import convert

    assert convert(ckpt, _base_folder(tmp_path, meta), out) == out  # what `streamer convert` runs
    assert json.loads((tmp_path / "causal" / "streamer.json").read_text())["engine"] == "causal"
    rec = tmp_path / "out.y4m"
    with open(rec, "wb") as f:
        d = DaemonProc("--stdout", "y4m", http=False, stdout=f, model=out)
        d.wait_streaming()
        st = d.wait_status(lambda s: s["blocks_published"] >= 3, "3 published blocks")
        assert d.stop() == 0, d.log()
    frames = y4m_frames(rec.read_bytes())
    assert len(frames) >= 9 + 12 and len(set(frames)) > 1  # blocks of 3 latent frames: 9 video frames, then 12
    assert st["config"]["engine"] == "causal" and not st["config"]["stream_batch"], st["config"]
    # the same folder as a stream batch; a soft change waited for on the stream (streamer prompt --wait)
    d = DaemonProc("--stream-batch", model=out)
    try:
        d.wait_streaming()
        r = subprocess.run([sys.executable, "-m", "clients", "prompt", "a blue square moving up", "--wait",
                            "--control", d.control], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0 and "on the stream at block" in r.stdout, r.stdout + r.stderr
        st = d.wait_status(lambda s: s["blocks_published"] >= 6, "6 published blocks")
        assert st["config"]["stream_batch"] and st["epoch"] == 1, st
    finally:
        assert d.stop() == 0, d.log()


def _drive_causal(eng):
    """Seven blocks with a soft change (the sequential engine: a re-cache) before tick 3 and a cut before tick 5."""
    out, tick = {}, 0
    while len(out) < 7:
        if tick == 3:
            eng.submit_prompt("a blue square moving up", "soft")
        if tick == 5:
            eng.submit_prompt("a white star moving down", "cut")
        for fb in eng.tick().finished:
            out[fb.index] = fb.latents
        tick += 1
    return out


def _engine_kind(cfg):
    from pipeline.causal.stream import CausalStreamEngine

    return CausalStreamEngine if cfg.stream_batch else CausalEngine


def _causal_rank_main(rank, world, port, cfg_json, out_dir):
    from conftest import start_rank

    started = start_rank(rank, world, port, cfg_json)
    if started is None:  # ranks 1..: served until rank 0 said stop
        return
    import torch.distributed as dist

    from pipeline.model.components import load_components
    from pipeline.model.text import PromptEncoder

    cfg, models, layers = started
    c = load_components(cfg.model, parts=("text",))
    encode = PromptEncoder(c.tokenizer, c.text_encoder, c.text_max_len).encode
    eng = _engine_kind(cfg)(cfg, models[0], encode, world=world, layers=layers)
    res = _drive_causal(eng)
    eng.close()
    from safetensors.torch import save_file

    save_file({f"b{k}": v.contiguous() for k, v in res.items()}, os.path.join(out_dir, "latents.safetensors"))
    dist.destroy_process_group()


@pytest.mark.parametrize("stream_batch", [False, True], ids=["sequential", "stream-batch"])
def test_two_ranks_make_what_one_makes(ref, tmp_path, stream_batch):
    import torch.multiprocessing as mp

    from conftest import free_port
    from pipeline.model.components import load_components
    from pipeline.model.text import PromptEncoder

    tensors, meta = ref
    ckpt = str(tmp_path / "sf.safetensors")
    from safetensors.torch import save_file

    save_file({k: v for k, v in tensors.items() if k.startswith("model.")}, ckpt)
    from pipeline.causal.convert import convert

    folder = convert(ckpt, _base_folder(tmp_path, meta), str(tmp_path / "causal"), recipe={"context_frames": 3,
                                                                                          "sink_frames": 3})
    base = dict(model=folder, engine="causal", steps=4, block_frames=3, flow_shift=5.0, guidance=1.0,
                context_frames=3, sink_frames=3, seed=5, stream_batch=stream_batch)
    c = load_components(folder)
    one = EngineConfig(**base)
    ref_out = _drive_causal(_engine_kind(one)(one, c.transformer,
                                              PromptEncoder(c.tokenizer, c.text_encoder, c.text_max_len).encode))
    cfg = EngineConfig(**base, ranks=2, extra={"scratch": str(tmp_path)})
    mp.spawn(_causal_rank_main, args=(2, free_port(), cfg.to_json(), str(tmp_path)), nprocs=2, join=True)
    got = load_file(str(tmp_path / "latents.safetensors"))
    assert sorted(int(k[1:]) for k in got) == sorted(ref_out) == list(range(7))
    for b, lat in ref_out.items():
        assert torch.equal(got[f"b{b}"], lat), f"block {b} differs at W=2"


def test_a_longlive_style_lora_in_the_original_layout_is_merged_before_conversion(ref, tmp_path):
    from pipeline.causal.convert import convert

    tensors, meta = ref
    ckpt = str(tmp_path / "sf.safetensors")
    from safetensors.torch import save_file

    save_file({k: v for k, v in tensors.items() if k.startswith("model.")}, ckpt)
    w = tensors["model.blocks.1.self_attn.q.weight"]
    g = torch.Generator().manual_seed(9)
    a, b = torch.randn(4, w.shape[1], generator=g) * 0.1, torch.randn(w.shape[0], 4, generator=g) * 0.1
    lora = str(tmp_path / "lora.pt")
    torch.save({"generator_lora": {"base_model.model.blocks.1.self_attn.q.lora_A.weight": a,
                                   "base_model.model.blocks.1.self_attn.q.lora_B.weight": b}}, lora)
    out = convert(ckpt, _base_folder(tmp_path, meta), str(tmp_path / "ll"), lora=[f"{lora}:0.5"])
    got = WanTransformer3DModel.from_pretrained(os.path.join(out, "transformer")).state_dict()
    assert torch.allclose(got["blocks.1.attn1.to_q.weight"], w + 0.5 * (b @ a), atol=1e-6)
    assert torch.equal(got["blocks.0.attn1.to_q.weight"], tensors["model.blocks.0.self_attn.q.weight"])
    torch.save({"generator_lora": {"blocks.9.self_attn.q.lora_A.weight": a,
                                   "blocks.9.self_attn.q.lora_B.weight": b}}, lora)
    with pytest.raises(ConfigError, match="has no weight in the checkpoint"):
        convert(ckpt, _base_folder(tmp_path, meta, layers=3), str(tmp_path / "bad"), lora=[lora])

"""Dual parallelism on CPU with gloo: W ranks give exactly the W=1 output; each rank holds only its slice."""
import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from conftest import free_port, start_rank
from pipeline.config import EngineConfig
from pipeline.dualparal.engine import Engine
from pipeline.model.components import load_components
from pipeline.model.shard import materialised
from pipeline.model.text import PromptEncoder

CFG = dict(steps=4, block_frames=2, context_frames=1, seed=11, guidance=5.0)
TICKS = 16


def _drive(engine):
    """The same prompt schedule for every W: a soft change at block 2, a cut at block 5."""
    out = {}
    for t in range(TICKS):
        if t == 1:
            engine.submit_prompt("a blue square moving up", "soft", at_block=2)
            engine.submit_prompt("a white star moving down", "cut", at_block=5)
        for fb in engine.tick().finished:
            out[fb.index] = (fb.latents, fb.cond.epoch)
    for fb in engine.drain():
        out[fb.index] = (fb.latents, fb.cond.epoch)
    return out


def _encoder(cfg):
    c = load_components("tiny", parts=("text",))
    return PromptEncoder(c.tokenizer, c.text_encoder, c.text_max_len).encode, c.scheduler


def _rank_main(rank, world, port, cfg_json, out_dir):
    started = start_rank(rank, world, port, cfg_json)
    if started is None:  # ranks 1..: served until rank 0 said stop
        return
    import torch.distributed as dist

    cfg, models, layers = started
    model = models if len(models) > 1 else models[0]  # a two-expert model: both experts' slices
    encode, scheduler = _encoder(cfg)
    eng = Engine(cfg, model, scheduler, encode, world=world, layers=layers)
    res = _drive(eng)
    eng.retire()  # the other ranks keep serving a second engine: nothing may leak from the first
    eng = Engine(cfg, model, scheduler, encode, world=world, layers=layers)
    again = _drive(eng)
    eng.close()
    tensors = {f"b{k}": v[0].contiguous() for k, v in res.items()}
    tensors.update({f"again{k}": v[0].contiguous() for k, v in again.items()})
    save_file(tensors, os.path.join(out_dir, "latents.safetensors"))
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump({"epochs": {k: v[1] for k, v in res.items()}, "names": sorted(materialised(models[0])),
                   "layers": layers}, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def references():
    comps = load_components("tiny")
    encode, _ = _encoder(None)
    out = {}

    def get(extra):
        key = tuple(sorted(extra.items()))
        if key not in out:
            cfg = EngineConfig(**{**CFG, **extra})
            out[key] = _drive(Engine(cfg, comps.transformer, comps.scheduler, encode))
        return out[key]
    return get


@pytest.mark.parametrize("world, extra", [
    (2, {}), (3, {}), (3, {"reuse_context": True}),
    # context over several blocks (C > B), recomputed or from the feature cache with a sink frame
    (2, {"context_frames": 3}), (2, {"context_frames": 3, "sink_frames": 1, "reuse_context": True})])
def test_w_ranks_equal_one_rank_bitwise(world, extra, tmp_path, references):
    reference = references(extra)
    cfg = EngineConfig(**{**CFG, **extra}, extra={"scratch": str(tmp_path)})
    mp.spawn(_rank_main, args=(world, free_port(), cfg.to_json(), str(tmp_path)), nprocs=world, join=True)
    got = load_file(str(tmp_path / "latents.safetensors"))
    meta = json.loads((tmp_path / "meta.json").read_text())
    blocks = sorted(int(k[1:]) for k in got if k.startswith("b"))
    assert blocks == sorted(reference) and len(blocks) >= 6
    for b in blocks:
        assert torch.equal(got[f"b{b}"], reference[b][0]), f"block {b} differs at W={world}"
        assert torch.equal(got[f"again{b}"], reference[b][0]), f"block {b} differs after retire() at W={world}"
        assert meta["epochs"][str(b)] == reference[b][1]
    assert meta["epochs"]["2"] == 1 and meta["epochs"]["5"] == 2  # the schedule really changed prompts
    # rank 0 holds the prologue and its blocks only
    names = set(meta["names"])
    a, b = meta["layers"]
    assert {n.split(".")[1] for n in names if n.startswith("blocks.")} == {str(i) for i in range(a, b)}
    assert any(n.startswith("patch_embedding.") for n in names)
    assert not any(n.startswith(("proj_out.", "scale_shift_table")) for n in names)

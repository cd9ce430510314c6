"""Train the toy world's real-time member from the shipped model: 4 steps, no CFG, flow shift 5, with the context
it really sees when served (`--reuse-context`: earlier blocks enter as the keys/values their own forwards cached),
in the spirit of Self-Forcing's training on its own cache; then distil a tiny decoder (TAEHV layout) for the toy
world's own VAE, so that `--tiny-vae` can be scored too.

    python -m pipeline.toyworld.train_rt --base pipeline/toyworld/model --out DIR --device cuda [--seconds 300]

The DiT is fine-tuned on windows unrolled through the engine's own stage (pipeline/dualparal/stages.py), so each
training window is built by the code that serves it: for the block at step k of the 4-step schedule,
- with --reuse-context, each earlier block it attends to is first run through the model at the noise level it had
  when its keys/values were cached (one step ahead per block back, clean blocks at the last step), in stream order,
  so its keys/values land in the feature cache; sink frames come from the shot's first block the same way;
- without it, the context frames enter as tokens at their own (lower) noise levels;
- its successor (if in flight: k >= 1) is run one step noisier and leaves its first frames' keys/values;
- then the block itself is run and the flow-matching loss taken on its frames.
Geometries are drawn per step (blocks of 2, 4 or 8 latent frames; context of one or two blocks; 0 or 1 sink frame;
reused or recomputed), so one model scores every configuration of the frontier (benchmarks/frontier.py). Steps are
of five kinds (`--kinds` weighs them): one scene; a shot's first block (stream start, cut); a prompt change between
blocks (context of scene A, block of scene B, the shape continuing); a `soft` change caught in flight (the block's
noisy input is scene A's, its prompt B's, and the target B's continuation); and a block one or two blocks after a
soft change, whose context from the change on is the model's own rollout of it (recomputed geometries only; the
target B's continuation): served, such a block sees the model's own transitional block (a square with blunted
corners), which it had learned nowhere not to copy. `--focus P` draws the geometry
the preset served until RESULTS §9's tenth follow-up (blocks of 2, context 2, recomputed; the preset now serves
context 1) with probability P (`--focus-context C` gives it C frames of context instead), and `--shape-weight W`
weighs the loss on the shape's latent pixels W times the background's (the corners that tell a triangle from a circle
are a few latent pixels of 64). `--dark-changes P` makes a fraction P of the change clips go between a navy and a
black background, the two darkest, between which a soft change was slowest to show. A change clip encoded whole
carries scene A into its first latents of scene B (the VAE's encoder is causal), so the targets themselves switch
late, navy to black most (benchmarks/latency_floor.py); `--spliced-changes P` gives a fraction P of the change clips
latents that switch at once: scene A's up to the change, then those of a clip of scene B throughout.

`--self-context P` (recomputed geometries) replaces, for a fraction P of the windows, the earlier blocks a window
reads by the model's own output: each is re-noised to a level drawn from `--self-from` .. the last step and
denoised by the model's own remaining steps (with its own context, no gradient), while the loss still targets the
ground truth. Served, a block's context is the model's own output, whose small errors (a triangle's apex blunted)
the next block copies and compounds; trained on its own output as context, the model learns to draw what the
prompt says rather than what the context shows (in the spirit of Self-Forcing's training on its own rollouts).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import shutil
import sys
import time

import numpy as np
import torch

RT_STEPS, RT_SHIFT = 4, 5.0
CUT = 8  # latent frame at which transition clips switch scene (a block boundary for B = 2, 4, 8)
CLIP_LATENTS = 24  # latent frames per pool clip (93 video frames)
GEOMETRIES = (  # (block frames, context frames, reuse); sink frames are drawn separately for reuse geometries
    (2, 2, True), (2, 4, True), (4, 4, True), (4, 8, True), (8, 8, True),
    (2, 2, False), (4, 4, False), (8, 8, False),
)
FOCUS = (2, 2, False)  # blocks of 2, 2 frames of context, recomputed: the shipped member's focus (the preset: 2/1)
AFTER_CHANGE = 4  # the kind of step whose context is the model's own rollout of a soft change (after_change_context)


@dataclasses.dataclass
class RTConfig:
    seed: int = 0
    seconds: float = 300.0
    steps: int = 0  # > 0: a step budget instead of seconds
    batch: int = 128
    lr: float = 1e-4
    warmup: int = 50
    ema: float = 0.998
    pool_clips: int = 4096
    pair_clips: int = 2048  # transition clips, each with its scene-A continuation
    # one scene, shot start, change between blocks, soft change in flight, after a soft change (AFTER_CHANGE)
    kinds: tuple = (0.55, 0.10, 0.20, 0.15, 0.0)
    focus: float = 0.0  # probability of the focus geometry (FOCUS); the rest drawn uniformly from GEOMETRIES
    focus_context: int = FOCUS[1]  # context frames of the focus geometry (its blocks: 2, recomputed)
    shape_weight: float = 1.0  # loss weight of the shape's latent pixels relative to the background's (1: uniform)
    sink_prob: float = 0.4  # of the reuse steps
    self_context: float = 0.0  # fraction of recomputed windows whose context is the model's own output
    self_from: int = RT_STEPS - 1  # the earliest step the context is re-noised to (drawn up to the last step)
    dark_changes: float = 0.0  # fraction of the change clips between a navy and a black background (either way)
    spliced_changes: float = 0.0  # fraction of the change clips whose latents switch at once (change_pair)
    tiny_seconds: float = 120.0
    tiny_steps: int = 0
    tiny_channels: tuple = (64, 64, 32, 32)
    tiny_batch: int = 32  # clips per tiny-decoder step
    tiny_lr: float = 1e-3
    tiny_jolt: float = 0.0  # (train_tiny: a latent step of up to this many standard deviations; 0: off)
    tiny_temporal: float = 0.0  # (train_tiny: weight of the frame-to-frame difference loss; 0: off)
    log_every: int = 100


def rt_defaults(prompt: str) -> dict:
    """What `streamer serve --model DIR` uses for this model unless told otherwise."""
    return {"prompt": prompt, "negative_prompt": "", "height": 64, "width": 64, "steps": RT_STEPS, "guidance": 1.0,
            "flow_shift": RT_SHIFT, "block_frames": 2, "context_frames": 2, "reuse_context": True, "fps": 8.0}


def dark_pairs(rng, scenes, a: torch.Tensor, b: torch.Tensor, p: float) -> None:
    """Redraw a fraction p of the change pairs (a[i] -> b[i], scene indices) as a change between a navy and a
    black background, half of them each way, colour, shape and direction drawn anew: the two darkest backgrounds,
    between which a soft change took two blocks where others took one (RESULTS.md §9, ninth follow-up)."""
    by_bg = {bg: np.flatnonzero([s.background == bg for s in scenes]) for bg in ("navy", "black")}
    rows = np.flatnonzero(rng.random(len(a)) < p)
    flip = rng.random(len(rows)) < 0.5
    src = np.where(flip, "black", "navy")
    for i, r in enumerate(rows):
        a[r] = int(rng.choice(by_bg[src[i]]))
        b[r] = int(rng.choice(by_bg["navy" if src[i] == "black" else "black"]))


def latent_encoder(vae, device):
    """uint8 clips [n, T, 64, 64, 3] -> the toy VAE's normalised latents [n, 16, L, 8, 8] (the posterior's mode)."""
    from pipeline.toyworld.train_vae import latent_stats

    mean, std = latent_stats(vae, device)

    def encode(u8):
        x = u8.permute(0, 4, 1, 2, 3).float().div(127.5).sub(1.0)
        return ((vae.encode(x).latent_dist.mode() - mean) / std).float()
    return encode


def change_pair(encode, table, a: torch.Tensor, b: torch.Tensor, pos: torch.Tensor, spliced: torch.Tensor):
    """(scene A's latents, the change clip's) for changes a[i] -> b[i] at latent frame CUT, the shape's centre at
    pos[i] at the cut and going on from there. The change clip is rendered and encoded whole, except for the rows
    of `spliced` (bool [n]): the encoder's causal memory carries scene A into a whole clip's first latents of scene
    B, so those rows take scene A's latents up to CUT and then those of a clip of scene B throughout (the same shape
    path): latents that switch at once."""
    from pipeline.toyworld.render_torch import render_batch

    frames, cut = 4 * CLIP_LATENTS - 3, 4 * CUT - 3  # video frames; the one where latent frame CUT starts
    ua = render_batch(table, a, pos, frames, 64, 64, t0=-cut)  # scene A throughout
    ub = render_batch(table, b, pos, frames - cut, 64, 64, t0=0)
    za, zb = encode(ua), encode(torch.cat([ua[:, :cut], ub], dim=1))
    if spliced.any():
        whole_b = encode(render_batch(table, b[spliced], pos[spliced], frames, 64, 64, t0=-cut))
        rows = spliced.to(zb.device)
        zb[rows] = torch.cat([za[rows][:, :, :CUT], whole_b[:, :, CUT:]], dim=2)
    return za, zb


@torch.no_grad()
def clip_pools(vae, rng, cfg: RTConfig, device):
    """Normalised latents of one-scene clips [N, 16, T, 8, 8] with their scene indices, and pairs of clips that
    switch scene at latent frame CUT (scene B from there, the shape continuing) with scene A's own continuation."""
    from pipeline.toyworld.render_torch import render_batch
    from pipeline.toyworld.train_vae import scene_table

    table = scene_table(device)
    encode = latent_encoder(vae, device)
    frames = 4 * CLIP_LATENTS - 3

    plain, plain_ids, a_lat, b_lat, a_ids, b_ids = [], [], [], [], [], []
    n_scenes = len(table.scenes)
    for start in range(0, cfg.pool_clips, 64):
        n = min(64, cfg.pool_clips - start)
        idx = torch.from_numpy(rng.integers(n_scenes, size=n))
        pos = torch.from_numpy(rng.random((n, 2)) * 64)
        plain.append(encode(render_batch(table, idx, pos, frames, 64, 64)))
        plain_ids.append(idx.numpy())
    for start in range(0, cfg.pair_clips, 64):
        n = min(64, cfg.pair_clips - start)
        a = torch.from_numpy(rng.integers(n_scenes, size=n))
        b = torch.from_numpy(rng.integers(n_scenes, size=n))
        if cfg.dark_changes > 0:
            dark_pairs(rng, table.scenes, a, b, cfg.dark_changes)
        pos = torch.from_numpy(rng.random((n, 2)) * 64)  # the centre at the cut
        spliced = torch.from_numpy(rng.random(n) < cfg.spliced_changes) if cfg.spliced_changes > 0 else \
            torch.zeros(n, dtype=torch.bool)
        za, zb = change_pair(encode, table, a, b, pos, spliced)
        a_lat.append(za)
        b_lat.append(zb)
        a_ids.append(a.numpy())
        b_ids.append(b.numpy())
    cat = torch.cat
    return ((cat(plain), np.concatenate(plain_ids)),
            (cat(a_lat), cat(b_lat), np.concatenate(a_ids), np.concatenate(b_ids)))


class Unroll:
    """One engine stage over the whole model, its geometry changed per step, used to build training windows."""

    def __init__(self, model, sigmas, timesteps, device):
        from pipeline.config import EngineConfig
        from pipeline.dualparal.stages import build_stage

        self.cfg = EngineConfig(model="toyworld", height=64, width=64, steps=RT_STEPS, guidance=1.0,
                                block_frames=2, context_frames=2, reuse_context=True)
        self.stage = build_stage(self.cfg, model, (0, len(model.blocks)), rank=0, world=1, device=device)
        self.stage.cache.lenient = True  # the oldest block of a window has no cached context of its own
        self.model = model
        self.sigmas, self.timesteps = sigmas, timesteps
        self.device = device

    def set_geometry(self, b: int, c: int, k: int, reuse: bool) -> None:
        self.cfg.block_frames, self.cfg.context_frames, self.cfg.sink_frames = b, c, k
        self.cfg.reuse_context = reuse
        self.stage.block_frames = b

    def noised(self, z0, level: int):
        """z0 at the noise level of step `level` (RT_STEPS: clean)."""
        if level >= RT_STEPS:
            return z0
        s = float(self.sigmas[level])
        return (1.0 - s) * z0 + s * torch.randn_like(z0)

    def forward(self, x, level: int, block: int, shot: int, use_succ: bool, text):
        """The stage's forward of one window at step `level` → prediction for the block's frames."""
        from pipeline.model.split import prologue
        from pipeline.dualparal.stages import ItemMeta

        t = self.timesteps[min(level, RT_STEPS - 1)].expand(x.shape[0]).to(self.device)
        meta = ItemMeta(serial=0, block=block, step=level, frames=x.shape[2], shot=shot, use_succ=use_succ)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            carry = prologue(self.model, x, t, text)
            return self.stage.finish(self.stage.forward(meta, carry), meta).float()


@torch.no_grad()
def own_output(u: Unroll, lat, j: int, b: int, c: int, level: int, text) -> torch.Tensor:
    """Block j of `lat` as the model's own steps from `level` to the end make it: re-noised to that level, then
    denoised step by step with its context (the block(s) before it in `lat`, at the levels they have then) as
    tokens, recomputed. -> clean latents [N, C, b, h, w]."""
    from pipeline.dualparal.context import plan_context

    x = u.noised(lat[:, :, j * b:(j + 1) * b], level)
    plan = plan_context(j, 0, b, c)
    for step in range(level, RT_STEPS):
        ctx = [u.noised(lat[:, :, jj * b:(jj + 1) * b][:, :, -m:], step + (j - jj)) for jj, m in plan.sources]
        v = u.forward(torch.cat(ctx + [x], dim=2), step, j, 0, False, text)
        x = x + float(u.sigmas[step + 1] - u.sigmas[step]) * v
    return x


@torch.no_grad()
def after_change_context(u: Unroll, a_lat, block: int, b: int, c: int, level: int, text_b) -> torch.Tensor:
    """Scene A's latents `a_lat` with the blocks from the change (CUT // b) up to `block` replaced by what the model
    makes of them when a soft change to `text_b` reaches them in flight, as served: the change's first block has
    taken `level` steps under scene A (its input is A's, noised to that level) and takes the rest under B, each later
    block one step fewer under A, every block seeing the model's own earlier blocks as context. The blocks before
    the change stay scene A's. (Served, a block right after a change sees the model's own transitional block, e.g. a
    square with blunted corners, which it would otherwise copy for several blocks; RESULTS §9, twelfth follow-up.)"""
    lat = a_lat.clone()
    for i, j in enumerate(range(CUT // b, block)):
        lat[:, :, j * b:(j + 1) * b] = own_output(u, lat, j, b, c, max(0, level - i), text_b)
    return lat


def train_step(u: Unroll, rng, pools, table, cfg: RTConfig):
    """One step's loss: a batch of windows of one geometry, kind and step index."""
    from pipeline.dualparal.context import blocks_back, plan_context
    from pipeline.toyworld.loop import shape_weighted_mean

    (plain, plain_ids), (a_lat, b_lat, a_ids, b_ids) = pools
    kind = int(rng.choice(len(cfg.kinds), p=cfg.kinds))
    focus = cfg.focus > 0 and rng.random() < cfg.focus
    if focus:
        b, c, reuse = FOCUS[0], cfg.focus_context, FOCUS[2]
    else:  # a rollout after a change is the model's own, recomputed: drawn from the recomputed geometries
        pool = [g for g in GEOMETRIES if not g[2]] if kind == AFTER_CHANGE else GEOMETRIES
        b, c, reuse = pool[int(rng.integers(len(pool)))]
    sink = 1 if reuse and rng.random() < cfg.sink_prob else 0
    k = int(rng.integers(RT_STEPS))
    if kind == 3:
        k = int(rng.integers(1, RT_STEPS))  # caught in flight: at least one step was taken under scene A
    u.set_geometry(b, c, sink, reuse)
    u.stage.cache.clear()
    n = cfg.batch
    if kind in (0, 1):
        pick = torch.from_numpy(rng.integers(len(plain), size=n)).to(plain.device)
        lat_ctx = lat_own = plain[pick]
        ids_ctx = ids_own = plain_ids[pick.cpu().numpy()]
        # a shot's first block, or a block with all its context and a successor inside the clip
        block = 0 if kind == 1 else int(rng.integers(1, (CLIP_LATENTS - b) // b))
        noisy_own = None
    else:
        pick = torch.from_numpy(rng.integers(len(a_lat), size=n)).to(a_lat.device)
        lat_ctx, lat_own = a_lat[pick], b_lat[pick]
        ids_ctx, ids_own = a_ids[pick.cpu().numpy()], b_ids[pick.cpu().numpy()]
        block = CUT // b
        noisy_own = lat_ctx if kind == 3 else None  # in flight: its input still shows scene A
    text_ctx = table[torch.from_numpy(ids_ctx).to(table.device)]
    text_own = table[torch.from_numpy(ids_own).to(table.device)]
    if kind == AFTER_CHANGE:  # a block of scene B one or two blocks after the change (and inside the clip)
        scene_a = lat_ctx
        block = min(CUT // b + int(rng.integers(1, 3)), CLIP_LATENTS // b - 1)
        level = int(rng.integers(1, RT_STEPS))  # steps the change's first block took under scene A
        lat_ctx = after_change_context(u, scene_a, block, b, c, level, text_own)
        u.stage.cache.clear()
        under_a = level - (block - CUT // b)
        if under_a > 0:  # the change caught this block in flight too, after its first under_a steps
            k = int(rng.integers(under_a, RT_STEPS))
            noisy_own = scene_a
    plan = plan_context(block, 0, b, c, sink)
    if kind != AFTER_CHANGE and not reuse and plan.sources and cfg.self_context > 0:
        rows = torch.from_numpy(np.flatnonzero(rng.random(n) < cfg.self_context)).to(lat_ctx.device)
        if len(rows):  # only those rows are denoised by the model
            lat_ctx = lat_ctx.clone()  # (may be lat_own too, whose block is the target)
            for j, _ in plan.sources:
                level = int(rng.integers(min(cfg.self_from, RT_STEPS - 1), RT_STEPS))
                lat_ctx[rows, :, j * b:(j + 1) * b] = own_output(u, lat_ctx[rows], j, b, c, level, text_ctx[rows])
            u.stage.cache.clear()

    def clean(j):  # block j's clean latents: the block and later ones as the block sees them, earlier ones scene A's
        z = (noisy_own if noisy_own is not None else lat_own) if j >= block else lat_ctx
        return z[:, :, j * b:(j + 1) * b]

    def done(j):  # steps block j has done at the start of this tick (the block itself: k)
        return k + (block - j)

    def tokens(p):  # a window's context frames as tokens, at their blocks' start-of-tick levels
        return [u.noised(clean(j)[:, :, -m:], done(j)) for j, m in p.sources]

    with torch.no_grad():
        succ = k >= 1 and c > 0 and (block + 2) * b <= CLIP_LATENTS
        if reuse:  # earlier blocks cache their keys/values at the levels they had one tick earlier, oldest first,
            # from far enough back that the blocks the window reads had context of their own
            first = min(plan.blocks, default=block)
            chain = set(range(max(0, first - blocks_back(b, c)), block)) | ({0} if plan.sink else set())
            for j in sorted(chain):
                level = min(done(j) - 1, RT_STEPS - 1)
                u.forward(u.noised(clean(j), level), level, j, 0, False, text_ctx if j < block else text_own)
            if succ:  # the block's own keys/values one tick earlier, which its successor reads
                u.forward(u.noised(clean(block), k - 1), k - 1, block, 0, False, text_own)
        if succ:  # in flight one step behind: it leaves its first frames' keys/values for the block
            x = u.noised(clean(block + 1), k - 1)
            if not reuse:
                x = torch.cat(tokens(plan_context(block + 1, 0, b, c)) + [x], dim=2)
            u.forward(x, k - 1, block + 1, 0, False, text_own)
    target0 = lat_own[:, :, block * b:(block + 1) * b]
    s = float(u.sigmas[k])
    x = u.noised(clean(block), k) if s < 1.0 else torch.randn_like(target0)
    v_target = (x - target0) / s  # eps - x0 where the input was made from the target itself
    if not reuse and plan.frames:
        x = torch.cat(tokens(plan) + [x], dim=2)
    pred = u.forward(x, k, block, 0, succ, text_own)
    return shape_weighted_mean((pred - v_target).square(), shape_mask(target0), cfg.shape_weight)


def shape_mask(z: torch.Tensor) -> torch.Tensor:
    """[N, 1, T, H, W] in [0, 1]: how far each latent pixel is from its frame's background (the per-channel median
    over the frame), relative to the farthest one: the shape's pixels, whose corners tell a triangle from a circle,
    near 1, the background near 0."""
    flat = z.flatten(3)
    bg = flat.median(dim=3, keepdim=True).values
    d = (flat - bg).square().sum(1, keepdim=True).sqrt()
    d = d / d.amax(dim=3, keepdim=True).clamp_min(1e-6)
    return d.view(z.shape[0], 1, *z.shape[2:])


@torch.no_grad()
def _ema_update(ema: list, params: list, decay: float) -> None:
    for e, p in zip(ema, params):
        e.lerp_(p.detach(), 1.0 - decay)


def train_rt(base: str, out: str, cfg: RTConfig, device: str = "cpu", log=print) -> dict:
    from pipeline.model.components import DEFAULTS_FILE, load_components, model_defaults
    from pipeline.settings import MODEL_KEYS
    from pipeline.model.random_wan import wan_scheduler
    from pipeline.toyworld.loop import Budget, log_every, lr_at, optimiser_step, save_component
    from pipeline.toyworld.train_dit import prompt_table
    from pipeline.toyworld.train_tiny import save_tiny, train_tiny

    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    comps = load_components(base, device=device, dtype=torch.float32)
    vae = comps.vae.requires_grad_(False)
    table = prompt_table(comps.tokenizer, comps.text_encoder, device)
    pools = clip_pools(vae, rng, cfg, device)
    log(f"pools: {tuple(pools[0][0].shape)} one-scene, {tuple(pools[1][0].shape)} x2 changes "
        f"({time.perf_counter() - t0:.0f}s)")
    model = comps.transformer.train().requires_grad_(True)
    params = list(model.parameters())
    ema = [p.detach().clone() for p in params]
    sched = wan_scheduler(RT_SHIFT)
    sched.set_timesteps(RT_STEPS, device=device)
    u = Unroll(model, sched.sigmas.to(device), sched.timesteps.to(device), dev)
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.01)
    losses, budget = [], Budget(cfg.steps, cfg.seconds)
    for step, progress, elapsed in budget:
        loss = train_step(u, rng, pools, table, cfg)
        losses.append(optimiser_step(opt, params, loss, lr_at(step, progress, cfg.lr, cfg.warmup)))
        _ema_update(ema, params, min(cfg.ema, (1 + step) / (10 + step)))
        log_every(log, "dit", step, losses, cfg.log_every, elapsed)
    dit_s, dit_n = budget.elapsed, budget.done
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    del pools
    base_tiny = os.path.join(base, "tiny_vae.safetensors")
    keep_tiny = os.path.isfile(base_tiny)
    if cfg.tiny_seconds <= 0 and cfg.tiny_steps <= 0:  # the base model's own tiny decoder is kept, if it has one
        tiny = None
        tiny_losses, tiny_s, tiny_n = [], 0.0, 0
        if not keep_tiny:
            log("no tiny decoder written: the base has none and --tiny-seconds and --tiny-steps are 0")
    else:
        tiny, tiny_losses, tiny_s, tiny_n = train_tiny(vae, rng, cfg, device, log)

    os.makedirs(out, exist_ok=True)
    for part in ("vae", "text_encoder", "tokenizer", "scheduler", "model_index.json"):
        src, dst = os.path.join(base, part), os.path.join(out, part)
        (shutil.copytree(src, dst, dirs_exist_ok=True) if os.path.isdir(src) else shutil.copyfile(src, dst))
    from diffusers import WanTransformer3DModel

    clean = WanTransformer3DModel.from_config(model.config)  # the stock attention processors
    clean.load_state_dict(model.state_dict())
    save_component(clean.to(torch.bfloat16), os.path.join(out, "transformer"))
    if tiny is None:
        if keep_tiny:
            shutil.copyfile(base_tiny, os.path.join(out, "tiny_vae.safetensors"))
    else:
        save_tiny(tiny, dict(vae.config), os.path.join(out, "tiny_vae.safetensors"))
    prompt = model_defaults(base, MODEL_KEYS).get("prompt", "a red circle moving left on a black background")
    with open(os.path.join(out, DEFAULTS_FILE), "w") as f:
        json.dump(rt_defaults(prompt), f, indent=2)
    previous = os.path.join(base, "train_log.json")  # a run continued from an earlier one keeps its record
    history, old = [], {}
    if os.path.isfile(previous):
        with open(previous) as f:
            old = json.load(f)
        history = old.get("history", []) + [{k: old.get(k) for k in ("base", "config", "seconds")} |
                                            {"dit_steps": old.get("dit", {}).get("steps")}]
    result = {"seed": cfg.seed, "device": device, "base": os.path.basename(os.path.normpath(base)),
              "history": history,
              "config": dataclasses.asdict(cfg), "geometries": GEOMETRIES,
              "dit": {"losses": losses, "seconds": dit_s, "steps": dit_n},
              "tiny_decoder": {"losses": tiny_losses, "seconds": tiny_s, "steps": tiny_n,
                               "channels": list(cfg.tiny_channels)},
              "seconds": time.perf_counter() - t0}
    if "decoder_tuning" in old:  # the VAE was copied from the base: its record goes with it
        result["decoder_tuning"] = old["decoder_tuning"]
    with open(os.path.join(out, "train_log.json"), "w") as f:
        json.dump(result, f, indent=1)
    log(f"wrote {out} in {result['seconds']:.0f}s (dit {dit_n} steps, tiny decoder {tiny_n} steps)")
    return result


def _kinds(text: str) -> tuple:
    """Four or five probabilities summing to 1 (four: no steps after a change)."""
    try:
        v = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not four or five numbers: {text!r}") from None
    if len(v) not in (4, 5) or min(v) < 0 or abs(sum(v) - 1.0) > 1e-6:
        raise argparse.ArgumentTypeError(f"four or five probabilities summing to 1 expected, got {text!r}")
    return v + (0.0,) * (5 - len(v))


def main(argv=None) -> int:
    from pipeline.toyworld import MODEL_DIR

    p = argparse.ArgumentParser(prog="python -m pipeline.toyworld.train_rt", description=__doc__.split("\n")[0])
    p.add_argument("--base", default=MODEL_DIR, help="the model to start from (default: the shipped toy world)")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    for f in dataclasses.fields(RTConfig):
        if f.type in ("int", "float"):
            p.add_argument("--" + f.name.replace("_", "-"), type=int if f.type == "int" else float, default=None)
    p.add_argument("--kinds", type=_kinds, default=None,
                   help="probabilities of the kinds of step (one scene, shot start, change between blocks, soft "
                        "change in flight, after a soft change), comma-separated, summing to 1 (the fifth may be "
                        "left out: 0)")
    a = p.parse_args(argv)
    cfg = RTConfig(**{k: v for k, v in vars(a).items() if k in RTConfig.__dataclass_fields__ and v is not None})
    if not 0 <= cfg.focus_context <= CUT:
        p.error(f"--focus-context must be 0..{CUT} latent frames, got {cfg.focus_context}")
    for name in ("dark_changes", "spliced_changes"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            p.error(f"--{name.replace('_', '-')} must be a fraction 0..1, got {getattr(cfg, name)}")
    train_rt(a.base, a.out, cfg, a.device, log=lambda m: print(m, file=sys.stderr, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pipeline stages: each rank runs its slice of transformer blocks (with its own feature cache) for every block
window, in the order rank 0 submitted them. Rank 0 runs the prologue, the last rank the epilogue and CFG; the noise
prediction returns to rank 0. With one rank, `LocalPipe` runs the same code in-process.

Wire format (torch.distributed point-to-point, no pickle): an int64 header, then the carry tensors whose shapes and
dtypes the header names; back to rank 0: a header and the prediction (fixed shape), plus per-rank timings.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

import torch
import torch.distributed as dist

from common import faults

from .attention import install_feature_cache
from .context import ContextPlan, blocks_back, plan_context, tail_frames
from .geometry import WindowGeometry
from .ring import fwd as _fwd
from .ring import peer_ops
from .ring import ret as _ret
from ..model.split import Carry, epilogue, run_blocks

_DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

def _as_bytes(t: torch.Tensor) -> torch.Tensor:
    """A CPU tensor's storage as uint8 (gloo moves bytes; bfloat16 travels unchanged)."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


MAX_ROWS = 8  # rows of a causal stream batch (its denoising steps) a header can name
HEADER = 22 + 2 * MAX_ROWS
STAT_FIELDS = 4  # per rank, running totals: compute ms, wait-for-input ms, peak memory GiB, windows


def balanced_split(num_layers: int, world: int) -> list[tuple[int, int]]:
    """Contiguous slices as even as possible; the ranks that take one block more are the middle ones first, then
    the last, rank 0 last of all: rank 0 also runs the prologue, the scheduler steps and the sends (about half a
    block of Wan2.1-1.3B on an H100), the last rank the epilogue (30 over 4 → 7/8/8/7; RESULTS.md §2)."""
    if world < 1 or world > num_layers:
        raise ValueError(f"cannot split {num_layers} transformer blocks over {world} ranks")
    base, extra = divmod(num_layers, world)
    order = list(range(1, world - 1)) + ([world - 1] if world > 1 else []) + [0]
    more = set(order[:extra])
    out, a = [], 0
    for r in range(world):
        b = a + base + (1 if r in more else 0)
        out.append((a, b))
        a = b
    return out


@dataclass
class ItemMeta:
    """What every stage needs to know about one block window."""

    serial: int  # unique per submitted item (tells stale predictions after a cut from current ones)
    block: int
    step: int
    frames: int  # latent frames in the window (context frames entered as tokens + B)
    shot: int  # the first block of its shot (pipeline/dualparal/context.py: what its context may reach)
    use_succ: bool
    stop: bool = False
    ping: bool = False  # travels the ring and comes back with no work: retires a pipe's posted receive
    expert: int = 0  # which expert runs the window (two-expert models: pipeline.family.expert_for its timestep)
    # the causal engine (pipeline/causal/stage.py): the window's frames start at frame `start` of the shot; it
    # attends to the first `cached_n` frames (-1: all) of the window of the block at frame `window_at`; `commit`:
    # its keys/values are stored as those frames' (the clean re-run)
    start: int = 0
    window_at: int = 0
    cached_n: int = -1
    commit: bool = False
    # the causal stream batch (pipeline/causal/stream.py): per row of the batch, (denoising step, first frame of
    # its block in the shot); step -1: a padding row while the queue fills
    rows: tuple[tuple[int, int], ...] = ()

    def header(self, carry: Carry | None) -> torch.Tensor:
        h = torch.zeros(HEADER, dtype=torch.int64)
        kind = 1 if self.stop else 2 if self.ping else 0
        h[:12] = torch.tensor([kind, self.serial, self.block, self.step, self.frames, self.shot, int(self.use_succ),
                               self.expert, self.start, self.window_at, self.cached_n, int(self.commit)])
        if carry is not None:
            b, n, _ = carry.hidden.shape
            h[12:21] = torch.tensor([b, n, carry.text.shape[1], _DTYPES.index(carry.hidden.dtype),
                                    _DTYPES.index(carry.text.dtype), _DTYPES.index(carry.timestep_proj.dtype),
                                    _DTYPES.index(carry.temb.dtype), *carry.grid[1:]])
        if len(self.rows) > MAX_ROWS:
            raise ValueError(f"a stream batch of {len(self.rows)} rows (at most {MAX_ROWS})")
        h[21] = len(self.rows)
        for i, (step, start) in enumerate(self.rows):
            h[22 + 2 * i], h[23 + 2 * i] = step, start
        return h

    @classmethod
    def from_header(cls, h: torch.Tensor) -> "ItemMeta":
        v = h.tolist()
        return cls(serial=v[1], block=v[2], step=v[3], frames=v[4], shot=v[5], use_succ=bool(v[6]),
                   stop=v[0] == 1, ping=v[0] == 2, expert=v[7], start=v[8], window_at=v[9], cached_n=v[10],
                   commit=bool(v[11]), rows=tuple((v[22 + 2 * i], v[23 + 2 * i]) for i in range(v[21])))


class Stage:
    """This rank's slice of blocks [a, b) with its feature cache; prologue/epilogue are done by the callers.

    A two-expert model (Wan 2.2 A14B) has the slice of each expert here; a window runs the expert its header names.
    Both experts' layers share one feature cache, slot by slot (as in DualParal's Wan 2.2 pipeline): a block's
    neighbours' keys and values are those of their latest window, whichever expert ran it."""

    def __init__(self, geom, models, layers: tuple[int, int], last: bool, guide):
        self.geom = geom
        self.cfg = geom.cfg
        self.models = list(models)
        self.model = self.models[0]
        self.experts = [[m.blocks[i] for i in range(*layers)] for m in self.models]
        self.blocks = [blk for expert in self.experts for blk in expert]  # every block this rank runs
        self.cache = install_feature_cache(self.experts[0])
        for expert in self.experts[1:]:
            install_feature_cache(expert, cache=self.cache)
        cfg = geom.cfg
        # --reuse-context: tails of the blocks in flight and of the blocks their context reaches back into
        self.cache.keep = cfg.steps + blocks_back(cfg.block_frames, cfg.context_frames) - 1
        self.last = last
        self.guide = guide
        self.block_frames = cfg.block_frames

    def plan(self, meta: ItemMeta) -> ContextPlan:
        cfg = self.geom.cfg
        return plan_context(meta.block, meta.shot, cfg.block_frames, cfg.context_frames, cfg.sink_frames)

    def forward(self, meta: ItemMeta, carry: Carry) -> Carry:
        cfg, geom = self.geom.cfg, self.geom
        plan = self.plan(meta)
        reuse = cfg.reuse_context
        succ = tail_frames(cfg.block_frames, cfg.context_frames) if meta.use_succ else 0
        # with --reuse-context, sink and context frames come as cached K/V before the window's own frames
        earlier = plan.sink + plan.frames if reuse else 0
        rot, prev_rope, succ_rope = geom.rope(earlier, meta.frames, succ)
        tpf = geom.tpf
        req = self.cache.request
        req.store = geom.store_range(0 if reuse else plan.frames)
        req.use_read = succ > 0
        req.extra_rope = succ_rope
        req.block = meta.block
        req.prev_sources = tuple((b, f * tpf) for b, f in plan.sources) if reuse else ()
        req.sink = (plan.shot, plan.sink * tpf) if reuse and plan.sink else None
        req.store_sink = geom.sink_range() if reuse and meta.block == meta.shot else None
        req.prev_rope = prev_rope
        req.store_tail = geom.tail_range() if reuse else None
        return run_blocks(self.experts[meta.expert], carry, rot)

    def finish(self, carry: Carry, meta: ItemMeta) -> torch.Tensor:
        """Last stage: noise prediction for the block's own frames, CFG applied (at the expert's scale)."""
        pred = epilogue(self.models[meta.expert], carry)[:, :, carry.grid[0] - self.block_frames:]
        return self.guide(pred, meta.expert)


def make_guide(cfg):
    """Classifier-free guidance on a [cond; uncond] batch (identity without CFG): the last stage applies it, at the
    scale of the expert that ran the window."""
    scales = cfg.guidance_scales()

    def guide(pred: torch.Tensor, expert: int = 0) -> torch.Tensor:
        if not cfg.use_cfg:
            return pred
        cond, uncond = pred.float().chunk(2, dim=0)
        return (uncond + scales[expert] * (cond - uncond)).to(pred.dtype)
    return guide


def build_stage(cfg, model, layers: tuple[int, int], rank: int, world: int, device) -> "Stage":
    """Rank `rank`'s stage: its slice of blocks with their feature cache, the window geometry, and (last rank) the
    guidance. `model`: the transformer, or the list of a two-expert model's (high-noise first). The one place a
    rank is wired, whoever runs it (Engine, serve_rank, the benchmarks)."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    return Stage(WindowGeometry(cfg, models[0], device), models, layers, last=rank == world - 1,
                 guide=make_guide(cfg))


class LocalPipe:
    """One rank: the whole model here. Predictions come back immediately, in order."""

    def __init__(self, stage: Stage):
        self.stage = stage
        self.ready: deque = deque()
        self.rank_stats = [[0.0] * STAT_FIELDS]

    def submit(self, meta: ItemMeta, carry: Carry) -> None:
        t0 = time.perf_counter()
        pred = self.stage.finish(self.stage.forward(meta, carry), meta)
        st = self.rank_stats[0]
        st[0] += (time.perf_counter() - t0) * 1e3
        st[2] = _peak_gib(pred.device)
        st[3] += 1
        self.ready.append((meta.serial, pred))

    def poll(self, wait: bool):
        if self.ready:
            return self.ready.popleft()
        if wait:
            raise RuntimeError("waiting for a prediction that was never submitted")
        return None

    def close(self):
        pass


def _peak_gib(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def _send_carry(dst: int, meta: ItemMeta, carry: Carry, stats: torch.Tensor) -> list:
    tensors = [meta.header(carry), stats, carry.hidden.contiguous(), carry.text.contiguous(),
               carry.timestep_proj.contiguous(), carry.temb.contiguous()]
    dev = carry.hidden.device
    handles = []
    for i, t in enumerate(tensors):
        t = t.to(dev) if i < 2 else t
        with peer_ops():
            handles.append((dist.isend(t, dst, group=_fwd()), t))
    return handles


def _recv_carry(src: int, device, dim: int, world: int):
    h = torch.empty(HEADER, dtype=torch.int64, device=device)
    stats = torch.empty(world, STAT_FIELDS, dtype=torch.float64, device=device)
    with peer_ops():
        dist.recv(h, src, group=_fwd())
        dist.recv(stats, src, group=_fwd())
    meta = ItemMeta.from_header(h.cpu())
    if meta.stop or meta.ping:
        return meta, None, stats.cpu()
    v = h.cpu().tolist()
    b, n, tl, dh, dt, dp, de, gh, gw = v[12:21]
    hidden = torch.empty(b, n, dim, dtype=_DTYPES[dh], device=device)
    text = torch.empty(b, tl, dim, dtype=_DTYPES[dt], device=device)
    tproj = torch.empty(b, 6, dim, dtype=_DTYPES[dp], device=device)
    temb = torch.empty(b, dim, dtype=_DTYPES[de], device=device)
    with peer_ops():
        for t in (hidden, text, tproj, temb):
            dist.recv(t, src, group=_fwd())
    return meta, Carry(hidden, text, tproj, temb, (meta.frames, gh, gw)), stats.cpu()


class DistPipe:
    """Rank 0's side of the ring: sends each window's carry to rank 1 without waiting, receives predictions from
    the last rank with receives posted ahead, in submission order."""

    def __init__(self, stage: Stage, world: int, pred_shape, pred_dtype, device):
        self.stage, self.world, self.device = stage, world, device
        self.pred_shape, self.pred_dtype = pred_shape, pred_dtype
        self.sent: deque = deque()  # isend handles still in flight
        self.rank_stats = [[0.0] * STAT_FIELDS for _ in range(world)]
        self.outstanding = 0
        self._post()

    def _post(self):
        """Post the receive of the next prediction (CPU buffers: the return path is gloo)."""
        self._h = torch.empty(HEADER, dtype=torch.int64)
        self._stats = torch.empty(self.world, STAT_FIELDS, dtype=torch.float64)
        self._pred = torch.empty(self.pred_shape, dtype=self.pred_dtype)
        last = self.world - 1
        with peer_ops():
            self._recv = [dist.irecv(t, last, group=_ret()) for t in (self._h, self._stats, _as_bytes(self._pred))]

    def submit(self, meta: ItemMeta, carry: Carry) -> None:
        t0 = time.perf_counter()
        carry = self.stage.forward(meta, carry)
        if self.device.type == "cuda":
            # the compute stream only: not the whole device, where sends may still be in flight
            torch.cuda.current_stream(self.device).synchronize()
        st = self.rank_stats[0]
        st[0] += (time.perf_counter() - t0) * 1e3
        st[2] = _peak_gib(self.device)
        st[3] += 1
        stats = torch.zeros(self.world, STAT_FIELDS, dtype=torch.float64)
        self.sent.extend(_send_carry(1, meta, carry, stats))
        self.outstanding += 1
        with peer_ops():
            while self.sent and self.sent[0][0].is_completed():
                self.sent.popleft()

    def poll(self, wait: bool):
        if self.outstanding == 0:
            if wait:
                raise RuntimeError("waiting for a prediction that was never submitted")
            return None
        with peer_ops():
            if not wait and not all(w.is_completed() for w in self._recv):
                return None
            t0 = time.perf_counter()
            for w in self._recv:
                w.wait()
        self.rank_stats[0][1] += (time.perf_counter() - t0) * 1e3
        serial = int(self._h[1].item())
        pred = self._pred.to(self.device)
        for r in range(1, self.world):
            self.rank_stats[r] = self._stats[r].tolist()
        self.outstanding -= 1
        self._post()
        return serial, pred

    def _control(self, **kind):
        msg = ItemMeta(serial=-1, block=-1, step=-1, frames=0, shot=0, use_succ=False, **kind)
        with peer_ops():
            dist.send(msg.header(None).to(self.device), 1, group=_fwd())
            dist.send(torch.zeros(self.world, STAT_FIELDS, dtype=torch.float64, device=self.device), 1,
                      group=_fwd())

    def retire(self):
        """Consume this pipe's posted receive with a ping round trip, so another pipe can take over the ring."""
        if self.outstanding:
            raise RuntimeError("retire() with predictions still in flight")
        self._control(ping=True)
        with peer_ops():
            for w in self._recv:
                w.wait()

    def close(self):
        self._control(stop=True)


def _send_back(meta: ItemMeta, stats: torch.Tensor, pred: torch.Tensor) -> list:
    """Last rank → rank 0 on the gloo return group: header, per-rank statistics, prediction (CPU tensors)."""
    tensors = [meta.header(None), stats.cpu(), _as_bytes(pred)]
    with peer_ops():
        return [(dist.isend(t, 0, group=_ret()), t) for t in tensors]


def serve_stage(stage: Stage, rank: int, world: int, device) -> None:
    """The loop of ranks 1..W-1: receive a window, run the slice, pass it on (or the prediction back to rank 0)."""
    last = rank == world - 1
    dim = stage.model.config.num_attention_heads * stage.model.config.attention_head_dim
    pred_dtype = DTYPES[stage.cfg.dtype]
    pending: deque = deque()
    totals = [0.0] * STAT_FIELDS
    cfg = stage.cfg
    pred_shape = (1, stage.model.config.out_channels, cfg.block_frames, cfg.latent_height, cfg.latent_width)
    while True:
        t_wait = time.perf_counter()
        meta, carry, stats = _recv_carry(rank - 1, device, dim, world)
        totals[1] += (time.perf_counter() - t_wait) * 1e3
        if (meta.stop or meta.ping) and not last:  # pass control messages along
            with peer_ops():
                dist.send(meta.header(None).to(device), rank + 1, group=_fwd())
                dist.send(stats.to(device), rank + 1, group=_fwd())
        if meta.stop:
            break
        if meta.ping:  # a pipe retired: the next engine's statistics start from zero
            totals = [0.0] * STAT_FIELDS
        if meta.ping and not last:
            continue
        if meta.ping:  # last rank: answer in the prediction's shape so rank 0's posted receive completes
            pending.extend(_send_back(meta, stats, torch.zeros(pred_shape, dtype=pred_dtype)))
            continue
        t0 = time.perf_counter()
        faults.point(f"rank{rank}")
        carry = stage.forward(meta, carry)
        if last:
            pred = stage.finish(carry, meta).to(pred_dtype).contiguous()
        if device.type == "cuda":
            torch.cuda.current_stream(device).synchronize()  # not device-wide: sends may be pending
        totals[0] += (time.perf_counter() - t0) * 1e3
        totals[2] = _peak_gib(device)
        totals[3] += 1
        stats[rank] = torch.tensor(totals, dtype=torch.float64)
        if last:
            pending.extend(_send_back(meta, stats, pred.cpu()))
        else:
            pending.extend(_send_carry(rank + 1, meta, carry, stats))
        with peer_ops():
            while pending and pending[0][0].is_completed():
                pending.popleft()
    with peer_ops():
        for w, _ in pending:
            w.wait()

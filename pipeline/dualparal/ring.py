"""The ring's communicators: torch.distributed groups and point-to-point connections set up eagerly, and the
error that a failed point-to-point operation becomes (a peer rank is gone)."""
from __future__ import annotations

import contextlib

import torch
import torch.distributed as dist

# Two groups. Windows travel forward (r → r+1) on "fwd" (NCCL on GPUs: the big activations). Predictions return
# (last → 0) on "ret", always a gloo (CPU) group: rank 0 keeps a receive posted ahead there at all times, and a
# posted NCCL receive is a GPU kernel that can sit on rank 0's GPU for a whole window; CUDA calls that wait for
# the device (pageable copies, some allocations, synchronisations) would then wait for a prediction that cannot
# come before rank 0 sends the next window: a deadlock. A prediction is small (one block's latents, 1.6 MB at
# 480×832), so the trip through host memory costs well under a millisecond of the ~0.3 s a window takes.
_RING = {}


def setup_ring_groups(device) -> None:
    """Call on every rank, in the same order, right after init_process_group.

    Everything that would otherwise be set up lazily, and blockingly, is set up here while every rank joins at
    once: each group's communicator (a collective: all-reduce) and the point-to-point connections of each edge
    the pipeline uses (one batched exchange per group: r → r+1 on "fwd", last → 0 on "ret")."""
    world, me = dist.get_world_size(), dist.get_rank()
    ranks = list(range(world))
    edges = {"fwd": [(r, r + 1) for r in range(world - 1)], "ret": [(world - 1, 0)] if world > 1 else []}
    for name, backend, dev in (("fwd", None, device), ("ret", "gloo", torch.device("cpu"))):
        g = dist.new_group(ranks, backend=backend)
        dist.all_reduce(torch.zeros(1, device=dev), group=g)
        _connect(g, edges[name], me, dev)
        _RING[name] = g
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _connect(group, edges, me: int, device) -> None:
    """One exchange over every edge (src, dst) of `group`, all posted in one batch (16 MiB on GPUs, enough for
    NCCL to open all of the peer's channels)."""
    numel = (1 << 22) if device.type == "cuda" else 256
    ops = []
    for src, dst in edges:
        if me == src:
            ops.append(dist.P2POp(dist.isend, torch.ones(numel, device=device), dst, group=group))
        if me == dst:
            buf = torch.zeros(numel, device=device)
            ops.append(dist.P2POp(dist.irecv, buf, src, group=group))
    for w in dist.batch_isend_irecv(ops) if ops else []:
        w.wait()
    if ops and ops[-1].op is dist.irecv and not bool(ops[-1].tensor.eq(1).all()):
        raise RuntimeError("point-to-point set-up exchange delivered wrong data")


class RingBroken(RuntimeError):
    """A point-to-point operation of the ring failed: a peer rank is gone. A consequence of another rank's failure,
    which the daemon names first (pipeline.process.worker.record_failure)."""


@contextlib.contextmanager
def peer_ops():
    """Around torch.distributed calls of the ring: their failures become RingBroken."""
    try:
        yield
    except RingBroken:
        raise
    except RuntimeError as e:
        raise RingBroken(f"a peer rank is gone ({' '.join(str(e).split())[:300]})") from e


def fwd():
    return _RING.get("fwd")


def ret():
    return _RING.get("ret")

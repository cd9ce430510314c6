"""The tiny decoder replayed as one CUDA graph per block (`--tiny-vae` on a GPU).

A block's decode (the network, the memories kept for the next block, the uint8 conversion and the copy into pinned
host memory) is captured once, on the first block, into a CUDA graph over static buffers, and every later block is
one copy of its latents into the static input and one replay. Replays run no Python per layer and no dynamo, so the
decoder can work beside the engine's compiled ticks on its own thread and stream instead of taking turns with them
(dynamo's tracing is not safe while another thread runs compiled code; a replay never traces).

The frames are those of StreamingTinyDecoder, bit for bit (the same kernels in the same order). On a CPU the same
static-buffer step runs without capture, so the bookkeeping (memories updated in place, a new stream zeroing them,
the first block's trimmed frames) is tested without a GPU.
"""
from __future__ import annotations

import numpy as np
import torch

from .block_decoder import to_uint8_rgb
from .tiny_vae import TIME_GROW, StreamingTinyDecoder, TinyDecoderNet

UPSCALE = 8  # 3 stages of 2x nearest upsampling


class GraphedTinyDecoder(StreamingTinyDecoder):
    """StreamingTinyDecoder's decode_block over static buffers, captured as a CUDA graph on a GPU. Frames come only
    as uint8 (decode_block): the float frames never leave the graph."""

    graphed = True

    def __init__(self, net: TinyDecoderNet, compile_backend: str | None = None):
        self._x: torch.Tensor | None = None  # the static input [F, z, h, w]
        self._out: torch.Tensor | None = None  # the static output, uint8 [4F, H, W, 3] (pinned host memory on a GPU)
        self._graph: torch.cuda.CUDAGraph | None = None
        super().__init__(net, compile_backend)
        self.graphed = self._device.type == "cuda"

    def reset(self) -> None:
        """Start a new stream: zero the memories in place (the graph reads them where it was captured)."""
        self._first = True
        if self._x is not None:
            with torch.inference_mode():
                for p in self._pasts:
                    p.zero_()
        else:
            self._pasts = None

    def decode_block_float(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("the graphed tiny decoder gives uint8 frames only: use decode_block")

    @torch.inference_mode()
    def decode_block(self, latents: torch.Tensor, new_shot: bool = False) -> np.ndarray:
        if new_shot:
            self.reset()
        x = self._input(latents)
        if self._x is None or self._x.shape != x.shape:
            self._build(x.shape)
        self._x.copy_(x)
        if self._graph is not None:
            self._graph.replay()
            torch.cuda.current_stream(self._device).synchronize()  # the frames are in host memory
        else:
            self._step()
        out = self._out[self.TRIM:] if self._first else self._out
        self._first = False
        return out.numpy().copy()  # the static buffer is overwritten by the next block

    def _step(self) -> None:
        """One block from the static input: frames into the static output, the memories updated in place."""
        out, lasts = self._forward(self._x, self._pasts)
        for past, last in zip(self._pasts, lasts):
            past.copy_(last)
        self._out.copy_(to_uint8_rgb(out.clamp(0.0, 1.0), self.LOW), non_blocking=True)

    def _build(self, shape: torch.Size) -> None:
        """Static buffers for blocks of `shape` (keeping the memories of the stream so far), captured on a GPU."""
        f, _, h, w = shape
        keep = self._pasts
        self._x = torch.zeros(shape, device=self._device, dtype=self._dtype)
        self._pasts = [self._x.new_zeros(s) for s in self.net.memory_shapes(h, w)]
        if keep is not None:
            for past, kept in zip(self._pasts, keep):
                past.copy_(kept)
        frames = f * int(np.prod(TIME_GROW))
        up = UPSCALE * self.net.patch  # (taew2_2: a 2x2 pixel patch after the stack)
        self._out = torch.empty((frames, h * up, w * up, 3), dtype=torch.uint8,
                                pin_memory=self._device.type == "cuda")
        self._graph = None
        if self._device.type == "cuda":
            self._capture()

    def _capture(self) -> None:
        saved = [p.clone() for p in self._pasts]
        here = torch.cuda.current_stream(self._device)
        side = torch.cuda.Stream(self._device)
        side.wait_stream(here)
        with torch.cuda.stream(side):  # compile and tune before capture, as torch.cuda.graphs asks
            self._step()
            self._step()
        here.wait_stream(side)
        for past, s in zip(self._pasts, saved):  # those runs advanced the memories: put them back
            past.copy_(s)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads (the engine, the text encoder) may use the card while this one captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self._step()
        self._graph = graph

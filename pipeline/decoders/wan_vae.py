"""Incremental Wan VAE decoding of an endless stream of latent blocks.

The decoder's causal-conv cache is carried from block to block, so decoding blocks one after another gives
exactly what `vae.decode` gives for the whole sequence at once: no seams, nothing decoded twice. The cache is our
own list (not vae._feat_map), so one VAE object can be shared with other users.
"""
from __future__ import annotations

import torch

from .block_decoder import BlockDecoder
from ..compat.diffusers import WanCausalConv3d, unpatchify
from ..model.compile import allow_shape_variants
from .vae_trace import traceable


def _canonical(t: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """The same values with canonical strides, row-major or (5-D, channels_last) NDHWC, also for size-1
    dimensions, whose strides are free; a view when the tensor is already laid out so."""
    cl = channels_last and t.ndim == 5
    t = t.contiguous(memory_format=torch.channels_last_3d if cl else torch.contiguous_format)
    order = (0, 2, 3, 4, 1) if cl else tuple(range(t.ndim))  # outermost to innermost
    strides, acc = [0] * t.ndim, 1
    for d in reversed(order):
        strides[d] = acc
        acc *= t.shape[d]
    return t if list(t.stride()) == strides else t.as_strided(t.shape, strides)


class StreamingDecoder(BlockDecoder):
    """decode_block(latents) turns each finished block into frames; reset() starts a new stream.

    chunk_frames: latent frames per decoder call after the stream's first frame (None: the rest of the block at
    once). 1 (default) is bit-identical to vae.decode, needs the least memory and was the fastest on CPU; larger
    chunks agree to ~3e-6 and trade memory for fewer kernel launches.

    channels_last: hold the 3-D convolutions' weights in channels-last order (NDHWC), so cuDNN runs the decoder
    channels-last (None: on a GPU). The same values; on an H200 in bfloat16 the compiled decode of a 2-frame block at
    480x832 took 95 instead of 116 ms, for a peak ~7.7 GiB higher (benchmarks/vae_decode_gpu.py, RESULTS §9). The
    VAE's weights are changed in place.

    compile_backend: torch.compile the decoder with this backend ("inductor" under `--compile`; None: eager). The
    graphs are specialised to the three call shapes of a stream (its first frame, the rest of its first block, a
    whole block); the cache list's updates are replayed by dynamo, so compiled decoding equals eager decoding.
    """

    def __init__(self, vae, chunk_frames: int | None = 1, compile_backend: str | None = None,
                 channels_last: bool | None = None):
        if chunk_frames is not None and chunk_frames < 1:
            raise ValueError("chunk_frames must be >= 1 or None")
        p = next(vae.parameters())
        self._device, self._dtype = p.device, p.dtype
        self.channels_last = self._device.type == "cuda" if channels_last is None else channels_last
        layout = torch.channels_last_3d if self.channels_last else torch.contiguous_format
        for m in (vae.post_quant_conv, *vae.decoder.modules()):
            if isinstance(m, torch.nn.Conv3d):
                m.weight.data = m.weight.data.contiguous(memory_format=layout)
        self.vae = vae
        self.chunk_frames = chunk_frames
        cfg = vae.config
        self.latent_channels = cfg.z_dim
        self._patch = cfg.get("patch_size")  # the Wan 2.2 VAE (TI2V-5B) rearranges 2x2 pixel patches after decoding
        self._n_convs = sum(isinstance(m, WanCausalConv3d) for m in vae.decoder.modules())
        self._decoder = vae.decoder
        self.compiled = bool(compile_backend)
        if compile_backend:
            allow_shape_variants()
            traceable(vae.decoder)
            self._decoder = torch.compile(vae.decoder, backend=compile_backend, dynamic=False)
        shape = (1, cfg.z_dim, 1, 1, 1)
        # Exactly WanPipeline's un-normalisation: latents / (1 / std) + mean.
        self._mean = torch.tensor(cfg.latents_mean).view(shape).to(self._device, self._dtype)
        self._inv_std = 1.0 / torch.tensor(cfg.latents_std).view(shape).to(self._device, self._dtype)
        self.reset()

    def reset(self) -> None:
        """Start a new stream: the next block's first latent frame decodes to a single video frame."""
        self._cache = [None] * self._n_convs
        self._first = True

    def _run(self, x: torch.Tensor, first_chunk: bool) -> torch.Tensor:
        if not self.compiled:
            return self._decoder(x, feat_cache=self._cache, feat_idx=[0], first_chunk=first_chunk)
        cl = self.channels_last
        out = self._decoder(_canonical(x, cl), feat_cache=self._cache, feat_idx=[0], first_chunk=first_chunk)
        # Dynamo guards on strides, even of size-1 dimensions, which compiled graphs leave arbitrary on the cache
        # tensors they return: canonical strides keep every later call on the same graph (else each block
        # recompiled, 25 s apiece on an H200).
        self._cache = [_canonical(c, cl) if isinstance(c, torch.Tensor) else c for c in self._cache]
        return out

    @torch.inference_mode()
    def decode_block_float(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [1, z, F, h, w] -> video in [-1, 1], float [1, 3, T, sh, sw] (s: the VAE's spatial
        factor, 8 or 16; T = 4F, 4F-3 first)."""
        if latents.ndim != 5 or latents.shape[0] != 1 or latents.shape[2] < 1:
            raise ValueError(f"expected latents [1, C, F>=1, h, w], got {tuple(latents.shape)}")
        z = latents.to(self._device, self._dtype) / self._inv_std + self._mean
        x = self.vae.post_quant_conv(z)  # 1x1x1 conv: per frame, no cache
        outs = []
        if self._first:
            # The stream's first chunk must be exactly one latent frame (-> one video frame).
            outs.append(self._run(x[:, :, :1], first_chunk=True))
            x = x[:, :, 1:]
            self._first = False
        step = self.chunk_frames or max(1, x.shape[2])
        for i in range(0, x.shape[2], step):
            # Multi-frame chunks equal frame-by-frame decoding to float rounding (tests/test_decode.py).
            outs.append(self._run(x[:, :, i : i + step], first_chunk=False))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        if self._patch:
            out = unpatchify(out, patch_size=self._patch)
        return out.clamp_(-1.0, 1.0)

    def _frames(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode_block_float(latents)[0].transpose(0, 1)  # [1, 3, T, H, W] -> [T, 3, H, W]

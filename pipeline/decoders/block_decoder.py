"""What every streaming block decoder shares (the Wan VAE's in `wan_vae.py`, the tiny one in `tiny_vae.py`): a new
stream at a cut, the warm-up on blocks of zeros, and the float frames turned into uint8 RGB for the encoder."""
from __future__ import annotations

import numpy as np
import torch


class BlockDecoder:
    """Subclasses set `latent_channels`, `_device`, `_dtype` and `LOW` (the float frames' black: -1 or 0, white is
    1), and define reset() and decode_block_float(latents); _frames(latents) gives the block's frames [T, 3, H, W]
    between LOW and 1 (decode_block_float's result, unless a subclass lays its frames out otherwise)."""

    LOW = -1.0
    latent_channels: int
    compiled = False  # torch.compile'd: the first calls trace (not while another thread runs compiled code)
    graphed = False  # replays captured CUDA graphs: no Python, no dynamo per block (safe beside compiled code)

    @property
    def device(self) -> torch.device:
        return self._device

    def reset(self) -> None:
        raise NotImplementedError

    def decode_block_float(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _frames(self, latents: torch.Tensor) -> torch.Tensor:
        return self.decode_block_float(latents)

    def warm_up(self, block_frames: int, lat_h: int, lat_w: int) -> None:
        """Decode three blocks of zeros (a stream's first block, then whole ones): compiles the graphs and tunes the
        kernels before the first real block, then starts a new stream. Three, because with blocks of one latent frame
        the causal caches reach the depth every later block sees only at the third."""
        z = torch.zeros(1, self.latent_channels, block_frames, lat_h, lat_w, device=self._device, dtype=self._dtype)
        self.reset()
        for _ in range(3):
            self.decode_block(z)
        self.reset()

    def decode_block(self, latents: torch.Tensor, new_shot: bool = False) -> np.ndarray:
        """Latents [1, z, F, h, w] -> uint8 RGB frames [T, H, W, 3]. `new_shot`: the block starts a new shot (after a
        cut), so it is decoded like a stream's first block (reset() first)."""
        if new_shot:
            self.reset()
        with torch.inference_mode():
            return to_uint8_rgb(self._frames(latents), self.LOW).cpu().numpy()


def to_uint8_rgb(frames: torch.Tensor, low: float) -> torch.Tensor:
    """Float frames [T, 3, H, W] between `low` and 1 -> uint8 RGB [T, H, W, 3] on the same device."""
    scale = 255.0 / (1.0 - low)
    frames = ((frames - low) * scale).round_().clamp_(0, 255).to(torch.uint8)
    return frames.permute(0, 2, 3, 1).contiguous()

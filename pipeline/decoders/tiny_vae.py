"""A tiny streaming decoder for Wan latents, in the TAEHV checkpoint format (`--tiny-vae`): taew2_1 for Wan 2.1's
VAE, taew2_2 for Wan 2.2's (TI2V-5B: 48 channels, a 2x2 pixel patch after the stack).

TAEHV ("tiny autoencoder for Hunyuan video", whose `taew2_1` weights are trained for the Wan 2.1 latent space) is
a stack of 2D convolutions: per latent frame, 3 stages of 3 memory blocks (each sees its input of this frame and of
the previous one), nearest 2x upsampling in space and 2x growth in time (channels -> frames) between them. It
decodes a block with about 4 TFLOP at 480x832 where the Wan VAE decoder needs about 140, at lower quality.

This is our own implementation of that architecture; its module layout is the checkpoint's (`decoder.N.*`), so the
published files load as they are (.safetensors, or .pth read with weights_only). It takes the latents the
transformer produces (no latents_mean/std: TAEHV was trained on them as they are) and gives frames in [0, 1].

Streaming: a whole block is processed at once per layer; each memory block keeps the last frame of its input for
the next block, so decoding block after block equals decoding the whole sequence at once. Like the Wan decoder, a
stream's first latent frame gives one video frame (the first 3 of the first 4 are dropped), later ones 4.
"""
from __future__ import annotations

import json
import os

import torch
from torch import nn

from common.errors import ConfigError

from .block_decoder import BlockDecoder
from ..model.checkpoint_io import read_weights

CHANNELS = (256, 128, 64, 64)  # decoder widths, stage by stage (the published checkpoints')
_WIDTH_LAYERS = (1, 8, 14, 20)  # the convolutions whose outputs set those widths, by checkpoint index
LATENT_SPACE_KEY = "latent_space"  # safetensors metadata: the VAE config (z_dim, latents_mean/std) decoded for
TIME_GROW = (1, 2, 2)  # frames per frame after each stage (Wan: 4x in time)


def _conv(n_in: int, n_out: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, bias=bias)


class SoftClamp(nn.Module):
    """Limits latents to about +-3 smoothly (3 tanh(x / 3))."""

    def forward(self, x):
        return torch.tanh(x / 3) * 3


class MemoryBlock(nn.Module):
    """Residual block over this frame's input and the previous frame's (`past`), channel-concatenated."""

    def __init__(self, n: int):
        super().__init__()
        self.conv = nn.Sequential(_conv(2 * n, n), nn.ReLU(), _conv(n, n), nn.ReLU(), _conv(n, n))

    def forward(self, x, past):
        return torch.relu(self.conv(torch.cat([x, past], 1)) + x)


class TimeGrow(nn.Module):
    """Each frame becomes `stride` frames: a 1x1 convolution to stride x C channels, read as consecutive frames."""

    def __init__(self, n: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n, n * stride, 1, bias=False)

    def forward(self, x):
        t, c, h, w = x.shape
        return self.conv(x).reshape(t * self.stride, c, h, w)


class TinyDecoderNet(nn.Module):
    """The decoder stack; `decoder[i]` has the checkpoint's index i. forward(x [F, z, h, w], pasts) -> (frames
    [4F, 3, 8ph, 8pw] in about [0, 1], the inputs' last frames of each memory block, for the next call).

    patch: the pixel patch of the latent space's VAE (Wan 2.2's, taew2_2: 2): the last convolution gives 3 p^2
    channels, rearranged into p x p pixels (a pixel shuffle, as TAEHV does)."""

    def __init__(self, latent_channels: int = 16, channels: tuple[int, int, int, int] = CHANNELS, patch: int = 1):
        super().__init__()
        self.patch = patch
        c = tuple(channels)
        layers: list[nn.Module] = [SoftClamp(), _conv(latent_channels, c[0]), nn.ReLU()]
        for stage in range(3):
            n = c[stage]
            layers += [MemoryBlock(n), MemoryBlock(n), MemoryBlock(n), nn.Upsample(scale_factor=2),
                       TimeGrow(n, TIME_GROW[stage]), _conv(n, c[stage + 1], bias=False)]
        layers += [nn.ReLU(), _conv(c[3], 3 * patch * patch)]
        self.decoder = nn.Sequential(*layers)
        self.latent_channels = latent_channels
        self.channels = c

    def memory_shapes(self, lat_h: int, lat_w: int) -> list[tuple[int, ...]]:
        """The shape of each memory block's remembered frame for latents of lat_h x lat_w."""
        shapes, h, w = [], lat_h, lat_w
        for layer in self.decoder:
            if isinstance(layer, MemoryBlock):
                shapes.append((1, layer.conv[0].out_channels, h, w))
            elif isinstance(layer, nn.Upsample):
                h, w = 2 * h, 2 * w
        return shapes

    def forward(self, x: torch.Tensor, pasts: list[torch.Tensor]):
        lasts, k = [], 0
        for layer in self.decoder:
            if isinstance(layer, MemoryBlock):
                lasts.append(x[-1:])
                x = layer(x, torch.cat([pasts[k], x[:-1]], 0))
                k += 1
            else:
                x = layer(x)
        if self.patch > 1:
            x = torch.nn.functional.pixel_shuffle(x, self.patch)
        return x, lasts


def _read(path: str) -> dict:
    return read_weights(path, "--tiny-vae")


def load_tiny_decoder(path: str, latent_channels: int) -> TinyDecoderNet:
    """A TAEHV-format checkpoint's decoder (its encoder's weights are ignored), checked against the model's latent
    width. Raises ConfigError naming the file for anything that is not such a decoder."""
    sd = _read(path)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"--tiny-vae {path!r}: not a state dict of tensors")
    dec = {k[len("decoder."):]: v for k, v in sd.items() if k.startswith("decoder.")}
    if not dec:
        raise ConfigError(f"--tiny-vae {path!r}: no decoder weights (no 'decoder.*' keys)")
    first = dec.get("1.weight")
    if first is None or first.ndim != 4:
        raise ConfigError(f"--tiny-vae {path!r}: not a TAEHV decoder (no 3x3 input convolution 'decoder.1')")
    if first.shape[1] != latent_channels:
        raise ConfigError(f"--tiny-vae {path!r}: decodes {first.shape[1]}-channel latents, the model's have "
                          f"{latent_channels} (taew2_1 is the Wan 2.1 one, taew2_2 the Wan 2.2 TI2V-5B one)")
    last = max((int(k.split(".")[0]) for k in dec if k.split(".")[0].isdigit()), default=0)
    out = dec.get(f"{last}.weight")
    patch = {3: 1, 12: 2}.get(out.shape[0] if out is not None and out.ndim == 4 else -1)
    if patch is None:
        raise ConfigError(f"--tiny-vae {path!r}: its last layer gives "
                          f"{out.shape[0] if out is not None else 'no'} channels (a TAEHV decoder gives 3, or 12 "
                          "for a 2x2 pixel patch)")
    # the layout fixes which layer sets each stage's width (the published files: 256, 128, 64, 64; narrower
    # decoders in the same layout, e.g. the toy world's, load too)
    widths = tuple(dec[f"{i}.weight"].shape[0] if f"{i}.weight" in dec and dec[f"{i}.weight"].ndim == 4 else None
                   for i in _WIDTH_LAYERS)
    net = TinyDecoderNet(latent_channels, widths if None not in widths else CHANNELS, patch=patch)
    own = net.decoder.state_dict()
    for i, layer in enumerate(net.decoder):
        key = f"{i}.conv.weight"
        if isinstance(layer, TimeGrow) and key in dec and dec[key].shape[0] > own[key].shape[0]:
            # trained with more time growth here than this decoder uses: keep the last frame's channels
            dec[key] = dec[key][-own[key].shape[0]:]
    missing = sorted(set(own) - set(dec))
    unexpected = sorted(set(dec) - set(own))
    wrong = sorted(k for k in set(own) & set(dec) if own[k].shape != dec[k].shape)
    if missing or unexpected or wrong:
        parts = [f"{name}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''}"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
        raise ConfigError(f"--tiny-vae {path!r}: not the TAEHV decoder layout of taew2_1 / taew2_2 "
                          f"({'; '.join(parts)})")
    net.decoder.load_state_dict(dec)
    return net.eval().requires_grad_(False)


def latent_space_of(path: str) -> dict | None:
    """The latent space a tiny decoder file declares it decodes (safetensors metadata LATENT_SPACE_KEY: the VAE
    config's z_dim, latents_mean and latents_std, as JSON), or None (the published files: Wan 2.1's)."""
    path = os.path.expanduser(path)
    if not path.endswith(".safetensors") or not os.path.isfile(path):
        return None
    try:
        from safetensors import safe_open

        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        return json.loads(meta[LATENT_SPACE_KEY]) if LATENT_SPACE_KEY in meta else None
    except Exception as e:  # noqa: BLE001 - unreadable metadata is a bad file
        raise ConfigError(f"--tiny-vae {path!r}: cannot read its metadata ({type(e).__name__}: {e})") from None


def latent_space(vae_config: dict) -> dict:
    """What identifies a VAE's latent space (what LATENT_SPACE_KEY records)."""
    return {k: vae_config.get(k) for k in ("z_dim", "latents_mean", "latents_std")}


def check_latent_space(vae_config: dict | None, wan_config: dict, model: str, declared: dict | None = None) -> None:
    """A tiny decoder decodes one latent space: Wan 2.1's (the published TAEHV files) unless its file declares
    another (`declared`, from latent_space_of). Refuse a model whose VAE has other latent statistics (e.g. the
    toy-world model's own VAE with a Wan 2.1 decoder). vae_config None: a model without a VAE config (the in-code
    tiny model, which uses Wan 2.1's)."""
    if declared is None and vae_config is not None and vae_config.get("z_dim") == 48 and \
            vae_config.get("patch_size") == 2:
        return  # the Wan 2.2 VAE (TI2V-5B), whose latents the published taew2_2 decodes (its width: checked on load)
    want = declared if declared is not None else wan_config
    ours_cfg = vae_config if vae_config is not None else wan_config
    for key in ("z_dim", "latents_mean", "latents_std"):
        ours, wan = ours_cfg.get(key), want.get(key)
        same = ours == wan if not isinstance(wan, (list, tuple)) else (
            isinstance(ours, (list, tuple)) and len(ours) == len(wan)
            and all(abs(float(a) - float(b)) < 1e-4 for a, b in zip(ours, wan)))
        if not same:
            what = "the latent space its file declares" if declared is not None else "the Wan 2.1 VAE's"
            raise ConfigError(f"--tiny-vae: the model {model!r} has its own VAE ({key} differs from {what}), "
                              "and this tiny decoder would not decode its latents")


class StreamingTinyDecoder(BlockDecoder):
    """The Wan StreamingDecoder's interface (reset, warm_up, decode_block) over a TinyDecoderNet."""

    LOW = 0.0  # frames in [0, 1]
    TRIM = 3  # a stream's first latent frame gives 4 frames of which the last is its picture

    def __init__(self, net: TinyDecoderNet, compile_backend: str | None = None):
        self.net = net
        self.latent_channels = net.latent_channels
        p = next(net.parameters())
        self._device, self._dtype = p.device, p.dtype
        self.compiled = bool(compile_backend)
        self._forward = torch.compile(net, backend=compile_backend, dynamic=False) if compile_backend else net
        self.reset()

    def reset(self) -> None:
        """Start a new stream (empty memories; the first 3 frames of the next block are dropped)."""
        self._pasts: list[torch.Tensor] | None = None
        self._first = True

    def _input(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [1, z, F, h, w] -> the network's input [F, z, h, w] on its device and in its dtype."""
        if latents.ndim != 5 or latents.shape[0] != 1 or latents.shape[2] < 1:
            raise ValueError(f"expected latents [1, C, F>=1, h, w], got {tuple(latents.shape)}")
        return latents[0].transpose(0, 1).to(self._device, self._dtype).contiguous()

    @torch.inference_mode()
    def decode_block_float(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [1, z, F, h, w] as the transformer gives them -> frames [T, 3, 8h, 8w] in [0, 1] (T = 4F, 4F-3
        for a stream's first block)."""
        x = self._input(latents)
        if self._pasts is None:
            self._pasts = [x.new_zeros(s) for s in self.net.memory_shapes(x.shape[2], x.shape[3])]
        out, lasts = self._forward(x, self._pasts)
        self._pasts = [t.clone() for t in lasts]  # compiled graphs may return views of their buffers
        if self._first:
            out = out[self.TRIM:]
            self._first = False
        return out.clamp_(0.0, 1.0)


def random_tiny_decoder(latent_channels: int = 16, seed: int = 0, patch: int = 1):
    """The tiny decoder (`--tiny-vae`) with random weights scaled so that its memories carry signal and its output
    is a picture around 0.5 (std ~0.2) rather than a constant: what a trained one costs to encode, roughly.
    latent_channels 48, patch 2: taew2_2's layout (Wan 2.2 TI2V-5B)."""
    torch.manual_seed(seed)
    net = TinyDecoderNet(latent_channels, patch=patch).eval().requires_grad_(False)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.weight *= 0.7
                if m.bias is not None:
                    m.bias.zero_()
        x = torch.randn(4, latent_channels, 4, 6)
        y, _ = net(x, [x.new_zeros(s) for s in net.memory_shapes(4, 6)])
        net.decoder[-1].weight *= 0.2 / y.std()
        net.decoder[-1].bias.fill_(0.5)
    return net


def tiny_decoder_checkpoint(net) -> dict:
    """`net`'s weights as a TAEHV checkpoint names them (decoder.N.*)."""
    return {f"decoder.{k}": v.detach().clone() for k, v in net.decoder.state_dict().items()}

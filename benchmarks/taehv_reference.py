"""Write the fixture that checks our tiny decoder (pipeline/decoders/tiny_vae.py) against the original TAEHV code.

The original is not part of this repository: fetch https://github.com/madebyollin/taehv and pass the folder that
holds its taehv.py. This script builds our decoder with seeded random weights in the taew2_1 layout (16 channels)
and the taew2_2 layout (48 channels, 2x2 pixel patch), loads the same weights into the original `TAEHV`, decodes
the same random latents with the original's `decode_video` (whole sequence at once) and writes the latents and the
original's frames to tests/fixtures/taehv_reference.safetensors. tests/test_tiny_vae.py rebuilds the weights from
the same seeds and compares our block-by-block streaming decode with those frames, in float32, on CPU.

    python benchmarks/taehv_reference.py --taehv /path/to/taehv
"""
from __future__ import annotations

import argparse
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pipeline.decoders.tiny_vae import random_tiny_decoder, tiny_decoder_checkpoint  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                   "taehv_reference.safetensors")
CASES = {"taew2_1": (16, 1, 11), "taew2_2": (48, 2, 12)}  # name: latent channels, patch, seed
FRAMES, LAT_H, LAT_W = 4, 2, 3  # two blocks of 2 latent frames


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--taehv", required=True, help="a checkout of github.com/madebyollin/taehv (holds taehv.py)")
    ap.add_argument("--out", default=OUT)
    a = ap.parse_args()
    sys.path.insert(0, a.taehv)
    from taehv import TAEHV  # the original

    torch.set_num_threads(1)
    tensors = {}
    for name, (z, patch, seed) in CASES.items():
        ours = random_tiny_decoder(z, seed=seed, patch=patch)
        orig = TAEHV(checkpoint_path=None, patch_size=patch, latent_channels=z).eval()
        missing, unexpected = orig.load_state_dict(tiny_decoder_checkpoint(ours), strict=False)
        if unexpected or any(k.startswith("decoder.") for k in missing):
            raise SystemExit(f"{name}: the layouts differ: missing {missing[:4]}, unexpected {unexpected[:4]}")
        lat = torch.randn(1, FRAMES, z, LAT_H, LAT_W, generator=torch.Generator().manual_seed(seed + 100))
        with torch.no_grad():
            frames = orig.decode_video(lat, parallel=False, show_progress_bar=False)  # NTCHW in [0, 1]
        tensors[f"{name}.latents"] = lat.contiguous()
        tensors[f"{name}.frames"] = frames[0].contiguous()
        print(name, tuple(frames.shape))
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    save_file(tensors, a.out)
    print("wrote", a.out, os.path.getsize(a.out), "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The shipped toy-world model (issue 6): `streamer serve` with no --model streams it, and what it streams is the
prompt, as the ground-truth classifier sees it in the daemon's own output."""
import json
import os

import av
import numpy as np

from conftest import DaemonProc
from pipeline.model.components import DEFAULTS_FILE, load_components, model_defaults
from pipeline.toyworld import MODEL_DIR
from pipeline.toyworld.classify import classify_block
from pipeline.settings import MODEL_KEYS

PROMPT = "a red circle moving left on a black background"


def test_shipped_model_is_small_and_loads_offline():
    sizes = [os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(MODEL_DIR) for f in fs]
    assert sum(sizes) <= 30 * 2**20
    c = load_components("toyworld")
    assert c.transformer.config.num_layers == 6 and c.vae.config.z_dim == 16
    d = model_defaults("toyworld", MODEL_KEYS)
    assert d["negative_prompt"] == "" and d["prompt"] == PROMPT
    with open(os.path.join(MODEL_DIR, DEFAULTS_FILE)) as f:
        assert json.load(f) == d


def test_serve_without_model_streams_the_prompt(tmp_path):
    out = tmp_path / "out.y4m"
    with open(out, "wb") as f:
        d = DaemonProc("--stdout", "y4m", "--no-pace", http=False, stdout=f, model=None)
        try:
            st = d.wait_streaming(timeout=120)
            assert "toyworld" in json.dumps(st)
            d.wait_status(lambda s: s["blocks_published"] >= 12, "12 published blocks")
        finally:
            assert d.stop() == 0, d.log()
    with av.open(str(out)) as c:
        frames = np.stack([fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)])
    assert frames.shape[1:] == (64, 64, 3) and len(frames) >= 5 + 8 * 3
    # skip the first block (5 frames), then score every 8-frame block the daemon emitted
    blocks = [frames[i:i + 8] for i in range(5, len(frames) - 7, 8)]
    ok = [classify_block(b, expected=PROMPT)["all_correct"] for b in blocks]
    assert np.mean(ok) >= 0.8, ok

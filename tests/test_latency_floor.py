"""benchmarks/latency_floor.py: ground-truth change clips scored as quality.py scores the stream."""
import numpy as np
import torch

from benchmarks.latency_floor import blocks_to_clean, change_clips, main
from pipeline.toyworld.train_vae import scene_table
from pipeline.toyworld.world import all_scenes, prompt_of


def test_a_rendered_change_is_read_in_its_first_block_and_the_old_scene_is_not():
    scenes = all_scenes()
    table = scene_table("cpu")
    a = next(i for i, s in enumerate(scenes) if (s.colour, s.shape, s.background) == ("red", "circle", "navy"))
    b = next(i for i, s in enumerate(scenes) if (s.colour, s.shape, s.background) == ("blue", "square", "gray"))
    clip = change_clips(table, [a], [b], torch.tensor([[32.0, 32.0]]), block_frames=2, before=3, after=4)[0].numpy()
    assert clip.shape == (4 * 2 * 7 - 3, 64, 64, 3)
    assert blocks_to_clean(clip, prompt_of(scenes[b]), 2, before=3) == 0
    # scored against the old scene instead, the blocks after the change are never clean
    assert blocks_to_clean(clip, prompt_of(scenes[a]), 2, before=3) is None
    # a change one block later in the clip than the scorer expects costs exactly that block
    late = change_clips(table, [a], [b], torch.tensor([[32.0, 32.0]]), block_frames=2, before=4, after=3)[0].numpy()
    assert blocks_to_clean(late, prompt_of(scenes[b]), 2, before=3) == 1


def test_the_script_draws_quality_pys_pairs_and_writes_its_summary(tmp_path):
    res = main(["--changes", "3", "--after", "3", "--seed", "5", "--out", str(tmp_path / "f.json")])
    scenes = all_scenes()
    rng = np.random.default_rng(5 + 1)  # quality.random_changes' draw for --seed 5
    want = [tuple(prompt_of(scenes[i]) for i in rng.choice(len(scenes), size=2, replace=False)) for _ in range(3)]
    got = res["decoders"]["ground truth (rendered)"]
    assert [(r["from"], r["to"]) for r in got["runs"]] == want
    assert got["n"] == 3 and got["within_1"] == 1.0 and got["max"] == 0
    assert (tmp_path / "f.json").exists()


def test_through_the_tiny_decoder_encoded_and_spliced(tmp_path):
    """--tiny: the clips through the toy VAE's encoder and the model's tiny decoder, both ways, scored per change."""
    from pipeline.toyworld import RT_MODEL_DIR

    tiny = f"{RT_MODEL_DIR}/tiny_vae.safetensors"
    res = main(["--changes", "2", "--after", "4", "--tiny", tiny, "--model", RT_MODEL_DIR,
                "--out", str(tmp_path / "f.json")])
    names = list(res["decoders"])
    assert names == ["ground truth (rendered)", "tiny tiny_vae.safetensors, change clip encoded",
                     "tiny tiny_vae.safetensors, latents spliced"]
    for name in names:
        runs = res["decoders"][name]["runs"]
        assert len(runs) == 2 and all(r["latency_blocks"] is None or 0 <= r["latency_blocks"] <= 3 for r in runs)

"""The quality benchmark: its pure metrics on rendered ground truth, and one short run on the tiny model."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import ROOT

sys.path.insert(0, ROOT)
from benchmarks.quality_metrics import (ATTRS, CHANCE, accuracy, drift, latency, seam_stats,  # noqa: E402
                                        smoothness_summary)
from pipeline.toyworld.classify import classify_block, smoothness  # noqa: E402
from pipeline.toyworld.world import Scene, parse_prompt, prompt_of, render  # noqa: E402

SCENE = Scene("green", "square", "right", "navy")


def _blocks(n=8, per=8, scene=SCENE):
    clip = render(scene, n * per, seed=1)
    return [clip[i * per:(i + 1) * per] for i in range(n)]


def _rec(index, all_ok, **attrs):
    correct = {a: attrs.get(a, all_ok) for a in ATTRS}
    return {"index": index, "correct": correct, "all_correct": all(correct.values())}


def test_seam_ratio_is_one_for_a_continuous_clip_and_large_for_shuffled_blocks():
    blocks = _blocks()
    s = seam_stats(blocks)
    assert s["boundaries"] == 7 and s["within_mad"] > 0
    assert s["ratio"] == pytest.approx(1.0, abs=0.05)
    shuffled = [blocks[i] for i in (0, 4, 1, 6, 2, 7, 3, 5)]
    assert seam_stats(shuffled)["ratio"] > 3.0


def _rhythm(n_blocks, per, jump, seam=0.0):
    """Frames of one grey level that steps by 1 a frame and by `jump` between latent frames (every 4 frames, as a
    Wan VAE decodes), and by `seam` more at block boundaries; cut into blocks of `per` frames ending on a latent."""
    level, frames = 10.0, []
    for t in range(n_blocks * per):
        if t:
            level += jump if t % 4 == 0 else 1.0
            level += seam if t % per == 0 else 0.0
        frames.append(np.full((4, 4, 3), level, dtype=np.float64))
    f = np.round(np.array(frames)).astype(np.uint8)
    return [f[i * per:(i + 1) * per] for i in range(n_blocks)]


def test_latent_ratio_sees_seams_and_not_the_vae_rhythm():
    smooth = seam_stats(_rhythm(6, 8, jump=3.0))
    assert smooth["ratio"] > 1.3  # boundary (a latent step, 3) against all transitions (mean 9/7)
    assert smooth["latent_ratio"] == pytest.approx(1.0)  # against the latent step inside blocks: like with like
    seamed = seam_stats(_rhythm(6, 8, jump=3.0, seam=2.0))
    assert seamed["latent_ratio"] == pytest.approx(5.0 / 3.0)
    assert seam_stats(_rhythm(6, 4, jump=3.0))["latent_ratio"] is None  # blocks of one latent frame: none inside
    assert seam_stats(_rhythm(6, 8, jump=3.0), period=None)["latent_ratio"] is None


def test_ground_truth_blocks_score_perfectly_and_smoothly():
    recs = []
    for i, b in enumerate(_blocks(4)):
        c = classify_block(b, expected=prompt_of(SCENE))
        recs.append({"index": i, **c})
    acc = accuracy(recs)
    assert acc == {**{a: 1.0 for a in ATTRS}, "all": 1.0, "n": 4}
    sm = smoothness_summary([smoothness(b) for b in _blocks(4)])
    assert sm["mean_visible_frac"] == 1.0 and sm["worst_max_jump"] < 3.0 and sm["n"] == 4


def test_accuracy_aggregation_and_warmup():
    recs = [_rec(0, False), _rec(1, False, colour=True), _rec(2, True), _rec(3, True, shape=False),
            _rec(4, True)]
    acc = accuracy(recs, warmup=1)
    assert acc["n"] == 4
    assert acc["all"] == pytest.approx(0.5)
    assert acc["colour"] == pytest.approx(1.0)
    assert acc["shape"] == pytest.approx(0.5)
    assert acc["direction"] == pytest.approx(0.75)
    assert accuracy(recs, warmup=9)["all"] is None
    assert CHANCE["all"] == pytest.approx(1 / 288)


def test_latency_counts_from_the_acknowledged_block_and_needs_two_consecutive_hits():
    hits = {i: False for i in range(20)}
    assert latency(hits, 5) is None
    hits.update({7: True, 9: True, 10: True})  # a single hit does not count
    assert latency(hits, 5) == 4
    assert latency(hits, 9) == 0
    assert latency(hits, 10) is None  # 11 is false
    assert latency({5: True, 6: True}, 5) == 0
    assert latency({5: True, 6: True, 7: True}, 5, consecutive=3) == 0
    assert latency({3: True, 4: True, 5: False}, 5) is None  # hits before first_block don't count
    assert latency({5: True, 7: True}, 5) is None  # a missing block is not a hit


def test_drift_compares_first_window_with_the_window_around_the_target():
    recs = [_rec(i, i < 50) for i in range(110)]
    d = drift(recs, window=10, warmup=4, at=100)
    assert d["early_blocks"] == [4, 13] and d["late_blocks"] == [95, 104] and d["reached_at"]
    assert d["early"] == 1.0 and d["late"] == 0.0 and d["delta"] == -1.0
    short = drift(recs[:20], window=5, warmup=2, at=100)
    assert not short["reached_at"] and short["late_blocks"] == [15, 19] and short["late"] == 1.0


def test_benchmark_runs_end_to_end_on_the_tiny_model(tmp_path):
    out, strip = tmp_path / "q.json", tmp_path / "strip.png"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "quality.py"), "--model", "tiny", "--blocks", "6",
           "--warmup", "1", "--scenes", "2", "--scene-blocks", "2",
           "--steps", "2", "--change-at", "3", "--latency-window", "3", "--drift-window", "2",
           "--changes", "2", "--out", str(out), "--strip", str(strip)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "prompt following" in p.stdout and "latency" in p.stdout
    res = json.loads(out.read_text())
    pf = res["prompt_following"]
    assert pf["n"] == 5 and all(pf[a] is not None for a in (*ATTRS, "all"))
    assert set(res["smoothness"]["per_block"]) >= {"mean_visible_frac", "mean_max_jump", "mean_area_cv"}
    assert set(res["smoothness"]["stream"]) >= {"visible_frac", "max_jump", "area_cv"}
    assert res["seams"]["ratio"] is not None
    assert res["drift"]["early"] is not None and res["drift"]["late"] is not None
    assert set(res["latency"]) == {"soft", "queue", "blend", "cut"}
    for m, r in res["latency"].items():
        assert r["first_block"] >= 3 and "latency_blocks" in r and "gap_ticks" in r
        assert max(int(k) for k in r["recognised"]) == r["first_block"] + 2  # latency window from first_block
    assert res["latency"]["cut"]["gap_ticks"] > 0  # a cut refills the queue: output pauses
    for m, r in res["latency_random"].items():  # --changes 2: two changes between different random scenes each
        assert r["n"] == len(r["runs"]) == 2 and all(x["from"] != x["to"] for x in r["runs"])
        assert r["not_reached"] == sum(x["latency_blocks"] is None for x in r["runs"])
    assert [r["index"] for r in res["blocks"]] == list(range(6))
    for r in res["blocks"]:
        parse_prompt(r["prompt"])
    assert os.path.getsize(res["strip"]["path"]) > 0
    assert os.path.exists(res["strip"]["path"] + ".txt")
    assert np.isclose(res["chance"]["all"], 1 / 288)
    sa = res["scenes"]
    assert sa["scenes"] == 2 and sa["accuracy"]["n"] == 2 and len({f["prompt"] for f in sa["failed"]}) <= 2


def test_tiny_vae_model_is_the_model_folders_own(tmp_path):
    """`--tiny-vae model` means what it means to `streamer serve`: the tiny decoder the model folder ships."""
    out = tmp_path / "q.json"
    cmd = [sys.executable, os.path.join(ROOT, "benchmarks", "quality.py"), "--model", "toyworld-rt", "--tiny-vae",
           "model", "--blocks", "2", "--warmup", "0", "--modes", "", "--out", str(out)]
    p = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["config"]["tiny_vae"].endswith(os.path.join("model_rt", "tiny_vae.safetensors"))
    assert res["prompt_following"]["n"] == 2
    bad = subprocess.run(cmd[:3] + ["toyworld"] + cmd[4:], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "ships no tiny decoder" in bad.stderr


def test_vae_roundtrip_measures_every_colour_and_background(tmp_path):
    """benchmarks/vae_roundtrip.py on the shipped toy VAE: a row per colour and background, ground-truth triangles
    read below the triangle line, the decoded ones measured too."""
    import json

    from benchmarks.vae_roundtrip import main
    from pipeline.toyworld.world import BACKGROUNDS, COLOURS

    out = tmp_path / "fill.json"
    assert main(["--model", "toyworld-rt", "--seeds", "1", "--frames", "5", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert len(got["rows"]) == len(COLOURS) * len(BACKGROUNDS)
    for r in got["rows"]:
        assert r["fill_truth"] < got["thresholds"]["triangle_below"] and 0 < r["fill_decoded"] < 1
        assert sum(r["read_as"].values()) == 1


def test_vae_roundtrip_of_every_shape_through_the_tiny_decoder(tmp_path):
    """--shape all --tiny-vae model: a row per shape, colour and background, decoded by the model's tiny decoder
    (streamed, its first frames trimmed as in the daemon), and each shape's ground truth read as that shape."""
    import json

    from benchmarks.vae_roundtrip import main
    from pipeline.toyworld.world import BACKGROUNDS, COLOURS, SHAPES

    out = tmp_path / "fill.json"
    assert main(["--model", "toyworld-rt", "--shape", "all", "--tiny-vae", "model", "--seeds", "1", "--frames", "5",
                 "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert got["tiny_vae"] == "model"
    assert len(got["rows"]) == len(SHAPES) * len(COLOURS) * len(BACKGROUNDS)
    assert {r["shape"] for r in got["rows"]} == set(SHAPES)
    truth = {"triangle": (0.0, got["thresholds"]["triangle_below"]),
             "circle": (got["thresholds"]["triangle_below"], got["thresholds"]["circle_below"]),
             "square": (got["thresholds"]["circle_below"], 1.01)}
    for r in got["rows"]:
        lo, hi = truth[r["shape"]]
        assert lo <= r["fill_truth"] < hi and 0 < r["fill_decoded"] <= 1
        assert sum(r["read_as"].values()) == 1

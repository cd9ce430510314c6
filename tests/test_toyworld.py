"""Toy world: prompt grammar, deterministic torus rendering, and the analytic classifier on ground truth."""
import numpy as np
import pytest

from pipeline.toyworld.classify import classify_block, classify_frames, smoothness
from pipeline.toyworld.world import (BACKGROUNDS, COLOURS, Scene, all_scenes, centres, parse_prompt, prompt_of,
                                     render)

SCENES = all_scenes()


def degrade(frames, sigma, rng):
    """Slight blur ([1, 2, 1] / 4, both axes, edge-padded) then Gaussian noise of `sigma` uint8 levels."""
    x = frames.astype(np.float32)
    k = (0.25, 0.5, 0.25)
    p = np.pad(x, ((0, 0), (1, 1), (0, 0), (0, 0)), mode="edge")
    x = k[0] * p[:, :-2] + k[1] * p[:, 1:-1] + k[2] * p[:, 2:]
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (0, 0)), mode="edge")
    x = k[0] * p[:, :, :-2] + k[1] * p[:, :, 1:-1] + k[2] * p[:, :, 2:]
    x = x + rng.normal(0.0, sigma, x.shape)
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def test_vocabulary_and_prompt_round_trip():
    assert len(SCENES) == 6 * 3 * 4 * 4 == len(set(SCENES))
    for s in SCENES:
        assert parse_prompt(prompt_of(s)) == s
    assert parse_prompt("  a red circle moving left on a dark green background\n").background == "dark green"
    for bg in BACKGROUNDS.values():  # backgrounds are far from every shape colour
        assert min(np.linalg.norm(np.subtract(bg, c)) for c in COLOURS.values()) > 120


@pytest.mark.parametrize("bad", ["", "a red circle moving left", "a pink circle moving left on a black background",
                                 "a red circle moving left on a white background",
                                 "A red circle moving left on a black background",
                                 "a red circle moving left on a black background!"])
def test_parse_prompt_rejects(bad):
    with pytest.raises(ValueError, match="toy-world prompt"):
        parse_prompt(bad)


def test_scene_rejects_unknown_attribute():
    with pytest.raises(ValueError, match="colour"):
        Scene("pink", "circle", "left", "black")


@pytest.mark.parametrize("t0", [0, 5, 10**6, 10**9 + 7])
def test_render_deterministic_and_clip_equals_frames(t0):
    s = Scene("yellow", "triangle", "up", "navy")
    clip = render(s, 9, t0=t0, seed=3)
    assert clip.shape == (9, 64, 64, 3) and clip.dtype == np.uint8
    assert np.array_equal(clip, render(s, 9, t0=t0, seed=3))
    for k in range(9):
        assert np.array_equal(clip[k], render(s, 1, t0=t0 + k, seed=3)[0])
    assert np.array_equal(clip[4:], render(s, 5, t0=t0 + 4, seed=3))
    assert not np.array_equal(clip, render(s, 9, t0=t0, seed=4))  # the seed moves the start


def test_seed_sets_start_and_speed_is_constant():
    s = Scene("red", "square", "right", "black")
    c = centres(s, np.arange(40), seed=7, speed_px=1.5)
    d = np.mod(np.diff(c, axis=0) + 32, 64) - 32
    assert np.allclose(d, [0.0, 1.5])
    assert np.allclose(centres(s, [10**6], seed=7, speed_px=1.5)[0],
                       np.mod(c[0] + [0.0, 1.5 * 10**6], 64))


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
@pytest.mark.parametrize("direction", ["left", "down"])
def test_wrap_around_keeps_shape_whole(shape, direction):
    s = Scene("white", shape, direction, "black")
    # start so that the clip crosses an edge: 64 frames at 1 px/frame covers the whole torus
    clip = render(s, 64, seed=0, speed_px=1.0, start=(8.3, 8.7))
    alpha = clip[..., 0].astype(np.float64).sum((1, 2)) / 240.0  # total coverage per frame
    assert alpha.min() > 0 and (alpha.max() - alpha.min()) / alpha.mean() < 0.03
    # and an explicitly straddling frame (centre on the corner) has the same coverage as a centred one
    corner = render(s, 1, start=(0.0, 0.0))[0, ..., 0].astype(np.float64).sum() / 240.0
    centred = render(s, 1, start=(32.0, 32.0))[0, ..., 0].astype(np.float64).sum() / 240.0
    assert abs(corner - centred) / centred < 0.01


def _check(pred, s):
    return {k: pred[k] == getattr(s, k) for k in ("colour", "shape", "background", "direction")}


def test_classifier_exact_on_ground_truth():
    wrong = []
    for i, s in enumerate(SCENES):
        for seed in (i, 1000 + i):
            p = classify_block(render(s, 6, seed=seed, t0=seed * 37), s)
            if not p["all_correct"]:
                wrong.append((prompt_of(s), seed, p))
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("start", [(0.0, 0.0), (32.0, 0.2), (63.5, 40.0), (3.0, 61.0)])
def test_classifier_on_edge_straddling_clips(start):
    for s in SCENES[::5]:
        clip = render(s, 5, start=start, t0=0)
        p = classify_frames(clip)
        assert p.scene() == s, (prompt_of(s), start)
        assert all(p.visible)
        truth = centres(s, np.arange(5), start=start)
        got = np.array(p.centroids)
        err = np.abs(np.mod(got - truth + 32, 64) - 32)
        if s.shape != "triangle":  # a triangle's centroid sits below its box centre
            assert err.max() < 0.6


def test_classifier_tolerates_noise_and_blur():
    rng = np.random.default_rng(0)
    ok = 0
    for i, s in enumerate(SCENES):
        ok += classify_block(degrade(render(s, 6, seed=i), 8.0, rng), s)["all_correct"]
    assert ok / len(SCENES) >= 0.95, ok / len(SCENES)


def test_smoothness_of_rendered_clips():
    for s, speed in ((Scene("green", "circle", "right", "gray"), 2.0), (Scene("blue", "square", "up", "black"), 3.0),
                     (Scene("magenta", "triangle", "left", "navy"), 1.0)):
        m = smoothness(render(s, 40, seed=11, speed_px=speed))  # 40 frames: crosses an edge at any speed here
        assert m["visible_frac"] == 1.0
        assert abs(m["max_jump"] - speed) < 0.6 and abs(m["mean_jump"] - speed) < 0.1
        assert m["area_cv"] < 0.05


def test_no_shape_is_invisible():
    s = Scene("red", "circle", "left", "gray")
    clip = render(s, 4, seed=1)
    clip[2] = BACKGROUNDS["gray"]
    p = classify_frames(clip)
    assert p.visible == [True, True, False, True] and p.centroids[2] is None and p.areas[2] == 0.0
    assert p.scene() == s  # the direction survives the gap
    empty = np.broadcast_to(np.array(BACKGROUNDS["navy"], np.uint8), (3, 64, 64, 3)).copy()
    p = classify_frames(empty)
    assert p.visible == [False] * 3 and p.background == "navy" and p.shape is None and p.direction is None
    noisy = degrade(empty, 8.0, np.random.default_rng(1))
    assert not any(classify_frames(noisy).visible)
    assert smoothness(empty)["visible_frac"] == 0.0

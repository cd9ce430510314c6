"""Coordinated noise: one seeded pool, reused without the previous block's last C frames."""
import torch

from pipeline.dualparal.noise import NoisePool, block_pool_indices


def test_each_block_avoids_the_previous_blocks_last_context_frames():
    B, C = 4, 2
    prev = block_pool_indices(7, 0, B, C)
    assert sorted(prev) == list(range(B))
    for b in range(1, 40):
        idx = block_pool_indices(7, b, B, C)
        assert len(idx) == B and len(set(idx)) == B
        assert not set(idx) & set(prev[-C:])
        assert all(0 <= i < B + C for i in idx)
        prev = idx


def test_pure_function_of_seed_and_block():
    a = [block_pool_indices(3, b, 4, 2) for b in range(30)]
    # ask again out of order: same answers (re-entry after a cut asks for an earlier block)
    assert block_pool_indices(3, 12, 4, 2) == a[12]
    assert block_pool_indices(3, 29, 4, 2) == a[29]
    assert block_pool_indices(3, 0, 4, 2) == a[0]
    other = [block_pool_indices(4, b, 4, 2) for b in range(30)]
    assert a != other


def test_noise_is_drawn_from_the_pool_and_is_device_independent():
    p = NoisePool(seed=5, channels=16, block_frames=3, context_frames=1, lat_h=4, lat_w=4)
    n = p.block_noise(2)
    assert n.shape == (1, 16, 3, 4, 4)
    idx = block_pool_indices(5, 2, 3, 1)
    for j, i in enumerate(idx):
        assert torch.equal(n[0, :, j], p.pool[i])
    q = NoisePool(seed=5, channels=16, block_frames=3, context_frames=1, lat_h=4, lat_w=4)
    assert torch.equal(q.block_noise(9), p.block_noise(9))

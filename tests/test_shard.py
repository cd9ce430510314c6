"""Each rank reads only its own weights: the loaded state is exactly its slice; nothing else is materialised."""
import pytest
import torch

from pipeline.config import ConfigError
from pipeline.model.components import load_components, save_components
from pipeline.model.shard import load_transformer_slice, materialised
from pipeline.dualparal.stages import balanced_split


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    comps = load_components("tiny")
    save_components(comps, path)
    return str(path), comps.transformer.state_dict()


def test_balanced_split():
    # the spare blocks go to the middle ranks, then the last, rank 0 last (it also runs prologue and scheduler)
    assert balanced_split(30, 4) == [(0, 7), (7, 15), (15, 23), (23, 30)]
    assert balanced_split(30, 2) == [(0, 15), (15, 30)]
    assert balanced_split(4, 3) == [(0, 1), (1, 3), (3, 4)]
    assert balanced_split(11, 4) == [(0, 2), (2, 5), (5, 8), (8, 11)]
    assert balanced_split(12, 8) == [(0, 1), (1, 3), (3, 5), (5, 7), (7, 9), (9, 10), (10, 11), (11, 12)]
    assert balanced_split(4, 1) == [(0, 4)]
    with pytest.raises(ValueError):
        balanced_split(2, 3)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_each_rank_materialises_exactly_its_slice(saved, world):
    path, full = saved
    split = balanced_split(4, world)
    seen = set()
    for rank, layers in enumerate(split):
        first, last = rank == 0, rank == world - 1
        model = load_transformer_slice(path, layers, first, last, "cpu", torch.float32)
        names = materialised(model)
        expect = {k for k in full if (k.startswith("blocks.") and layers[0] <= int(k.split(".")[1]) < layers[1])
                  or (first and k.startswith(("patch_embedding.", "condition_embedder.")))
                  or (last and k.startswith(("proj_out.", "scale_shift_table")))}
        assert names - {k for k in names if k.startswith("rope.")} == expect
        for k in expect:
            assert torch.equal(model.state_dict()[k], full[k])
        seen |= expect
    assert seen == set(full)  # together the ranks hold the whole model, each tensor once


def test_bad_slice_is_a_config_error(saved):
    with pytest.raises(ConfigError):
        load_transformer_slice(saved[0], (0, 9), True, True, "cpu", torch.float32)

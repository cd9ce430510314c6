"""Tiny model construction, save/load round trip through a real diffusers WanPipeline folder, and load errors."""
import json
import re

import diffusers
import pytest
import torch

from pipeline.config import ConfigError
from pipeline.model.components import load_components, save_components
from pipeline.model.random_wan import TINY_TEXT_MAX_LEN, build_tiny_components

PROMPTS = ["a red circle moving left on a black background", "Zebra!! in  Tokyo, 2024", ""]


def tokenize(tok, prompts=PROMPTS):
    return tok(
        prompts,
        padding="max_length",
        max_length=TINY_TEXT_MAX_LEN,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )


def assert_same_params(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and len(sa) > 0
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    comps = load_components("tiny")
    path = tmp_path_factory.mktemp("tiny_wan")
    save_components(comps, path)
    return comps, path


def test_tiny_is_deterministic():
    a, b, c = build_tiny_components(0), build_tiny_components(0), build_tiny_components(1)
    for k in ("transformer", "vae", "text_encoder"):
        assert_same_params(a[k], b[k])
        sa, sc = a[k].state_dict(), c[k].state_dict()
        assert any(not torch.equal(sa[n], sc[n]) for n in sa)  # another seed, other weights
    assert isinstance(a["transformer"], diffusers.WanTransformer3DModel)
    assert isinstance(a["vae"], diffusers.AutoencoderKLWan)
    assert a["vae"].config.scale_factor_spatial == 8 and a["vae"].config.scale_factor_temporal == 4


def test_tokenizer_behaves_like_umt5():
    tok = build_tiny_components(0)["tokenizer"]
    enc = tokenize(tok)
    assert enc.input_ids.shape == (3, TINY_TEXT_MAX_LEN)
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    n = int(enc.attention_mask[0].sum())
    assert enc.input_ids[0, n - 1] == tok.eos_token_id and (enc.input_ids[0, n:] == 0).all()
    assert enc.input_ids[2, 0] == tok.eos_token_id  # empty prompt: just </s>
    assert len(set(enc.input_ids[0].tolist())) > 5  # words map to distinct ids, not all <unk>
    long = tokenize(tok, ["red " * 100])
    assert int(long.attention_mask.sum()) == TINY_TEXT_MAX_LEN  # truncated to max_length


def test_save_load_round_trip(saved):
    comps, path = saved
    back = load_components(str(path), flow_shift=5.0)
    for k in ("transformer", "vae", "text_encoder"):
        assert_same_params(getattr(comps, k), getattr(back, k))
    assert torch.equal(tokenize(comps.tokenizer).input_ids, tokenize(back.tokenizer).input_ids)
    assert back.text_max_len == TINY_TEXT_MAX_LEN
    assert isinstance(back.scheduler, diffusers.UniPCMultistepScheduler)
    assert back.scheduler.config.flow_shift == 5.0 and back.scheduler.config.use_flow_sigmas
    assert back.scheduler.config.prediction_type == "flow_prediction"


def test_diffusers_loads_saved_folder(saved):
    comps, path = saved
    pipe = diffusers.WanPipeline.from_pretrained(str(path))
    assert_same_params(comps.transformer, pipe.transformer)
    assert_same_params(comps.vae, pipe.vae)
    assert torch.equal(tokenize(comps.tokenizer).input_ids, tokenize(pipe.tokenizer).input_ids)


def test_parts_and_dtypes(saved):
    _, path = saved
    only_vae = load_components(str(path), parts=("vae",), dtype=torch.bfloat16)
    assert only_vae.transformer is None and only_vae.text_encoder is None and only_vae.tokenizer is None
    assert only_vae.vae.dtype == torch.float32  # the VAE stays float32
    assert only_vae.text_max_len == TINY_TEXT_MAX_LEN  # read from the folder without loading the tokenizer
    tiny = load_components("tiny", dtype=torch.bfloat16, parts=("transformer", "text"))
    assert tiny.vae is None
    assert tiny.transformer.patch_embedding.weight.dtype == torch.bfloat16
    assert tiny.transformer.scale_shift_table.dtype == torch.float32  # kept in fp32 like from_pretrained does
    assert tiny.text_encoder.dtype == torch.bfloat16


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_components(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="model_index.json"):
        load_components(str(tmp_path))
    with pytest.raises(ConfigError, match="unknown model part"):
        load_components("tiny", parts=("unet",))
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(ConfigError, match="unsupported pipeline None"):
        load_components(str(tmp_path))  # an index that names no pipeline
    (tmp_path / "model_index.json").write_text(json.dumps({
        "_class_name": "WanPipeline", "transformer": ["diffusers", "WanTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLWan"]}))
    with pytest.raises(ConfigError, match="transformer/config.json is missing"):
        load_components(str(tmp_path))  # a folder with an index but no component subfolders


def test_model_defaults_file_is_checked(tmp_path):
    """A model folder's streamer.json goes through the same option checks as a --config file."""
    from pipeline.model.components import DEFAULTS_FILE, model_defaults
    from pipeline.settings import MODEL_KEYS

    f = tmp_path / DEFAULTS_FILE
    f.write_text(json.dumps({"steps": 8, "guidance": 3}))
    assert model_defaults(str(tmp_path), MODEL_KEYS) == {"steps": 8, "guidance": 3.0}
    for bad, needle in (({"steps": "8"}, "steps must be int"), ({"stepz": 8}, "unknown key(s) stepz"),
                        ({"model": "x"}, "unknown key(s) model"), ([1], "expected a JSON object")):
        f.write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=re.escape(needle)):
            model_defaults(str(tmp_path), MODEL_KEYS)

"""PromptEncoder: same embeddings as diffusers' WanPipeline.encode_prompt, cached, thread-safe."""
import threading

import pytest
import torch
from diffusers import WanPipeline

from pipeline.settings import WAN_NEGATIVE_PROMPT
from pipeline.model.text import PromptEncoder
from pipeline.model.random_wan import TINY_TEXT_MAX_LEN, build_tiny_components

PROMPTS = [
    "a red circle moving left on a black background",
    "  A  Blue   square &amp; a zebra\n in Tokyo, 2024!  ",  # cleaning: html entities, whitespace, unknown words
    WAN_NEGATIVE_PROMPT,  # longer than the tiny max length: truncated
    "",
]


@pytest.fixture(scope="module")
def parts():
    return build_tiny_components(0)


def make(parts, **kw):
    return PromptEncoder(parts["tokenizer"], parts["text_encoder"], TINY_TEXT_MAX_LEN, "cpu", torch.float32, **kw)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_matches_wan_pipeline(parts, prompt):
    pipe = WanPipeline(**parts)
    with torch.no_grad():  # as in WanPipeline.__call__ (SDPA may pick another kernel when grad is on)
        expect, _ = pipe.encode_prompt(
            prompt, do_classifier_free_guidance=False, max_sequence_length=TINY_TEXT_MAX_LEN, device=torch.device("cpu")
        )
    got = make(parts).encode(prompt)
    assert got.shape == (1, TINY_TEXT_MAX_LEN, 32)
    assert torch.equal(got, expect)


def test_padding_is_zero_after_prompt(parts):
    emb = make(parts).encode("a red circle")  # 3 words + </s> = 4 tokens
    assert emb[0, :4].abs().sum() > 0
    assert torch.count_nonzero(emb[0, 4:]) == 0


def test_cache_and_distinct_prompts(parts):
    enc = make(parts, cache_size=2)
    a = enc.encode("a red circle")
    assert enc.encode("a red circle") is a
    b = enc.encode("a blue square")
    assert not torch.equal(a, b)
    enc.encode("a green tree")  # evicts the least recently used ("a red circle")
    assert not enc.cached("a red circle") and enc.cached("a blue square")
    again = enc.encode("a red circle")
    assert again is not a and torch.equal(again, a)


def test_concurrent_encodes_agree(parts):
    enc = make(parts)
    prompts = [f"a {c} ball" for c in ("red", "blue", "green", "pink")] * 3
    results = [None] * len(prompts)

    def work(i):
        results[i] = enc.encode(prompts[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    fresh = make(parts)
    for p, r in zip(prompts, results):
        assert r is enc.encode(p)  # every thread got the single cached tensor
        assert torch.equal(r, fresh.encode(p))

"""Prompt -> Wan text embeddings, computed exactly like diffusers' WanPipeline, with a thread-safe LRU cache."""
from __future__ import annotations

import threading
from collections import OrderedDict

import torch
from diffusers.pipelines.wan.pipeline_wan import prompt_clean


class PromptEncoder:
    """encode(prompt) -> [1, max_len, text_dim] on `device`/`dtype`.

    Safe to call from several threads (e.g. an IO thread encoding a new prompt while the engine thread looks up
    cached ones): cache hits never wait for an encode in progress. Returned tensors are shared with the cache:
    treat them as read-only.
    """

    def __init__(self, tokenizer, text_encoder, max_len: int, device="cpu", dtype=torch.float32, cache_size: int = 64):
        if cache_size < 1:
            raise ValueError("cache_size must be >= 1")
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.max_len = int(max_len)
        self.device = torch.device(device)
        self.dtype = dtype
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()  # guards _cache only (held briefly)
        self._encode_lock = threading.Lock()  # serialises text-encoder forwards

    def _lookup(self, prompt: str):
        with self._cache_lock:
            emb = self._cache.get(prompt)
            if emb is not None:
                self._cache.move_to_end(prompt)
            return emb

    def encode(self, prompt: str) -> torch.Tensor:
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        emb = self._lookup(prompt)
        if emb is not None:
            return emb
        with self._encode_lock:
            emb = self._lookup(prompt)  # another thread may have just encoded it
            if emb is not None:
                return emb
            emb = self._encode_uncached(prompt)
        with self._cache_lock:
            self._cache[prompt] = emb
            self._cache.move_to_end(prompt)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return emb

    @torch.no_grad()
    def _encode_uncached(self, prompt: str) -> torch.Tensor:
        # Mirrors WanPipeline._get_t5_prompt_embeds for one prompt, one video.
        inputs = self.tokenizer(
            [prompt_clean(prompt)],
            padding="max_length",
            max_length=self.max_len,
            truncation=True,
            add_special_tokens=True,
            return_attention_mask=True,
            return_tensors="pt",
        )
        ids, mask = inputs.input_ids, inputs.attention_mask
        seq_len = int(mask.gt(0).sum(dim=1).long()[0])
        model_device = next(self.text_encoder.parameters()).device
        hidden = self.text_encoder(ids.to(model_device), mask.to(model_device)).last_hidden_state
        hidden = hidden.to(dtype=self.dtype, device=self.device)[0, :seq_len]
        emb = torch.cat([hidden, hidden.new_zeros(self.max_len - seq_len, hidden.size(1))])
        return emb.unsqueeze(0)

    def cached(self, prompt: str) -> bool:
        with self._cache_lock:
            return prompt in self._cache

    def clear(self) -> None:
        with self._cache_lock:
            self._cache.clear()

"""Decoders with a key/value cache and its rollback, at batch size 1 (the `Decoder` of
`speculative.py`), for the project's GPT and for Hugging Face models.

The project's GPT (`reproductions/transformer/gpt.py`) already keeps a cache per layer (a dict
with the keys "k" and "v", shaped batch x heads x time x head_dim) and attends causally from new
tokens to the cached ones, so the wrapper only owns the caches and cuts them back; the GPT's code
is unchanged.
"""

from __future__ import annotations

import torch

from reproductions.transformer.gpt import GPT


class GPTDecoder:
    """The project's GPT, decoding one sequence with its per-layer caches."""

    def __init__(self, gpt: GPT):
        self.gpt = gpt
        self.caches: list[dict] = []
        self.reset()

    @property
    def length(self) -> int:
        return self.caches[0]["k"].size(2) if "k" in self.caches[0] else 0

    @property
    def vocab_size(self) -> int:
        return self.gpt.cfg.vocab_size

    def reset(self) -> None:
        self.caches = [{} for _ in self.gpt.blocks]

    @torch.no_grad()
    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.gpt(tokens[None].to(self.gpt.wte.weight.device), caches=self.caches)[0][0]

    def truncate(self, length: int) -> None:
        if length < self.length:
            for c in self.caches:
                c["k"], c["v"] = c["k"][:, :, :length], c["v"][:, :, :length]


class HFDecoder:
    """A Hugging Face causal language model (`AutoModelForCausalLM`) with a `DynamicCache`, cut back
    with the cache's own `crop`."""

    def __init__(self, model):
        self.model = model
        self.reset()

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    def reset(self) -> None:
        from transformers import DynamicCache

        self.cache = DynamicCache()
        self.length = 0

    @torch.no_grad()
    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=tokens[None].to(self.model.device), past_key_values=self.cache, use_cache=True)
        self.length += tokens.numel()
        return out.logits[0]

    def truncate(self, length: int) -> None:
        if length < self.length:
            self.cache.crop(length - self.length)  # negative: the number of tokens to remove (transformers 4 and 5)
            self.length = length


class HFSeq2SeqDecoder:
    """The decoder of a Hugging Face encoder-decoder model (T5, the paper's models), for one source
    sequence: the encoder runs once per `set_source`, the decoder's self-attention cache is cut back
    with `EncoderDecoderCache.crop` (the cross-attention keys stay, they depend on the source only).
    The decoder's sequence starts with the model's `decoder_start_token_id`."""

    def __init__(self, model):
        self.model = model
        self.encoder_outputs = None
        self.length = 0

    @property
    def vocab_size(self) -> int:
        return self.model.config.vocab_size

    @torch.no_grad()
    def set_source(self, input_ids: torch.Tensor) -> None:
        self.input_ids = input_ids[None].to(self.model.device)
        self.encoder_outputs = self.model.get_encoder()(input_ids=self.input_ids)
        self.reset()

    def reset(self) -> None:
        from transformers import DynamicCache, EncoderDecoderCache

        self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        self.length = 0

    @torch.no_grad()
    def extend(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.model(encoder_outputs=self.encoder_outputs, decoder_input_ids=tokens[None].to(self.model.device),
                         past_key_values=self.cache, use_cache=True)
        self.length += tokens.numel()
        return out.logits[0]

    def truncate(self, length: int) -> None:
        if length < self.length:
            self.cache.crop(length - self.length)  # negative: the number of tokens to remove (transformers 4 and 5)
            self.length = length

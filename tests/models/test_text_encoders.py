"""Text encoders: MiniLM offline, hash determinism, the prompt cache, a tiny umT5 from a folder."""

import threading

import pytest
import torch

from models.config import TextEncoderConfig
from models.text_encoders import HashEncoder, MiniLMEncoder, PromptCache, build_text_encoder


@pytest.fixture(scope="module")
def minilm():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        yield MiniLMEncoder(max_length=16)


def test_minilm_loads_offline_and_separates_prompts(minilm):
    states, mask = minilm.encode(["a red circle on a blue background", "a green triangle", "a red circle on a blue background"])
    assert states.shape == (3, 16, 384) and mask.shape == (3, 16) and mask.dtype == torch.bool
    assert mask[1].sum() < mask[0].sum()  # shorter prompt, fewer real tokens
    assert torch.all(states[~mask] == 0)  # padded positions are zeroed
    torch.testing.assert_close(states[0], states[2])
    assert (states[0] - states[1]).abs().max() > 0.1


def test_hash_encoder_is_deterministic_and_prompt_specific():
    a = HashEncoder(dim=32, max_length=8, seed=0)
    b = HashEncoder(dim=32, max_length=8, seed=0)
    s1, m1 = a.encode(["a red circle", "a blue square", ""])
    s2, m2 = b.encode(["a red circle", "a blue square", ""])
    assert torch.equal(s1, s2) and torch.equal(m1, m2)
    assert m1.sum(1).tolist() == [4, 4, 1]  # words + end token; empty prompt keeps the end token
    assert not torch.equal(s1[0], s1[1])
    assert not torch.equal(HashEncoder(dim=32, max_length=8, seed=1).encode(["a red circle"])[0][0], s1[0])
    long_states, long_mask = a.encode(["one two three four five six seven eight nine ten"])
    assert long_mask.all() and long_states.shape == (1, 8, 32)


class _CountingEncoder(HashEncoder):
    def __init__(self):
        super().__init__(dim=4, max_length=4)
        self.calls: list[list[str]] = []

    def _encode(self, prompts):
        self.calls.append(prompts)
        return super()._encode(prompts)


def test_prompt_cache_hits_do_not_reencode():
    enc = _CountingEncoder()
    cache = PromptCache(enc, cache_size=2)
    first, _ = cache.get("red")
    again, _ = cache.get("red")
    assert enc.calls == [["red"]] and torch.equal(first, again) and first.shape == (1, 4, 4)
    states, mask = cache.get_batch(["red", "blue", "green", "blue"])
    assert enc.calls[-1] == ["blue", "green"] and states.shape == (4, 4, 4) and mask.shape == (4, 4)
    torch.testing.assert_close(states[1], states[3])
    cache.get("red")  # evicted by blue and green (size 2): encoded again
    assert enc.calls[-1] == ["red"] and (cache.hits, cache.misses) == (2, 4)


def test_prompt_cache_is_thread_safe():
    enc = _CountingEncoder()
    cache = PromptCache(enc, cache_size=8)
    threads = [threading.Thread(target=lambda: [cache.get(f"p{i % 4}") for i in range(20)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(c) for c in enc.calls) == 4 and cache.misses == 4


def test_build_text_encoder_checks_kind_and_dim(tmp_path):
    cache = build_text_encoder(TextEncoderConfig(kind="hash", max_length=8, dim=64, cache_size=4))
    assert isinstance(cache, PromptCache) and cache.get("x")[0].shape == (1, 8, 64)
    with pytest.raises(ValueError, match="needs a model directory"):
        build_text_encoder(TextEncoderConfig(kind="umt5"), None)
    with pytest.raises(ValueError, match="unknown text encoder"):
        build_text_encoder(TextEncoderConfig(kind="clip", dim=64))
    with pytest.raises(ValueError, match="hidden size 384"):
        build_text_encoder(TextEncoderConfig(kind="minilm", max_length=8, dim=4096))


def test_tiny_umt5_loads_from_a_model_folder(tmp_path, minilm):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    vocab = len(minilm.tokenizer)
    cfg = UMT5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                     relative_attention_num_buckets=8, decoder_start_token_id=0)
    UMT5EncoderModel(cfg).save_pretrained(tmp_path / "text_encoder")
    minilm.tokenizer.save_pretrained(tmp_path / "tokenizer")  # any local tokenizer stands in
    cache = build_text_encoder(TextEncoderConfig(kind="umt5", max_length=12, dim=32, cache_size=2), tmp_path)
    states, mask = cache.get_batch(["a red circle", "a much longer prompt about a blue square"])
    assert states.shape == (2, 12, 32) and mask.sum(1)[0] < mask.sum(1)[1]
    assert torch.all(states[~mask] == 0) and (states[0] - states[1]).abs().max() > 0

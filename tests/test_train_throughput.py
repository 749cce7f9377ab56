"""The train_throughput evaluator: tokens/s of a language model's forward + backward, timed the
same way for every arm; the metric recomputes from the step times; the model is left as it was;
a step known to take at least 50 ms cannot report more than its tokens / 0.05 s."""

import time

import pytest
import torch

from evals.evaluators import derived_metrics
from evals.evaluators.train_throughput import TrainThroughputOptions, check, tiny, train_throughput
from reproductions.transformer import lm


def small_lm():
    torch.manual_seed(0)
    return lm.build(lm.Config(n_layer=1, n_head=2, n_embd=32, block_size=32))


def test_throughput_of_a_small_lm_leaves_it_unchanged():
    model = small_lm().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = train_throughput(model, None, TrainThroughputOptions(batch_size=2, warmup=1, steps=3))
    assert result.protocol["tokens_per_step"] == 2 * 32 and len(result.samples["step_seconds"]) == 3
    assert result.metrics["train_tokens_per_s"] > 0 and "train_peak_memory_gib" not in result.metrics  # CPU
    assert derived_metrics(result) == result.metrics
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_slow_step_is_timed_as_slow():
    model = small_lm()
    forward = model.forward

    def slow(idx, targets=None):
        time.sleep(0.05)
        return forward(idx, targets)

    model.forward = slow
    result = train_throughput(model, None, TrainThroughputOptions(batch_size=1, window=16, warmup=0, steps=2))
    assert result.metrics["train_tokens_per_s"] <= 16 / 0.05
    assert min(result.samples["step_seconds"]) >= 0.05


def test_not_a_language_model_is_not_scored_and_the_dry_run_budget_is_tiny():
    result = train_throughput(torch.nn.Linear(2, 2), None, TrainThroughputOptions())
    assert result.metrics == {} and result.protocol["scored"] is False
    small = tiny(TrainThroughputOptions(batch_size=8, warmup=5, steps=20, autocast="bf16"))
    assert (small.batch_size, small.window, small.warmup, small.steps, small.autocast) == (1, 64, 1, 1, "bf16")


def test_settings_that_cannot_work_are_named():
    model = small_lm()
    assert check(model, None, TrainThroughputOptions(batch_size=2)) == []
    assert check(model, None, TrainThroughputOptions(window=64)) == [
        "train_throughput: window=64 exceeds the model's block size 32"]
    assert "does not fit the train split" in check(model, None, TrainThroughputOptions(batch_size=10**6))[0]
    with pytest.raises(ValueError, match="exceeds the model's block size"):
        train_throughput(model, None, TrainThroughputOptions(window=64))


def test_throughput_on_fineweb_shards_times_a_gpt2_token_batch(tmp_path):
    """`data: fineweb` times a batch of the train shards' first tokens (a model of GPT-2 ids, which
    the code corpus's tokenizers cannot feed), and a missing root is named."""
    from evals.tasks import fineweb
    from reproductions.flash_attention import gpt_speed

    fineweb.write_shard(tmp_path / "fineweb_train_000001.bin", (torch.arange(4096) * 13 % fineweb.VOCAB_SIZE).numpy())
    fineweb.write_shard(tmp_path / "fineweb_val_000000.bin", torch.arange(1024).numpy())
    model = gpt_speed.build(gpt_speed.Config(n_layer=1, n_head=2, n_embd=32, block_size=32, attention="naive",
                                             data="fineweb", data_root=str(tmp_path), tokenizer="gpt2"))
    options = TrainThroughputOptions(batch_size=2, warmup=0, steps=2, data="fineweb", root=str(tmp_path))
    result = train_throughput(model, None, options)
    assert result.metrics["train_tokens_per_s"] > 0 and result.protocol["corpus"].startswith("fineweb10B-gpt2")
    missing = options.model_copy(update={"root": str(tmp_path / "none")})
    assert check(model, None, missing)[0].startswith("train_throughput: FineWeb GPT-2 token shards: no ")

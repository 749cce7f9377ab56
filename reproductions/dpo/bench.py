"""DPO's benchmark: training throughput (preference pairs per second) of our DPO loop on the project's
GPT against TRL's `DPOTrainer` on a Hugging Face GPT-2 of the same shape (layers, width, heads,
vocabulary of the review language), the same pairs, batch, beta and learning rate, one CPU thread.

Both sides compute the reference's log-probabilities once before training (ours as the mini tier
does, TRL's `precompute_ref_log_probs` when the trainer is built), and only the training steps are
timed: TRL's tokenisation and reference pass happen before its clock starts, and ours, timed alone
the same way, is subtracted from our loop's time. Ours runs the preferred and the dispreferred
completions as two forward passes, TRL as one concatenated batch."""

from __future__ import annotations

import tempfile
import time

import torch

from evals.contract import QuietRun
from evals.tasks import reviews
from reproductions.dpo import dpo as D

STEPS = 20


def _pairs(cfg: D.Config, n: int):
    g = torch.Generator().manual_seed(0)
    gpt = D.GPT(D.gpt_config(cfg))
    prompts = reviews.prompts(n, g)
    return D.sample(gpt, prompts, g), D.sample(gpt, prompts, g)


def _ours(cfg: D.Config, chosen, rejected) -> float:
    agent = D.build(cfg)
    names = [n for n, _ in D.point_names(cfg)][:cfg.checkpoints]
    one_epoch = D.Config(**{**cfg.__dict__, "dpo_epochs": 1})
    t0 = time.perf_counter()
    with torch.no_grad():   # the reference pass that `dpo` makes first, timed alone to leave it out
        D.sequence_logprobs(agent.reference, chosen), D.sequence_logprobs(agent.reference, rejected)
    reference_pass = time.perf_counter() - t0
    t0 = time.perf_counter()
    D.dpo(agent, one_epoch, cfg.dpo_betas[0], chosen, rejected, torch.Generator().manual_seed(0),
          D.Meter(1), QuietRun(), names, 0)
    return chosen.size(0) / (time.perf_counter() - t0 - reference_pass)


def _text(row: list[int]) -> str:
    return reviews.decode([t for t in row if t not in (reviews.PAD_ID,)])


def _trl(cfg: D.Config, chosen, rejected) -> float:
    from datasets import Dataset
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    from trl import DPOConfig, DPOTrainer

    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(reviews.VOCAB)}, unk_token=reviews.PAD))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=reviews.PAD, eos_token=reviews.EOS,
                                        bos_token=reviews.BOS)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(reviews.VOCAB), n_positions=64,
                                       n_embd=cfg.n_embd, n_layer=cfg.n_layer, n_head=cfg.n_head,
                                       bos_token_id=reviews.BOS_ID, eos_token_id=reviews.EOS_ID,
                                       pad_token_id=reviews.PAD_ID))
    data = Dataset.from_dict({
        "prompt": [_text(r[:D.P]) for r in chosen.tolist()],
        "chosen": [" " + _text(r[D.P:]).replace(reviews.EOS, "").strip() for r in chosen.tolist()],
        "rejected": [" " + _text(r[D.P:]).replace(reviews.EOS, "").strip() for r in rejected.tolist()]})
    with tempfile.TemporaryDirectory() as tmp:
        args = DPOConfig(output_dir=tmp, per_device_train_batch_size=cfg.dpo_batch, max_steps=STEPS,
                         learning_rate=cfg.dpo_lr, beta=cfg.dpo_betas[0], report_to=[], logging_steps=10**6,
                         save_strategy="no", use_cpu=True, precompute_ref_log_probs=True, dataloader_num_workers=0,
                         lr_scheduler_type="constant", warmup_steps=0, optim="adamw_torch", disable_tqdm=True)
        trainer = DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer)
        t0 = time.perf_counter()
        trainer.train()
        return STEPS * cfg.dpo_batch / (time.perf_counter() - t0)


def run(config: D.Config) -> list[dict]:
    torch.manual_seed(0)
    chosen, rejected = _pairs(config, STEPS * config.dpo_batch)
    ours, theirs = _ours(config, chosen, rejected), _trl(config, chosen, rejected)
    return [{"benchmark": f"DPO training, {STEPS} steps of {config.dpo_batch} review pairs, "
                          f"{config.n_layer} layers width {config.n_embd}, vs TRL DPOTrainer on GPT-2",
             "ours": ours, "baseline": theirs, "unit": "pairs/s", "ratio": ours / theirs}]

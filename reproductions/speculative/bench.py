"""Speculative decoding benchmarks: ours against Hugging Face's assisted generation with the same
two models converted to its GPT-2 (`hf_peer.py`), greedy, batch 1, gamma 4, timed interleaved in
one process; and the target alone, ours against transformers' `generate`. Both sides' outputs are
compared token for token (a row says how many prompts matched).

The models are the mini tier's (Config), trained here for a short budget (they are not the
records' models: what is compared is two implementations of the same algorithm on the same
weights, and a short training already gives the high greedy acceptance of code text).
"""

from __future__ import annotations

import time

import torch

from evals.contract import QuietRun
from reproductions.speculative import pair
from reproductions.speculative.hf_peer import assisted_generate, hf_greedy, to_gpt2
from reproductions.speculative.speculative import autoregressive_generate, speculative_generate
from reproductions.transformer import lm

GAMMA = 4


def _trained(config: pair.Config) -> pair.SpeculativePair:
    cfg = pair.Config(**{**vars(config), "target_steps": 80, "draft_steps": 200})
    torch.manual_seed(0)
    p = pair.build(cfg)
    lm.train(pair.lm_config(cfg, "target"), QuietRun(), model=p.target)
    lm.train(pair.lm_config(cfg, "draft"), QuietRun(), model=p.draft)
    return p


def run(config: pair.Config) -> list[dict]:
    p = _trained(config).cpu()
    target, draft = p.decoders()
    target_hf, draft_hf = to_gpt2(p.target.gpt), to_gpt2(p.draft.gpt)
    prompts = pair.held_out_prompts(config, 6, config.prompt_len, seed=0)
    n = config.new_tokens
    sides = {
        "ours_spec": lambda pr: speculative_generate(target, draft, pr, n, GAMMA).tokens,
        "hf_spec": lambda pr: assisted_generate(target_hf, draft_hf, pr, n, GAMMA),
        "ours_alone": lambda pr: autoregressive_generate(target, pr, n).tokens,
        "hf_alone": lambda pr: hf_greedy(target_hf, pr, n),
    }
    for f in sides.values():  # warm-up
        f(prompts[0][:16])
    seconds = dict.fromkeys(sides, 0.0)
    same_spec = same_alone = 0
    for pr in prompts:
        out = {}
        for name, f in sides.items():
            t0 = time.perf_counter()
            out[name] = f(pr)
            seconds[name] += time.perf_counter() - t0
        same_spec += out["ours_spec"] == out["hf_spec"] == out["ours_alone"]
        same_alone += out["ours_alone"] == out["hf_alone"]
    tps = {k: len(prompts) * n / s for k, s in seconds.items()}
    where = f"batch 1, gamma {GAMMA}, {len(prompts)} prompts x {n} tokens"
    return [
        {"benchmark": f"greedy speculative decoding, {where} (outputs identical: {same_spec}/{len(prompts)})",
         "ours": tps["ours_spec"], "baseline": tps["hf_spec"],
         "unit": "tokens/s (ours vs HF assisted generation)", "ratio": tps["ours_spec"] / tps["hf_spec"]},
        {"benchmark": f"greedy, target alone with KV cache, {len(prompts)} prompts (outputs identical: "
                      f"{same_alone}/{len(prompts)})",
         "ours": tps["ours_alone"], "baseline": tps["hf_alone"],
         "unit": "tokens/s (ours vs HF generate)", "ratio": tps["ours_alone"] / tps["hf_alone"]},
        {"benchmark": f"speculative speed-up over the target alone, {where}", "ours": tps["ours_spec"] / tps["ours_alone"],
         "baseline": tps["hf_spec"] / tps["hf_alone"], "unit": "x (ours vs HF's own speed-up)",
         "ratio": (tps["ours_spec"] / tps["ours_alone"]) / (tps["hf_spec"] / tps["hf_alone"])},
    ]

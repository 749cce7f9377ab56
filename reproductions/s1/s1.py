"""s1: Simple test-time scaling (arXiv 2501.19393), at toy scale on R1's generated arithmetic.

What the paper does, and where this module does it:
- Budget forcing (Section 3.1), decode-time control of the thinking length: a maximum (the
  end-of-thinking delimiter and "Final Answer:" forced at the cap) and a minimum (the
  end-of-thinking delimiter suppressed, "Wait" appended): `forcing.py`, `forced_sample`; the
  agent exposes it as `complete_forced` (the `BudgetForcedReasoner` capability), and the
  `budget_forcing` evaluator (evals/evaluators/budget_forcing.py) scores accuracy against the cap
  and the paper's three test-time-scaling metrics (Section 3.2, eqs. 1-3: Control, Scaling,
  Performance).
- s1K (Section 2): 1,000 questions chosen from a larger pool by three criteria in turn: quality
  (drop samples with errors or bad formatting), difficulty (favour longer reasoning traces) and
  diversity (a domain drawn uniformly, then a question of it, repeated until 1,000), against
  1,000 questions drawn at random from the quality-filtered pool (Table 2's "1K-random"); the
  model is fine-tuned on either set (`curate`, `random_set`, method `s1k`).

The models are R1's (`reproductions/r1/grpo.py`, imported): the project's GPT on R1's
character-level arithmetic task (`evals/tasks/arithmetic.py`: sums of 3-6 one-digit numbers with
worked running-total traces in `<think>` tags). Method `r1_sft` trains R1's supervised cold start
(R1's own `train`, its `sft` method with no second phase); budget forcing on it is the main
subject, R1's GRPO arm not having improved on it in R1's mini tier. Method `s1k` fine-tunes the
same GPT on a fixed set of 1,000 worked traces, curated or random, for the same number of steps.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from evals.contract import RunContext
from evals.tasks import arithmetic
from reproductions.common.tied_head import TiedHeadModule
from reproductions.common.training import restore, snapshot
from reproductions.r1 import grpo as r1
from reproductions.s1.forcing import forced_sample
from reproductions.transformer.gpt import GPT

IGNORE = -100


@dataclass
class Config(r1.ColdStartConfig):
    """The mini tier by default: R1's task, model and cold start (`r1.ColdStartConfig`, its
    defaults but the two below), then s1's own settings."""

    max_new_tokens: int = 96          # room for a 64-token thinking cap, the tags and the answer
    sft_steps: int = 1000
    # training: method r1_sft (R1's cold start on fresh problems) or s1k (a fixed set of traces)
    method: str = "r1_sft"            # r1_sft | s1k
    # s1K (method s1k): the pool, its noise, and the selection
    selection: str = "curated"        # curated (quality, difficulty, diversity) | random (quality only)
    set_size: int = 1000              # the paper's 1,000
    pool_size: int = 20000            # the paper's pool: 59K
    pool_error_rate: float = 0.2      # share of pool traces with an arithmetic slip (quality filter's work)
    pool_skew: float = 0.5            # P(k + min_operands operands) proportional to pool_skew**k: easy questions dominate
    length_halving: float = 0.1       # difficulty: a question's weight halves every this share of its domain's length ranks
    # budget forcing's "Wait": this task's alphabet has no word, so a string of it (';' opens a new step)
    continuation: str = ";"
    # logging
    log_every: int = 50
    eval_every: int = 250
    eval_problems: int = 64


def r1_config(cfg: Config) -> r1.Config:
    """R1's config for the same task, model and cold start; its supervised phase only (no GRPO)."""
    cold_start = {f.name: getattr(cfg, f.name) for f in fields(r1.ColdStartConfig)}
    return r1.Config(**cold_start, method="sft", rl_steps=0, log_every=cfg.log_every, eval_every=cfg.eval_every,
                     eval_problems=cfg.eval_problems)


# -- the agent ---------------------------------------------------------------------------------
class S1Agent(TiedHeadModule):
    """R1's GPT with budget forcing at decode time (the `Reasoner` and `BudgetForcedReasoner`
    capabilities, evals/contract.py)."""

    def __init__(self, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.gpt = GPT(r1.gpt_config(r1_config(cfg)))

    def _solver(self) -> r1.Solver:
        return r1.Solver(self.gpt, r1_config(self.cfg))

    def complete(self, prompts, temperature, top_p, generator, max_new_tokens) -> list[str]:
        return self._solver().complete(prompts, temperature, top_p, generator, max_new_tokens)

    def starting_point(self) -> None:
        return None

    def complete_forced(self, prompts: list[str], temperature: float, top_p: float, generator: torch.Generator,
                        max_new_tokens: int, max_thinking: int | None = None, extensions: int = 0,
                        wait: bool = False) -> list[str]:
        """Completions under budget forcing: the thinking capped at `max_thinking` tokens, the first
        `extensions` ends of thinking suppressed (with `wait`, the continuation string appended in
        their place)."""
        was_training = self.gpt.training
        self.gpt.eval()
        out = forced_sample(self.gpt, self._solver().encode_prompts(prompts),
                            min(max_new_tokens, self.cfg.max_new_tokens), temperature, top_p, generator,
                            max_thinking=max_thinking, extensions=extensions,
                            continuation=arithmetic.encode(self.cfg.continuation) if wait else ())
        self.gpt.train(was_training)
        return r1.texts_of(out)


def build(cfg: Config) -> S1Agent:
    if cfg.method not in ("r1_sft", "s1k"):
        raise ValueError(f"config field 'method': {cfg.method!r} is not one of ['r1_sft', 's1k']")
    if cfg.selection not in ("curated", "random"):
        raise ValueError(f"config field 'selection': {cfg.selection!r} is not one of ['curated', 'random']")
    return S1Agent(cfg)


# -- s1K: the pool and the selection (Section 2) -------------------------------------------------
@dataclass(frozen=True)
class Example:
    problem: arithmetic.Problem
    completion: str                   # the teacher's worked completion (may hold a slip)

    @property
    def domain(self) -> int:          # the toy's "domain" (the paper: the MSC class): the number of operands
        return len(self.problem.operands)


def teacher_completion(problem: arithmetic.Problem, max_group: int, error_rate: float,
                       generator: torch.Generator) -> str:
    """A worked trace (R1's running total, 1..max_group operands a step); with probability
    `error_rate` one step's total is off by 1-3 and the rest of the trace carries the slip on, as
    a teacher's arithmetic error would, to a wrong final answer."""
    groups = arithmetic.random_groups(len(problem.operands) - 1, max_group, generator)
    slip_at = -1
    if float(torch.rand((), generator=generator)) < error_rate:
        slip_at = int(torch.randint(0, len(groups), (1,), generator=generator))
        slip = int(torch.randint(1, 4, (1,), generator=generator))
    total, rest, steps = problem.operands[0], list(problem.operands[1:]), []
    for k, g in enumerate(groups):
        added, rest = rest[:g], rest[g:]
        new = total + sum(added)
        if k == slip_at:
            new = new + slip if new < slip or torch.rand((), generator=generator) < 0.5 else new - slip
        steps.append("+".join(map(str, (total, *added))) + f"={new}")
        total = new
    return arithmetic.completion(";".join(steps), total)


def trace_ok(problem: arithmetic.Problem, completion: str) -> bool:
    """The quality check: the template, every step a true sum that starts from the running total
    and consumes the next operands in order, and the answer the question's sum."""
    if not arithmetic.format_ok(completion) or arithmetic.answer_of(completion) != problem.answer:
        return False
    thinking = completion[len(arithmetic.THINK):completion.index(arithmetic.END_THINK)]
    total, rest = problem.operands[0], list(problem.operands[1:])
    for step in thinking.split(";"):
        lhs, _, rhs = step.partition("=")
        terms = lhs.split("+")
        if not rhs or any(not t for t in terms) or len(terms) < 2:
            return False
        values = [int(t) for t in terms]
        if values[0] != total or values[1:] != rest[:len(values) - 1] or int(rhs) != sum(values):
            return False
        total, rest = int(rhs), rest[len(values) - 1:]
    return not rest and total == problem.answer


def make_pool(cfg: Config, generator: torch.Generator) -> list[Example]:
    """The pool the sets are drawn from: easy questions dominate (P(min_operands + k operands)
    proportional to pool_skew**k), and a share of the traces hold a slip."""
    counts = list(range(cfg.min_operands, cfg.max_operands + 1))
    weights = torch.tensor([cfg.pool_skew ** k for k in range(len(counts))])
    pool = []
    for _ in range(cfg.pool_size):
        c = counts[int(torch.multinomial(weights, 1, generator=generator))]
        values = torch.randint(0, cfg.max_operand + 1, (c,), generator=generator).tolist()
        p = arithmetic.Problem(tuple(values))
        pool.append(Example(p, teacher_completion(p, cfg.max_group, cfg.pool_error_rate, generator)))
    return pool


def random_set(pool: list[Example], size: int, generator: torch.Generator) -> list[Example]:
    """Table 2's "1K-random": the quality filter, then `size` examples uniformly at random."""
    good = [e for e in pool if trace_ok(e.problem, e.completion)]
    order = torch.randperm(len(good), generator=generator)[:size].tolist()
    return [good[i] for i in order]


def curate(pool: list[Example], size: int, generator: torch.Generator, length_halving: float = 0.1) -> list[Example]:
    """s1K's selection (Section 2.2): quality (drop traces that fail the check), then, until
    `size` are chosen, a domain uniformly at random among those with questions left and one of
    its questions with a weight favouring longer reasoning traces (difficulty): 2**(-rank /
    (length_halving * domain size)), rank 0 the longest thinking."""
    domains: dict[int, list[Example]] = {}
    for e in pool:
        if trace_ok(e.problem, e.completion):
            domains.setdefault(e.domain, []).append(e)
    weights = {}
    for d, items in domains.items():
        items.sort(key=lambda e: -arithmetic.thinking_length(e.completion))   # stable: ties keep pool order
        scale = max(1.0, length_halving * len(items))
        weights[d] = torch.tensor([2.0 ** (-r / scale) for r in range(len(items))], dtype=torch.float64)
    chosen = []
    while len(chosen) < size and domains:
        names = sorted(domains)
        d = names[int(torch.randint(0, len(names), (1,), generator=generator))]
        j = int(torch.multinomial(weights[d], 1, generator=generator))
        chosen.append(domains[d].pop(j))
        weights[d] = torch.cat([weights[d][:j], weights[d][j + 1:]])
        if not domains[d]:
            del domains[d], weights[d]
    return chosen


def training_set(cfg: Config, seed: int) -> list[Example]:
    """The run's fixed set: its pool and its selection, drawn from generators of the run's seed."""
    pool = make_pool(cfg, torch.Generator().manual_seed(seed * 1000 + 1))
    pick_gen = torch.Generator().manual_seed(seed * 1000 + 2)
    if cfg.selection == "curated":
        return curate(pool, cfg.set_size, pick_gen, cfg.length_halving)
    return random_set(pool, cfg.set_size, pick_gen)


def encoded(cfg: Config, examples: list[Example]) -> list[list[int]]:
    """Each example as prompt + completion + end-of-sequence token ids (R1's layout)."""
    width = arithmetic.prompt_width(cfg.max_operands, cfg.max_operand)
    return [arithmetic.padded_prompt(e.problem, width) + arithmetic.encode(e.completion) + [arithmetic.EOS_ID]
            for e in examples]


def set_batch(cfg: Config, rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Encoded examples right-padded: (inputs, targets), the loss on the completion only."""
    width = arithmetic.prompt_width(cfg.max_operands, cfg.max_operand)
    length = max(map(len, rows))
    seqs = torch.full((len(rows), length), arithmetic.PAD_ID, dtype=torch.long)
    targets = torch.full((len(rows), length), IGNORE, dtype=torch.long)
    for i, row in enumerate(rows):
        seqs[i, :len(row)] = torch.tensor(row)
        targets[i, width:len(row)] = torch.tensor(row[width:])
    return seqs[:, :-1].to(device), targets[:, 1:].to(device)


def set_stats(examples: list[Example], cfg: Config) -> dict[str, float]:
    """What a set holds: its mean operands and thinking length, its share of the hardest domain."""
    n = len(examples)
    return {"set_operands": sum(e.domain for e in examples) / n,
            "set_think_length": sum(arithmetic.thinking_length(e.completion) for e in examples) / n,
            "set_hardest_share": sum(e.domain == cfg.max_operands for e in examples) / n,
            "set_correct_share": sum(trace_ok(e.problem, e.completion) for e in examples) / n}


# -- training ----------------------------------------------------------------------------------
def train_s1k(cfg: Config, run: RunContext) -> S1Agent:
    agent = build(cfg).to(run.device)
    gpt = agent.gpt
    examples = training_set(cfg, run.seed)
    rows = encoded(cfg, examples)
    run.log(0, **set_stats(examples, cfg))
    rcfg = r1_config(cfg)
    opt = torch.optim.AdamW(gpt.parameters(), lr=cfg.sft_lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    data = torch.Generator().manual_seed(run.seed)
    held = r1.problems_of(rcfg, cfg.eval_problems, torch.Generator().manual_seed(777))
    parts, step = {"agent": agent, "opt": opt, "data": data}, 0
    if (state := run.resume_state()) is not None:
        step = restore(state, parts)["step"]
    run.progress(cfg.sft_steps)
    while step < cfg.sft_steps:
        # ALGO LOGIC: supervised fine-tuning on the fixed set (R1's schedule)
        gpt.train()
        for group in opt.param_groups:
            group["lr"] = r1.lr_at(step, rcfg)
        idx = torch.randint(0, len(examples), (cfg.sft_batch,), generator=data).tolist()
        x, y = set_batch(cfg, [rows[i] for i in idx], run.device)
        loss = F.cross_entropy(gpt(x)[0].flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        # TRY NOT TO MODIFY: logging, held-out curve, checkpoints
        if step % cfg.log_every == 0 or step == cfg.sft_steps:
            run.log(step, sft_loss=loss.item())
        if step % cfg.eval_every == 0 or step == cfg.sft_steps:
            run.log(step, **r1.heldout_curve(gpt, rcfg, held))
        run.advance()
        run.maybe_checkpoint(step, lambda: snapshot(parts, step=step))
    agent.eval()
    return agent


def train(cfg: Config, run: RunContext) -> S1Agent:
    agent = build(cfg)
    if cfg.method == "s1k":
        return train_s1k(cfg, run)
    trained = r1.train(r1_config(cfg), run)     # R1's cold start, R1's own loop
    agent.gpt.load_state_dict(trained.policy.state_dict())
    agent.to(run.device).eval()
    return agent


def dry_run_step(agent: S1Agent, cfg: Config) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    pool = make_pool(Config(**{**cfg.__dict__, "pool_size": 64}), gen)
    x, y = set_batch(cfg, encoded(cfg, curate(pool, 4, gen, cfg.length_halving)), next(agent.parameters()).device)
    loss = F.cross_entropy(agent.gpt(x)[0].flatten(0, 1).float(), y.flatten(), ignore_index=IGNORE)
    loss.backward()
    return {"sft_loss": loss.item()}


def data_fingerprint(cfg: Config) -> str:
    if cfg.method == "r1_sft":
        return r1.data_fingerprint(r1_config(cfg))
    return (f"s1K-style set of {cfg.set_size} ({cfg.selection}) from a pool of {cfg.pool_size} generated by "
            f"reproductions/s1/s1.py from the run's seed: {cfg.min_operands}-{cfg.max_operands} operands in "
            f"0..{cfg.max_operand} (P ~ {cfg.pool_skew}^k), traces of 1..{cfg.max_group} additions a step, "
            f"{cfg.pool_error_rate:.0%} with a slip")


__all__ = ["Config", "S1Agent", "build", "train", "dry_run_step", "data_fingerprint", "curate", "random_set",
           "make_pool", "trace_ok", "teacher_completion"]

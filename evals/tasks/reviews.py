"""A generated review language with a known sentiment reward, for the controlled-sentiment setting
of DPO (arXiv 2305.18290, Section 6.1: IMDb prefixes, a sentiment classifier as the ground-truth
reward): what a paper's training and the `reward_kl_frontier` evaluator both draw from, with the
KL estimator and the reward-KL frontier they both use.

A review is 2-4 sentences of five words, `<subject> <verb> <adverb> <adjective> .`, e.g.

    <bos> the plot was not dull . the acting seemed very moving . <eos>

Each review has a latent sentiment s ~ U(-1, 1); each sentence means a positive thing with
probability (1 + s) / 2 (a neutral adjective a quarter of the time), and says it plainly or, with
the adverb `not`, through the opposite adjective ("not dull" is praise). The prompt is `<bos>` and
the first sentence (6 tokens, so every prompt ends at the same position); the completion is the
rest, ended by `<eos>`.

The ground-truth reward (the paper's sentiment classifier) is known in closed form:
    score(y) = sum over adjectives a of polarity(a) * weight(adverb before a),
    polarity: +1 positive, -1 negative, 0 neutral; weight: very 2, quite 1.5, rather 1, somewhat
    0.5, not -1, no adverb 1;
    reward(y) = sigmoid(score(y)) in (0, 1),
read from the whole review (prompt and completion), as the paper's classifier reads the whole text.
Its supremum is 1 (`REWARD_MAX`), which the frontier's normalisation uses.

Tokens are words; generators draw only from the `torch.Generator` they are given.
"""

from __future__ import annotations

import math

import torch

PAD, BOS, EOS, STOP = "<pad>", "<bos>", "<eos>", "."
SUBJECTS = ("the film", "the plot", "the acting", "the music", "the ending", "the cast")
VERBS = ("was", "is", "felt", "seemed")
WEIGHT = {"very": 2.0, "quite": 1.5, "rather": 1.0, "somewhat": 0.5, "not": -1.0}
ADVERBS = tuple(WEIGHT)
ADVERB_P = (0.25, 0.2, 0.2, 0.15, 0.2)
POSITIVE = ("great", "moving", "brilliant", "fun", "wonderful")
NEGATIVE = ("dull", "awful", "boring", "bad", "terrible")
NEUTRAL = ("long", "loud", "short", "odd")
POLARITY = {**{a: 1.0 for a in POSITIVE}, **{a: -1.0 for a in NEGATIVE}, **{a: 0.0 for a in NEUTRAL}}
WORDS = sorted({w for s in SUBJECTS for w in s.split()} | set(VERBS) | set(ADVERBS) | set(POLARITY))
VOCAB: tuple[str, ...] = (PAD, BOS, EOS, STOP, *WORDS)
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD_ID, BOS_ID, EOS_ID = TOKEN_ID[PAD], TOKEN_ID[BOS], TOKEN_ID[EOS]
PROMPT_LEN = 1 + 6                  # <bos> + the first sentence (subject of two words, verb, adverb, adjective, '.')
MAX_COMPLETION = 3 * 6 + 1          # up to three more sentences and <eos>
REWARD_MAX = 1.0                    # the supremum of sigmoid(score)


def encode(text: str) -> list[int]:
    """Token ids of space-separated words; an unknown word is a ValueError."""
    ids = []
    for w in text.split():
        if w not in TOKEN_ID:
            raise ValueError(f"reviews: {w!r} is not a word of the review language")
        ids.append(TOKEN_ID[w])
    return ids


def decode(ids) -> str:
    return " ".join(VOCAB[int(i)] for i in ids)


def _choice(options, generator: torch.Generator, p=None):
    if p is None:
        return options[int(torch.randint(len(options), (1,), generator=generator))]
    return options[int(torch.multinomial(torch.tensor(p), 1, generator=generator))]


def sentence(sentiment: float, generator: torch.Generator) -> list[str]:
    """One sentence of a review of latent sentiment s: six tokens, the subject being two words."""
    subject = _choice(SUBJECTS, generator).split()
    verb = _choice(VERBS, generator)
    adverb = _choice(ADVERBS, generator, ADVERB_P)
    u = float(torch.rand((), generator=generator))
    if u < 0.25:
        adjective = _choice(NEUTRAL, generator)
    else:
        meant_positive = float(torch.rand((), generator=generator)) < (1.0 + sentiment) / 2.0
        says_positive = meant_positive != (adverb == "not")   # "not dull" means something good
        adjective = _choice(POSITIVE if says_positive else NEGATIVE, generator)
    return [*subject, verb, adverb, adjective, STOP]


def review(generator: torch.Generator) -> list[int]:
    """A whole review's token ids: <bos>, 2-4 sentences, <eos>."""
    s = float(torch.rand((), generator=generator)) * 2.0 - 1.0
    n = 2 + int(torch.randint(3, (1,), generator=generator))
    words = [BOS] + [w for _ in range(n) for w in sentence(s, generator)] + [EOS]
    return [TOKEN_ID[w] for w in words]


def reviews(n: int, generator: torch.Generator) -> list[list[int]]:
    return [review(generator) for _ in range(n)]


def prompts(n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, PROMPT_LEN) prompts: the first sentence of fresh reviews."""
    return torch.tensor([review(generator)[:PROMPT_LEN] for _ in range(n)], dtype=torch.long)


# -- the ground-truth reward -------------------------------------------------------------------
def score(ids) -> float:
    """The sentiment score of a token sequence: each adjective's polarity times the weight of the
    adverb right before it (1 if none). Tokens after the first <eos> are not read."""
    total, prev = 0.0, None
    for i in ids:
        w = VOCAB[int(i)]
        if w == EOS:
            break
        if w in POLARITY:
            total += POLARITY[w] * WEIGHT.get(prev, 1.0)
        prev = w
    return total


def reward(ids) -> float:
    """The ground-truth reward: sigmoid(score)."""
    return 1.0 / (1.0 + math.exp(-score(ids)))


def completion_mask(completions: torch.Tensor) -> torch.Tensor:
    """(n, T) bool: the tokens of each completion up to and including its first <eos>."""
    eos = (completions == EOS_ID).long()
    return (eos.cumsum(dim=1) - eos) == 0


# -- the KL estimator and the frontier ---------------------------------------------------------
def sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per completion y ~ pi, sum over its tokens t of KL(pi(. | x, y_<t) || pi_ref(. | x, y_<t)),
    the exact KL of the next-token distributions at each position it visits. `logp`, `ref_logp`:
    (n, T, vocab) log-probabilities of the policy and the reference at the completion's positions;
    `mask`: (n, T) the positions that belong to the completion. By the chain rule its expectation
    over y ~ pi is the sequence-level KL(pi(. | x) || pi_ref(. | x)); it has the same expectation as
    the plain estimate log pi(y|x) - log pi_ref(y|x) and a smaller variance (Rao-Blackwellised)."""
    per_position = (logp.exp() * (logp - ref_logp)).sum(-1)
    return (per_position * mask.to(per_position.dtype)).sum(-1)


def frontier(points: list[tuple[float, float]], kl_grid: list[float]) -> list[float]:
    """The reward-KL frontier of a method at each KL budget k of `kl_grid`: the highest mean reward
    of its points (kl, reward) whose KL is at most k, or -inf where none is."""
    return [max((r for kl, r in points if kl <= k), default=-math.inf) for k in kl_grid]


def frontier_area(points: list[tuple[float, float]], reference_reward: float, kl_max: float,
                  reward_max: float = REWARD_MAX) -> float:
    """The normalised area under a method's frontier over KL budgets 0..kl_max:
        (1 / kl_max) * integral_0^kl_max  clip((F(k) - r_ref) / (r_max - r_ref), 0, 1) dk,
    with F the frontier (`frontier`), the reference model itself a point (0, r_ref) of every
    method. 0: nothing better than the reference within the budget; 1: the best possible reward
    at no KL. F is a step function, so the integral is exact: a sum over the breakpoints."""
    if kl_max <= 0:
        raise ValueError(f"frontier_area: kl_max must be positive, got {kl_max}")
    pts = [(0.0, reference_reward)] + [(max(kl, 0.0), r) for kl, r in points]
    breaks = sorted({kl for kl, _ in pts if kl < kl_max} | {kl_max})
    values = frontier(pts, breaks)
    area = 0.0
    for lo, hi, f in zip(breaks[:-1], breaks[1:], values[:-1]):
        area += (hi - lo) * min(1.0, max(0.0, (f - reference_reward) / (reward_max - reference_reward)))
    return area / kl_max


def share_ahead(points_a: list[tuple[float, float]], points_b: list[tuple[float, float]],
                reference_reward: float, kl_max: float) -> float:
    """The share of KL budgets in 0..kl_max where a's frontier is at least b's (1: a dominates)."""
    pa = [(0.0, reference_reward)] + [(max(kl, 0.0), r) for kl, r in points_a]
    pb = [(0.0, reference_reward)] + [(max(kl, 0.0), r) for kl, r in points_b]
    breaks = sorted({kl for kl, _ in pa + pb if kl < kl_max} | {kl_max})
    fa, fb = frontier(pa, breaks), frontier(pb, breaks)
    ahead = sum(hi - lo for lo, hi, a, b in zip(breaks[:-1], breaks[1:], fa, fb) if a >= b)
    return ahead / kl_max

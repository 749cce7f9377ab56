"""The contract between the harness and a paper: what a paper module provides, what its `train`
may call on the run context, and what each evaluator needs of the trained thing.

A paper module (`reproductions.<id>`, or the module an arm names) provides
- `Config`: a dataclass; the spec's tier and arm config and `--set` overrides fill its fields;
- `build(config) -> Agent`: the untrained thing, for `--dry-run` and for loading a checkpoint;
- `train(config, run: RunContext) -> Agent`: trains through the run context and returns it;
and may provide the optional hooks
- `dry_run_step(agent, config) -> dict[str, float]`: one optimisation step on a tiny CPU batch;
- `required_data(config) -> list[str]`: what the run needs that is missing here (empty: nothing);
- `data_fingerprint(config) -> str`: what data the run saw, for the record;
- `stand_in_data(config, folder) -> config`: for `--dry-run` where `required_data` names what is
  missing: writes a tiny stand-in of it under `folder`, in the on-disk format the real loaders
  read (an ImageFolder tree, a `datasets` folder, a Hugging Face checkpoint), and returns the
  config pointing at it, for which `required_data` is empty. It may live in the module or in the
  module's package as `<package>.stand_ins` (imported by the dry run alone: a stand-in decides no
  number, so it is outside the source hash of the paper's records).

`paper_hooks(module)` checks a module against this and returns its hooks, the optional ones
filled with their defaults; a missing or malformed piece is a `ContractError` that names the
module and the piece. Evaluators ask for a capability with `capability(agent, Protocol,
evaluator)` (a ContractError naming what is missing), never with `hasattr`; the language-model
evaluators (lm_loss, lm_eval) test `isinstance(agent, LanguageModel)` instead and report a thing
that is not one as "not scored", since a tier may score arms that are not language models.

Papers import this module and `evals.tasks`, and nothing else of the harness.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


class ContractError(TypeError):
    """A paper module or a trained thing does not provide what the contract asks of it."""


# -- what train(config, run) may call ------------------------------------------------------------
@runtime_checkable
class RunContext(Protocol):
    """The services of a run (implemented by `evals.run_context.Run`)."""

    seed: int                      # the run's seed (the harness has seeded torch, numpy and random with it)
    device: torch.device           # where to train
    dir: Path                      # the run's folder: images saved here are published beside the record

    def log(self, step: int, **values: float) -> None:
        """Metrics at `step` (curves in the record, TensorBoard, the progress bar's postfix).
        A NaN or infinite value stops the run as diverged."""

    def progress(self, total: int, unit: str = "step") -> "RunContext":
        """Open the progress bar, `total` steps long."""

    def advance(self, n: int = 1) -> None:
        """Move the progress bar `n` steps."""

    def maybe_checkpoint(self, step: int, state: Callable[[], dict[str, Any]]) -> None:
        """Save `state()` when `checkpoint_every` steps have passed since the last save."""

    def resume_state(self) -> dict[str, Any] | None:
        """The newest checkpoint's state when the run is resumed, else None."""


class QuietRun:
    """A run context that records nothing: for timing a paper's loop alone (benchmarks)."""

    def __init__(self, seed: int = 1, device: str = "cpu", folder: Path | None = None):
        self.seed, self.device, self.dir = seed, torch.device(device), folder or Path(".")

    def log(self, step: int, **values: float) -> None:
        pass

    def progress(self, total: int, unit: str = "step") -> "QuietRun":
        return self

    def advance(self, n: int = 1) -> None:
        pass

    def maybe_checkpoint(self, step: int, state: Callable[[], dict[str, Any]]) -> None:
        pass

    def resume_state(self) -> None:
        return None


# -- what every trained thing is -----------------------------------------------------------------
@runtime_checkable
class Agent(Protocol):
    """What `build` and `train` return: saved to and loaded from safetensors, never pickled."""

    def save(self, path: Path) -> None: ...

    def load(self, path: Path) -> "Agent": ...

    def num_parameters(self) -> int: ...


class SafetensorsModule(nn.Module):
    """The `Agent` side of the contract for a torch module: its state dict saved to and loaded from
    safetensors, its parameters counted. A paper's model subclasses it instead of nn.Module (and
    overrides `num_parameters` where only a part counts)."""

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save(self, path: Path) -> None:
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path))

    def load(self, path: Path) -> "SafetensorsModule":
        self.load_state_dict(load_file(str(path)))
        return self


# -- what evaluators need of it (capabilities) ---------------------------------------------------
@runtime_checkable
class Actor(Protocol):
    """Acts in an environment (rl_return, atari_return)."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> Any: ...


@runtime_checkable
class Classifier(Protocol):
    """Predicts class logits N x classes for float images N x C x H x W in [0, 1] (classification)."""

    def predict_logits(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class ZeroShotClassifier(Protocol):
    """Classifies float images N x C x H x W in [0, 1] among classes given only as text (zero_shot):
    `prompts[c]` are the prompts of class c, one (a single prompt) or several (an ensemble, which the
    model combines its own way: CLIP averages the normalised text embeddings); returns scores
    N x classes, the arg-max the prediction."""

    def zero_shot_logits(self, images: torch.Tensor, prompts: list[list[str]]) -> torch.Tensor: ...


@runtime_checkable
class ProbedClassifier(Protocol):
    """A pre-trained encoder with a linear probe on its frozen features (classification with
    `method: probe_logits`)."""

    def probe_logits(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Translator(Protocol):
    """Translates sentences, and holds its held-out (source, reference) pairs (bleu)."""

    def held_out(self) -> list[tuple[str, str]]: ...

    def translate(self, sentences: list[str]) -> list[str]: ...


@runtime_checkable
class LanguageModel(Protocol):
    """Scores tokens of the code corpus (lm_loss, lm_eval): `model(idx)[0]` are next-token logits
    B x T x vocab for token ids B x T, tokenised by `tokenizer` (`tokenizer_name`: bytes or bpe)."""

    tokenizer: Any
    tokenizer_name: str
    bpe_vocab_size: int
    val_percent: int
    block_size: int
    training: bool

    def __call__(self, idx: torch.Tensor, targets: torch.Tensor | None = None) -> Any: ...

    def parameters(self) -> Any: ...

    def eval(self) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...


@runtime_checkable
class ReportsStatistics(Protocol):
    """A language model that measures something of its own while it is scored (a mixture of
    experts' routing balance): reset before lm_loss, read after, reported beside the loss."""

    def reset_statistics(self) -> None: ...

    def statistics(self) -> dict[str, float]: ...


@runtime_checkable
class ScoredOnDomain(Protocol):
    """A language model scored on a part of the code corpus only (lm_loss): `corpus_domain` names
    it as `evals.tasks.code_domains` reads it (e.g. the held-out packages a model was fine-tuned on)."""

    corpus_domain: str


@runtime_checkable
class MergeableAdapter(Protocol):
    """A fine-tuned model whose weight update merges into its frozen weights (lora_merge): it counts
    the parameters fine-tuning trained and the pre-trained model's, merges the update in place and
    takes it out again, and gives the plain model (the pre-trained architecture, update merged,
    adapter modules removed) that merged inference is timed against."""

    def trainable_parameters(self) -> int: ...

    def base_parameters(self) -> int: ...

    def merge(self) -> None: ...

    def unmerge(self) -> None: ...

    def plain(self) -> Any: ...


@runtime_checkable
class DataToText(Protocol):
    """Writes text for held-out structured inputs that each have several references (nlg_bleu):
    E2E's meaning representations and their reference sentences."""

    def held_out_references(self) -> list[tuple[str, list[str]]]: ...

    def generate_texts(self, sources: list[str]) -> list[str]: ...


@runtime_checkable
class PublishedCheckpoint(Protocol):
    """A published Hugging Face checkpoint on disk, scored by lm-eval's own model (lm_eval)."""

    checkpoint_path: str
    dtype: str


@runtime_checkable
class ImageSampler(Protocol):
    """Draws n images N x C x H x W in [0, 1] from its own generator (fid)."""

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


@runtime_checkable
class ClassConditionalSampler(Protocol):
    """Draws images N x C x H x W in [0, 1] of the given classes (class_conditional): classifier-free
    guidance at scale `guidance` (1: the conditional model alone), `sampler` "ddim" (`steps` steps)
    or "ancestral" (all of its T steps); `measured` names what beyond DDIM at scale 1 it is scored on
    ("guidance": the other scales, "ancestral"), and `training_gflops` what its training spent."""

    num_classes: int
    measured: tuple[str, ...]

    def sample_classes(self, labels: torch.Tensor, generator: torch.Generator, guidance: float, sampler: str,
                       steps: int) -> torch.Tensor: ...


@runtime_checkable
class ConditionedSampler(Protocol):
    """A generator steered by a spatial condition (condition_fidelity): `held_out_conditions(n)` gives
    n held-out (conditions N x 1 x H x W, class labels N, the real images N x C x H x W in [0, 1]
    they were made from); `sample_conditioned(conditions, labels, generator, steps, control)` draws
    images N x C x H x W in [0, 1] with the condition (control True) or from the base model alone
    (control False) from the same noise."""

    def held_out_conditions(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def sample_conditioned(self, conditions: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                           steps: int, control: bool) -> torch.Tensor: ...


@runtime_checkable
class SegmentationSampler(Protocol):
    """A text-to-image generator steered by a semantic segmentation (segmentation_fidelity):
    `sample_from_segmentation(labels, prompts, generator, steps, guidance)` draws images N x 3 x H x W
    in [0, 1] from label maps N x H x W (ADE20K's ids, evals.tasks.ade20k) and prompts, with `steps`
    DDIM steps and classifier-free guidance at scale `guidance`."""

    def sample_from_segmentation(self, labels: torch.Tensor, prompts: list[str], generator: torch.Generator,
                                 steps: int, guidance: float) -> torch.Tensor: ...


@runtime_checkable
class AttentionMeasurements(Protocol):
    """Measured attention costs: bytes and tokens/s per method and sequence length, the kernel's
    largest error against a reference, and how it was measured (attention_cost)."""

    memory: dict[str, dict[int, float]]
    speed: dict[str, dict[int, float]]
    max_abs_error: float
    measurement: str


@runtime_checkable
class SequenceModel(Protocol):
    """A causal model of token sequences (sequence_accuracy, token_perplexity): next-token logits
    (n, T, vocab) for token ids (n, T), the prediction at t from tokens <= t."""

    def next_token_logits(self, tokens: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class DecodeCostMeasurements(Protocol):
    """Measured cost of generating one token after a context of n tokens (decode_cost): seconds per
    token per method and context length, which method is ours, and how it was measured."""

    seconds_per_token: dict[str, dict[int, float]]
    ours: str
    measurement: str


@runtime_checkable
class SpeculativeMeasurements(Protocol):
    """Speculative decoding against the target model decoding alone, both at batch size 1 with KV
    caches, measured in one process (speculative_decoding). Per prompt: `seconds["target_<mode>"]`
    and `seconds["speculative_<mode>_g<gamma>"]` (wall time of a generation, mode greedy or sampled),
    `passes["<mode>_g<gamma>"]` (target passes) and `emitted["<mode>_g<gamma>"]` (tokens they
    emitted), `identical["greedy_g<gamma>"]` (the output is the target's own), and
    `seconds["target_step" | "draft_step" | "verify_g<gamma>"]` (one step of each model, a target
    pass over gamma + 1 tokens); `beta[mode]`: sum_x min(p(x), q(x)) at every position the target
    generated; `draws`: per fixed prefix, the target's probabilities `p` and the counts of first
    tokens from speculative decoding (`speculative`) and from the draft alone (`draft`)."""

    gammas: list[int]
    seconds: dict[str, list[float]]
    passes: dict[str, list[int]]
    emitted: dict[str, list[int]]
    identical: dict[str, list[bool]]
    beta: dict[str, list[float]]
    draws: list[dict[str, list[float]]]
    measurement: str


@runtime_checkable
class LowBitMeasurements(Protocol):
    """A language model with low-bit weights, or one to be quantised after training (low_bit):
    the models to score beside it on the same tokens by name (`fp`: its full-precision twin,
    `ptq`: that twin quantised after training), the bytes its weights take in each stored format
    (measured), and an arithmetic-energy estimate per named configuration, in joules."""

    def low_bit_variants(self) -> dict[str, Any]: ...

    def weight_storage(self) -> dict[str, int]: ...

    def energy_estimates(self) -> dict[str, float]: ...


@runtime_checkable
class VisualChat(Protocol):
    """Answers questions about images in a conversation (visual_qa): `tokens` (N x T, ids of the
    task's vocabulary, `evals.tasks.visual_qa`, one `<image>` marking where the image goes) ->
    N x T, at each text position t the greedy prediction of token t + 1 given the image and
    tokens 0..t. `descriptions` are the scenes' true descriptions, for an arm that reads them
    instead of the image (an oracle); any other ignores them."""

    def next_token_predictions(self, images: torch.Tensor, descriptions: list[str], tokens: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class VisualAnswerer(Protocol):
    """Continues prompts about images greedily (scienceqa): `images[i]` is 3 x H x W in [0, 1], or
    None for a prompt without an image; the prompts hold '<image>' where the image goes. Returns
    each completion's text."""

    def answer(self, images: list[torch.Tensor | None], prompts: list[str], max_new_tokens: int) -> list[str]: ...


@runtime_checkable
class Reasoner(Protocol):
    """Answers the prompts of a generated task with its reasoning and an answer (arithmetic_pass):
    `complete` continues each prompt, at `temperature` (0: greedy) with nucleus `top_p`, drawing
    from `generator`, and returns the completions' text up to their end; `starting_point()` is the
    model its training started from (the checkpoint RL began at), scored beside it, or None."""

    def complete(self, prompts: list[str], temperature: float, top_p: float, generator: torch.Generator,
                 max_new_tokens: int) -> list[str]: ...

    def starting_point(self) -> Any: ...


@runtime_checkable
class BudgetForcedReasoner(Protocol):
    """A `Reasoner` whose thinking length is controlled at decode time (budget_forcing, s1): as
    `complete`, with the thinking capped at `max_thinking` tokens (None: no cap; the end of thinking
    and the answer delimiter forced there), the first `extensions` ends of thinking suppressed, and
    with `wait` a continuation string (s1's "Wait") appended in their place."""

    def complete_forced(self, prompts: list[str], temperature: float, top_p: float, generator: torch.Generator,
                        max_new_tokens: int, max_thinking: int | None = None, extensions: int = 0,
                        wait: bool = False) -> list[str]: ...


@runtime_checkable
class LMEvalModel(Protocol):
    """Hands lm-eval a model of its own making (lm_eval): `lm_eval_model(batch_size)` returns an
    lm-eval `LM` (s1's full tier: lm-eval's `hf` model whose generation is budget-forced)."""

    def lm_eval_model(self, batch_size: int = 1) -> Any: ...


@runtime_checkable
class PreferenceRewardModel(Protocol):
    """A policy trained on a reward learned from preferences (preference_accuracy): it acts, says
    whether it has a learned reward (`learns_reward`: false for an arm trained on the true reward),
    and predicts the per-step reward r_hat of transitions (obs, actions, next_obs: arrays of N
    rows), whose sums over segments order them."""

    learns_reward: bool

    def act(self, obs: np.ndarray, deterministic: bool = True) -> Any: ...

    def predicted_rewards(self, obs: np.ndarray, actions: np.ndarray, next_obs: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class PolicyFamily(Protocol):
    """Language-model policies fine-tuned from one reference model by several methods
    (reward_kl_frontier): `frontier_points()` names each checkpoint ('<method>_<setting>_<step>',
    the method first), `point_method(name)` the method that made it, `log_probs(name, tokens)` the
    next-token log-probabilities (n, T, vocab) of that checkpoint, or of the reference for
    name 'reference', for token ids (n, T) of `evals.tasks.reviews`; `training_compute()` what each
    method spent, by '<method>_flops' (counted) and '<method>_cpu_seconds' (measured)."""

    def frontier_points(self) -> list[str]: ...

    def point_method(self, name: str) -> str: ...

    def log_probs(self, name: str, tokens: torch.Tensor) -> torch.Tensor: ...

    def training_compute(self) -> dict[str, float]: ...


@runtime_checkable
class VideoSegmenter(Protocol):
    """Segments one object through each of N videos from clicks (j_and_f): frames N x T x C x H x W
    in [0, 1]; `clicks[i]` maps a frame index of video i to its clicks (row, column, 1 positive /
    0 negative); returns boolean masks N x T x H x W, frame t predicted from frames and clicks up
    to t only (streaming, as SAM 2 processes video)."""

    def segment_video(self, frames: torch.Tensor, clicks: list[dict[int, list[tuple[int, int, int]]]]) -> torch.Tensor: ...


@runtime_checkable
class Responder(Protocol):
    """Answers dialogue prompts (win_rate): `respond` continues each prompt at `temperature` (0:
    greedy), at most `max_new_tokens` tokens, drawing from `generator`, and returns the responses'
    text without the prompt."""

    def respond(self, prompts: list[str], temperature: float, max_new_tokens: int,
                generator: torch.Generator) -> list[str]: ...


@runtime_checkable
class ReturnConditionedActor(Protocol):
    """A policy learnt from offline data that acts one episode at a time, conditioned on a target
    return or not (conditioned_return): `begin_episode(target_return)` gives the episode's
    `policy(obs, last_reward) -> action` (last_reward: the previous step's reward, None at the
    first); `conditioned` says whether the target is used (a Decision Transformer) or ignored
    (behaviour cloning); `reference_returns` ({"random": R, "expert": R}) normalise returns to
    scores 100 (R - R_random) / (R_expert - R_random); `data_provenance` says what data trained it
    (its agent, steps and sha256)."""

    conditioned: bool
    reference_returns: dict[str, float]
    data_provenance: dict[str, Any]

    def begin_episode(self, target_return: float | None) -> Callable[[np.ndarray, float | None], Any]: ...


Capability = TypeVar("Capability")


def capability(agent: Any, wanted: type[Capability], evaluator: str) -> Capability:
    """`agent` as `wanted`, or a ContractError naming the evaluator and what is missing."""
    if isinstance(agent, wanted):
        return agent
    missing = [name for name in _members(wanted) if not hasattr(agent, name)]
    raise ContractError(f"{evaluator}: the trained {type(agent).__name__} is not a {wanted.__name__} "
                        f"(missing: {', '.join(missing) or 'a member of the wrong kind'}; see evals/contract.py)")


def _members(protocol: type) -> list[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    if "__call__" in vars(protocol):
        names.add("__call__")
    return sorted(names)


# -- what a paper module is ----------------------------------------------------------------------
REQUIRED = {"Config": "a dataclass of the run's settings", "build": "build(config) -> Agent",
            "train": "train(config, run) -> Agent"}
OPTIONAL = {"dry_run_step": "dry_run_step(agent, config) -> dict[str, float]",
            "required_data": "required_data(config) -> list[str]",
            "data_fingerprint": "data_fingerprint(config) -> str",
            "stand_in_data": "stand_in_data(config, folder) -> config"}
ARITY = {"build": 1, "train": 2, "dry_run_step": 2, "required_data": 1, "data_fingerprint": 1, "stand_in_data": 2}
STAND_INS = "stand_ins"  # the module of a paper's package that may hold `stand_in_data`


@dataclass(frozen=True)
class PaperHooks:
    """A paper module's side of the contract, the optional hooks filled with their defaults."""

    name: str
    Config: type
    build: Callable[[Any], Agent]
    train: Callable[[Any, RunContext], Agent]
    dry_run_step: Callable[[Any, Any], dict[str, float]] | None = None  # None: the dry run builds only
    required_data: Callable[[Any], list[str]] = lambda config: []
    data_fingerprint: Callable[[Any], str | None] = lambda config: None
    stand_in_data: Callable[[Any, Path], Any] | None = None  # None: missing data stops the dry run


def paper_hooks(module: ModuleType) -> PaperHooks:
    """Check `module` against the contract; a missing or malformed piece is a ContractError that
    names the module and the piece."""
    name = module.__name__
    found = vars(module)
    for piece, what in REQUIRED.items():
        if piece not in found:
            raise ContractError(f"paper module {name!r} has no {piece!r} ({what}; see evals/contract.py)")
    if not (isinstance(found["Config"], type) and dataclasses.is_dataclass(found["Config"])):
        raise ContractError(f"paper module {name!r}: 'Config' must be a dataclass (the spec's config fills its fields)")
    hooks = {piece: found[piece] for piece in (*REQUIRED, *OPTIONAL) if piece in found}
    if "stand_in_data" not in hooks and (stand_ins := _stand_ins_module(module)) is not None:
        if "stand_in_data" in vars(stand_ins):
            hooks["stand_in_data"] = vars(stand_ins)["stand_in_data"]
    for piece, fn in hooks.items():
        if piece == "Config":
            continue
        if not callable(fn):
            raise ContractError(f"paper module {name!r}: {piece!r} is not callable "
                                f"({(REQUIRED | OPTIONAL)[piece]})")
        if not _accepts(fn, ARITY[piece]):
            raise ContractError(f"paper module {name!r}: {piece!r} must accept {ARITY[piece]} positional "
                                f"argument(s): {(REQUIRED | OPTIONAL)[piece]}")
    return PaperHooks(name=name, **hooks)


def _stand_ins_module(module: ModuleType) -> ModuleType | None:
    """`<package>.stand_ins` of the module's package (the module itself when it is a package), if any."""
    package = module.__name__ if hasattr(module, "__path__") else module.__name__.rpartition(".")[0]
    if not package:
        return None
    name = f"{package}.{STAND_INS}"
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    return importlib.import_module(name) if found is not None else None


def _accepts(fn: Callable, n: int) -> bool:
    try:
        inspect.signature(fn).bind(*range(n))
    except TypeError:
        return False
    except ValueError:  # a builtin without a signature: trust it
        return True
    return True

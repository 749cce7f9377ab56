"""Our language models as an lm-eval `LM`, and lm-eval runs on local or standard tasks.

- `ReproLM(model)`: wraps any of the project's language models (a `tokenizer`, a `block_size`,
  `model(idx) -> (logits, ...)`, `generate`) for lm-eval's three request types:
  `loglikelihood` (sum of the continuation's log-probabilities and whether greedy decoding would
  produce it), `loglikelihood_rolling` (a text's total log-likelihood in disjoint windows of the
  block size, lm-eval's own windowing) and `generate_until` (greedy, with the KV cache, cut at the
  first stop string). A context is tokenised together with its continuation and split at the
  context's length, as lm-eval's Hugging Face model does; a text with no context is conditioned on
  a newline, the corpus's file separator (our byte models have no end-of-text token).
- `local_tasks()`: the mini tiers' task files in `evals/lm_tasks/` (local JSONL; their relative
  `data_files` are resolved next to the YAML), run with `TaskManager(include_defaults=False)`.
- `hf_model(path)`: any Hugging Face checkpoint from a local folder, through lm-eval's own `hf`
  model, for the standard tasks of the full tiers (MMLU, HellaSwag, ARC, GSM8K, ...).
- `evaluate(lm, tasks, ...)`: `simple_evaluate` offline (HF_DATASETS_OFFLINE and HF_HUB_OFFLINE
  set), returning lm-eval's results dict.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from lm_eval.api.model import LM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

TASK_DIR = Path(__file__).resolve().parent / "lm_tasks"
NEWLINE = "\n"


class ReproLM(LM):
    def __init__(self, model, device: str | torch.device | None = None):
        super().__init__()
        self.model = model
        self._device = torch.device(device) if device is not None else next(model.parameters()).device
        self.tokenizer = model.tokenizer
        self.block_size = model.block_size

    # -- scoring -------------------------------------------------------------------------------
    @torch.no_grad()
    def _score(self, context: list[int], continuation: list[int]) -> tuple[float, bool]:
        """log p(continuation | context) summed, and whether every continuation token is the argmax.
        Each prediction sees as many preceding tokens as the block holds; a continuation longer
        than the block is scored in consecutive chunks."""
        tokens, total, greedy = context + continuation, 0.0, True
        p0 = len(context)
        while p0 < len(tokens):
            p1 = min(p0 + self.block_size, len(tokens))
            window = tokens[max(0, p1 - self.block_size - 1):p1]
            logits = self.model(torch.tensor([window[:-1]], device=self._device))[0][0, -(p1 - p0):].float()
            target = torch.tensor(tokens[p0:p1], device=self._device)
            total += F.log_softmax(logits, dim=-1).gather(-1, target[:, None]).sum().item()
            greedy = greedy and bool((logits.argmax(-1) == target).all())
            p0 = p1
        return total, greedy

    def _split(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        if not context:
            context = NEWLINE
        whole = self.tokenizer.encode(context + continuation)
        n_ctx = len(self.tokenizer.encode(context))
        return whole[:n_ctx], whole[n_ctx:]

    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        self.model.eval()
        return [self._score(*self._split(*req.args)) for req in requests]

    def loglikelihood_rolling(self, requests) -> list[float]:
        self.model.eval()
        prefix = self.tokenizer.encode(NEWLINE)[-1]
        out = []
        for req in requests:
            tokens = self.tokenizer.encode(req.args[0])
            windows = map(make_disjoint_window, get_rolling_token_windows(tokens, prefix, self.block_size, 1))
            out.append(sum(self._score(ctx, cont)[0] for ctx, cont in windows))
        return out

    # -- generation ----------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, requests) -> list[str]:
        self.model.eval()
        out = []
        for req in requests:
            context, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.get("max_gen_toks", 256))
            if max_new >= self.block_size:
                raise ValueError(f"max_gen_toks={max_new} does not fit the model's block of {self.block_size}")
            ids = self.tokenizer.encode(context or NEWLINE)[-(self.block_size - max_new):]
            generated = self.model.generate(torch.tensor([ids], device=self._device), max_new)[0, len(ids):]
            text = self.tokenizer.decode(generated.tolist())
            cut = min((text.find(s) for s in until if s and s in text), default=len(text))
            out.append(text[:cut])
        return out


def hf_model(path: str, **kwargs):
    """A Hugging Face checkpoint from a local folder, as lm-eval's own `hf` model."""
    from lm_eval.models.huggingface import HFLM

    if not (Path(path) / "config.json").is_file():
        raise FileNotFoundError(f"{path}: no Hugging Face checkpoint here (config.json missing)")
    kwargs.setdefault("device", "cuda" if torch.cuda.is_available() else "cpu")  # lm-eval's default is cuda
    return HFLM(pretrained=path, **kwargs)


def task_config(yaml_path: Path) -> dict[str, Any]:
    """A local task file as a config dict, its `data_files` resolved next to the file."""
    config = yaml.safe_load(yaml_path.read_text())
    files = config.get("dataset_kwargs", {}).get("data_files")
    if isinstance(files, dict):
        config["dataset_kwargs"]["data_files"] = {k: str((yaml_path.parent / v).resolve()) for k, v in files.items()}
    return config


def local_tasks(names: list[str] | None = None, folder: Path = TASK_DIR) -> list[dict[str, Any]]:
    configs = {c["task"]: c for c in (task_config(p) for p in sorted(folder.glob("*.yaml")))}
    unknown = sorted(set(names or []) - set(configs))
    if unknown:
        raise ValueError(f"unknown local lm-eval task(s) {unknown}; {folder} has {sorted(configs)}")
    return [configs[n] for n in (names or sorted(configs))]


def evaluate(lm: LM, tasks: list[str], local: bool = True, num_fewshot: int | None = None,
             limit: int | None = None, seed: int = 1234) -> dict[str, Any]:
    """lm-eval's `simple_evaluate`, offline. `local`: tasks are names of `evals/lm_tasks/` files;
    otherwise lm-eval's standard tasks, whose datasets must be in the local Hugging Face cache."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    if local:
        manager = TaskManager(include_path=str(TASK_DIR), include_defaults=False)
        task_list: list[Any] = local_tasks(tasks)
    else:
        manager, task_list = TaskManager(), list(tasks)
    return simple_evaluate(model=lm, tasks=task_list, num_fewshot=num_fewshot, limit=limit, task_manager=manager,
                           bootstrap_iters=0, log_samples=True, random_seed=seed, numpy_random_seed=seed,
                           torch_random_seed=seed, fewshot_random_seed=seed)


# -- for dry runs: which standard tasks exist, and whether their data is on this machine ------------
LOCAL_BY_OUTPUT_TYPE = {"multiple_choice": "repro_python_mc", "loglikelihood": "repro_python_mc",
                        "generate_until": "repro_python_complete", "loglikelihood_rolling": "repro_python_rolling"}


def lm_eval_version() -> str:
    from lm_eval import __version__

    return __version__


@lru_cache(maxsize=1)
def standard_task_index() -> dict[str, Any]:
    """lm-eval's own tasks and groups by name (its task index, read once: it takes seconds)."""
    from lm_eval.tasks import TaskManager

    return dict(TaskManager().task_index)


def _leaf_configs(name: str, index: dict[str, Any], seen: frozenset = frozenset()) -> list[dict[str, Any]]:
    """The configs of the tasks a task, group or tag stands for."""
    entry = index.get(name)
    if entry is None or name in seen:
        return []
    cfg = entry.cfg or {}
    if "dataset_path" in cfg or "output_type" in cfg:
        return [cfg]
    children = cfg.get("task") or [t for t, e in index.items() if name in (e.tags or set())]
    children = [children] if isinstance(children, str) else children
    return [c for child in children if isinstance(child, str) for c in _leaf_configs(child, index, seen | {name})]


def hf_cache_dirs() -> str:
    import datasets
    from huggingface_hub import constants

    return f"{datasets.config.HF_DATASETS_CACHE} and {constants.HF_HUB_CACHE}"


def uncached_datasets(task: str) -> list[str]:
    """The datasets of a standard task (or of a group's tasks) with no copy in the local Hugging
    Face caches (the `datasets` cache or the hub's), which an offline run cannot load."""
    import datasets
    from huggingface_hub import constants

    out = []
    for cfg in _leaf_configs(task, standard_task_index()):
        path = cfg.get("dataset_path")
        if not path or path in out:
            continue
        here = [Path(datasets.config.HF_DATASETS_CACHE) / path.replace("/", "___"),
                Path(constants.HF_HUB_CACHE) / f"datasets--{path.replace('/', '--')}"]
        if not any(p.is_dir() for p in here) and not Path(path).exists():
            out.append(path)
    return out


def local_stand_ins(task: str) -> list[str]:
    """The local tasks of the request types a standard task makes (a dry run's stand-in for its data)."""
    kinds = {cfg.get("output_type", "multiple_choice") for cfg in _leaf_configs(task, standard_task_index())}
    return sorted({LOCAL_BY_OUTPUT_TYPE.get(k, "repro_python_mc") for k in kinds} or {"repro_python_mc"})


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """{'task_metric': value} from lm-eval's results (the filter suffix ',none' dropped)."""
    out = {}
    for task, values in results["results"].items():
        for key, value in values.items():
            metric, _, _ = key.partition(",")
            if isinstance(value, (int, float)) and "_stderr" not in metric and metric not in ("alias", "sample_len"):
                out[f"{task}_{metric}"] = float(value)
    return out

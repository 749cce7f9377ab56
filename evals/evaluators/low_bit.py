"""What a low-bit language model costs and loses: its held-out loss beside its full-precision twin
and that twin quantised after training, the bytes its weights take in each stored format, and the
arithmetic energy it reports for named configurations.

Reads an agent's `LowBitMeasurements` (evals/contract.py):
- `low_bit_variants()`: other language models by name (`fp`: the full-precision twin trained on
  the same batches, `ptq`: that twin quantised after training). The agent and each variant are
  scored by `lm_loss`'s protocol on the same held-out tokens (`tokens`, `batch_size`), giving
  `model_val_loss`, `<name>_val_loss`, and, with an `fp` variant, `loss_gap` (model - fp),
  `loss_ratio` (model / fp) and `<name>_loss_gap` for the others (ptq - fp);
- `weight_storage()`: bytes by format (`weight_bytes_packed`, `weight_bytes_fp16`, ... as the
  agent measured them), reported as they are, with `weight_compression_fp16` (fp16 bytes over
  packed bytes) and the same for fp32 and for the whole model (`model_bytes_*`) where given;
- `energy_estimates()`: joules by name (`energy_*`), reported as they are.

The per-batch losses of each model are the samples (`<name>_batch_loss`), from which every loss
metric recomputes; byte counts and energies are their own one-value samples, and the
compression ratios recompute from them.
"""

from __future__ import annotations

import inspect

from pydantic import BaseModel, ConfigDict, Field

from evals.contract import LanguageModel, LowBitMeasurements, capability
from evals.evaluators import Measured, register
from evals.evaluators.lm_loss import LMLossOptions
from evals.evaluators.lm_loss import lm_loss
from evals.record import EvalResult


class LowBitOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tokens: int = Field(65_536, ge=1)
    batch_size: int = Field(16, ge=1)


def _loss(samples: dict[str, list[float]], protocol: dict, name: str) -> float:
    """The token-weighted mean of one model's batch losses (lm_loss's batches: `batch_size`
    windows of `window` tokens, the last batch holding the rest of `tokens`)."""
    losses, per_batch = samples[f"{name}_batch_loss"], protocol["batch_size"] * protocol["window"]
    sizes = [per_batch] * (len(losses) - 1) + [protocol["tokens"] - per_batch * (len(losses) - 1)]
    if sizes[-1] <= 0 or sizes[-1] > per_batch:
        raise ValueError(f"{len(losses)} batch losses do not fit {protocol['tokens']} tokens in batches of {per_batch}")
    return sum(loss * n for loss, n in zip(losses, sizes)) / protocol["tokens"]


def summarise(samples: dict[str, list[float]], protocol: dict) -> dict[str, float]:
    """The loss metrics from the batch losses, the compression ratios from the byte counts."""
    metrics = {}
    for name in protocol["models"]:
        metrics[f"{name}_val_loss"] = _loss(samples, protocol, name)
    if "fp" in protocol["models"]:
        fp = metrics["fp_val_loss"]
        metrics["loss_gap"] = metrics["model_val_loss"] - fp
        metrics["loss_ratio"] = metrics["model_val_loss"] / fp
        for name in protocol["models"]:
            if name not in ("model", "fp"):
                metrics[f"{name}_loss_gap"] = metrics[f"{name}_val_loss"] - fp
    for what in ("weight", "model"):
        packed = samples.get(f"{what}_bytes_packed")
        for fmt in ("fp16", "fp32"):
            full = samples.get(f"{what}_bytes_{fmt}")
            if packed and full:
                metrics[f"{what}_compression_{fmt}"] = full[0] / packed[0]
    return metrics


def derive(result: EvalResult) -> dict[str, float]:
    return summarise(result.samples, result.protocol)


def metric_names(o: LowBitOptions) -> list[str]:
    return ["model_val_loss", "*_val_loss", "loss_gap", "loss_ratio", "*_loss_gap", "weight_bytes_*", "model_bytes_*",
            "weight_compression_*", "model_compression_*", "energy_*"]


def tiny(options: LowBitOptions) -> LowBitOptions:
    """A dry run's budget: one window of the model's block per model."""
    return options.model_copy(update={"tokens": 1, "batch_size": 1})


# the dry run's budget hook, where this harness's `register` takes one
_HOOKS = {"tiny": tiny} if "tiny" in inspect.signature(register).parameters else {}


@register("low_bit", version=1, options=LowBitOptions, derive=derive, metric_names=metric_names, **_HOOKS)
def low_bit(agent, config, options: LowBitOptions) -> Measured:
    agent = capability(agent, LowBitMeasurements, "low_bit")
    models = {"model": agent, **agent.low_bit_variants()}
    lm_options = LMLossOptions(tokens=options.tokens, batch_size=options.batch_size)
    samples, protocol = {}, {}
    for name, model in models.items():
        model = capability(model, LanguageModel, "low_bit")
        m = lm_loss.fn(model, config, lm_options)
        samples[f"{name}_batch_loss"] = m.samples["batch_loss"]
        protocol = {k: m.protocol[k] for k in ("corpus", "split", "tokenizer", "tokens", "window", "batch_size")}
    stored = agent.weight_storage()
    energies = agent.energy_estimates()
    samples |= {name: [float(v)] for name, v in {**stored, **energies}.items()}
    protocol |= {"models": list(models), "stored_formats": sorted(stored), "energy": sorted(energies),
                 "losses": "lm_loss's protocol on the same tokens for every model; "
                           "<name>_batch_loss are the per-batch mean losses"}
    metrics = summarise(samples, protocol) | {name: float(v) for name, v in {**stored, **energies}.items()}
    return Measured(metrics=metrics, samples=samples, protocol=protocol)

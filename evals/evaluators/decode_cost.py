"""Decoding cost per generated token against the length of the context already read: flat for a
recurrent model (a fixed-size state), growing for attention with a key/value cache (every new
token reads all cached keys and values).

Reads an agent's measurements (`agent.seconds_per_token[method][n]`, seconds to generate one token
after a context of n tokens, batch and protocol as `agent.measurement` states) and reports per
method: the growth from the shortest to the longest context (`decode_growth_<method>`, cost at
max n / cost at min n: 1 is flat), the log-log slope of cost on n (`decode_exponent_<method>`),
the milliseconds per token at the longest context (`decode_ms_per_token_<method>`), and the ratio
of each other method's cost to ours there (`decode_cost_ratio_<method>_to_<ours>`). The samples
are the milliseconds per token at each n (`decode_ms_by_n_<method>`, at the lengths the protocol
lists), from which every metric recomputes (`derive`). All of it is wall-clock time: a tier names
these in `verify_timings`.

An agent that is not a `DecodeCostMeasurements` (another arm of the tier, trained on a task) is
not scored, and the result says so.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict

from evals.contract import DecodeCostMeasurements
from evals.evaluators import Measured, register
from evals.record import EvalResult


class DecodeCostOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


def summarise(ms: dict[str, dict[int, float]], ours: str) -> dict[str, float]:
    """The summary metrics from milliseconds per token, per method and context length."""
    metrics = {}
    for method, row in ms.items():
        ns = sorted(row)
        metrics[f"decode_growth_{method}"] = row[ns[-1]] / row[ns[0]]
        metrics[f"decode_exponent_{method}"] = float(np.polyfit(np.log(ns), np.log([row[n] for n in ns]), 1)[0])
        metrics[f"decode_ms_per_token_{method}"] = row[ns[-1]]
    n_ours = max(ms[ours])
    for method, row in ms.items():
        if method != ours and n_ours in row:
            metrics[f"decode_cost_ratio_{method}_to_{ours}"] = row[n_ours] / ms[ours][n_ours]
    return metrics


def derive(result: EvalResult) -> dict[str, float]:
    p = result.protocol
    if "lengths" not in p:
        return {}
    ms = {m: dict(zip(ns, result.samples[f"decode_ms_by_n_{m}"], strict=True)) for m, ns in p["lengths"].items()}
    return summarise(ms, p["ours"])


def _names(o: DecodeCostOptions) -> list[str]:
    return ["decode_growth_*", "decode_exponent_*", "decode_ms_per_token_*", "decode_cost_ratio_*"]


@register("decode_cost", version=1, options=DecodeCostOptions, derive=derive, metric_names=_names)
def decode_cost(agent, config, options: DecodeCostOptions) -> Measured:
    if not isinstance(agent, DecodeCostMeasurements):
        return Measured(metrics={}, protocol={"not_scored": f"the trained {type(agent).__name__} holds no decoding "
                                                            "measurements (DecodeCostMeasurements)"})
    ms = {m: {int(n): s * 1e3 for n, s in row.items()} for m, row in agent.seconds_per_token.items()}
    if agent.ours not in ms or any(len(row) < 2 for row in ms.values()):
        raise ValueError("decode_cost: needs our method and at least two context lengths per method")
    return Measured(metrics=summarise(ms, agent.ours),
                    samples={f"decode_ms_by_n_{m}": [row[n] for n in sorted(row)] for m, row in ms.items()},
                    protocol={"ours": agent.ours, "lengths": {m: sorted(row) for m, row in ms.items()},
                              "measurement": agent.measurement})

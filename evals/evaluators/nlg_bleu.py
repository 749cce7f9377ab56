"""BLEU of data-to-text generation against several references per input, with sacrebleu (the E2E
NLG Challenge's protocol: each meaning representation scored against all its references).

Protocol: `agent.generate_texts(sources)` on the first `inputs` distinct inputs of
`agent.held_out_references()` (all when 0); corpus BLEU with sacrebleu's defaults (13a
tokenisation, n-grams up to 4, brevity penalty against the closest reference length, no
smoothing) over all references of each input. The per-input n-gram statistics (clipped by the
references, as sacrebleu computes them) are the samples, from which the corpus score recomputes
(`evals.evaluators.bleu.corpus_bleu_from_samples`: summing per-input statistics is what sacrebleu's
corpus score does). The E2E challenge's own script (e2e-metrics) tokenises differently, so its
BLEU can differ from this one by about a point.
"""

from __future__ import annotations

import sacrebleu
from pydantic import BaseModel, ConfigDict, Field
from sacrebleu.metrics import BLEU

from evals.contract import DataToText, capability
from evals.evaluators import Measured, register, shrunk
from evals.evaluators.bleu import STAT_NAMES, corpus_bleu_from_samples
from evals.record import EvalResult


class NLGBLEUOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: int = Field(0, ge=0)
    keep_outputs: bool = True


def derive(result: EvalResult) -> dict[str, float]:
    return {"bleu": corpus_bleu_from_samples(result.samples)} if result.samples else {}


def tiny(options: NLGBLEUOptions) -> NLGBLEUOptions:
    """A dry run's budget: one input."""
    return shrunk(options, inputs=1)


@register("nlg_bleu", version=1, options=NLGBLEUOptions, derive=derive, tiny=tiny, metric_names=lambda o: ["bleu"])
def nlg_bleu(agent, config, options: NLGBLEUOptions) -> Measured:
    agent = capability(agent, DataToText, "nlg_bleu")
    items = agent.held_out_references()
    if options.inputs:
        items = items[: options.inputs]
    sources = [s for s, _ in items]
    hypotheses = agent.generate_texts(sources)
    n_refs = max(len(refs) for _, refs in items)
    streams = [[refs[i] if i < len(refs) else None for _, refs in items] for i in range(n_refs)]
    metric = BLEU()
    corpus = metric.corpus_score(hypotheses, streams)
    sentence_metric = BLEU(effective_order=True)  # the same n-gram counts, without the warning
    per_input = [sentence_metric.sentence_score(h, refs) for h, (_, refs) in zip(hypotheses, items)]
    samples = {name: [float(x) for x in values] for name, values in zip(STAT_NAMES, zip(
        *[[*s.counts, *s.totals, s.sys_len, s.ref_len] for s in per_input]))}
    protocol = {"sacrebleu": sacrebleu.__version__, "signature": str(metric.get_signature()), "inputs": len(items),
                "references": sum(len(refs) for _, refs in items), "max_references": n_refs}
    if options.keep_outputs:
        protocol["outputs"] = hypotheses
    return Measured(metrics={"bleu": corpus.score}, samples=samples, protocol=protocol)

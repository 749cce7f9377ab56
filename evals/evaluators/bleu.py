"""BLEU of a translator on its held-out sentences, with sacrebleu.

Protocol: corpus BLEU (sacrebleu's defaults: 13a tokenisation, exact-match n-grams up to 4,
brevity penalty, no smoothing) of `agent.translate(sources)` against one reference each, on the
first `sentences` pairs of `agent.held_out()` (all of them when 0). The per-sentence n-gram
statistics are kept as samples and the outputs in the protocol, so the corpus score recomputes
from the record alone (`corpus_bleu_from_samples`).

Agents without `translate` (e.g. a language model arm in the same tier) are not scored: the
result then has no metrics and says why.
"""

from __future__ import annotations

import sacrebleu
from pydantic import BaseModel, ConfigDict, Field
from sacrebleu.metrics import BLEU

from evals.contract import Translator
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult

STAT_NAMES = [f"correct_{n}" for n in range(1, 5)] + [f"total_{n}" for n in range(1, 5)] + ["sys_len", "ref_len"]


class BLEUOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sentences: int = Field(0, ge=0)
    keep_outputs: bool = True


def corpus_bleu_from_samples(samples: dict[str, list[float]]) -> float:
    """Corpus BLEU from per-sentence statistics (summed, then BLEU's formula, as sacrebleu does)."""
    stats = [int(sum(samples[name])) for name in STAT_NAMES]
    return BLEU.compute_bleu(stats[:4], stats[4:8], stats[8], stats[9]).score


def derive(result: EvalResult) -> dict[str, float]:
    return {"bleu": corpus_bleu_from_samples(result.samples)} if result.samples else {}


def tiny(options: BLEUOptions) -> BLEUOptions:
    """A dry run's budget: the first held-out sentence (beam search is the slow part)."""
    return shrunk(options, sentences=1)


def check(agent, config, options: BLEUOptions) -> list[str]:
    """The tier's `sentences` are no more than the translator holds out."""
    if not isinstance(agent, Translator) or options.sentences <= (held := len(agent.held_out())):
        return []
    return [f"bleu: sentences={options.sentences:,}, but the translator holds out {held:,}"]


@register("bleu", version=1, options=BLEUOptions, derive=derive, tiny=tiny, check=check, metric_names=lambda o: ["bleu", "exact_match"])
def bleu(agent, config, options: BLEUOptions) -> Measured:
    if not isinstance(agent, Translator):
        return Measured(metrics={},
                          protocol={"scored": False, "reason": f"{type(agent).__name__} does not translate"})
    pairs = agent.held_out()
    if options.sentences:
        pairs = pairs[: options.sentences]
    sources, references = [s for s, _ in pairs], [t for _, t in pairs]
    hypotheses = agent.translate(sources)
    metric = BLEU()
    corpus = metric.corpus_score(hypotheses, [references])
    sentence_metric = BLEU(effective_order=True)  # the same n-gram counts, without the warning
    per_sentence = [sentence_metric.sentence_score(h, [r]) for h, r in zip(hypotheses, references)]
    samples = {name: [float(x) for x in values] for name, values in zip(STAT_NAMES, zip(
        *[[*s.counts, *s.totals, s.sys_len, s.ref_len] for s in per_sentence]))}
    samples["exact_match"] = [float(h == r) for h, r in zip(hypotheses, references)]
    protocol = {"sacrebleu": sacrebleu.__version__, "signature": str(metric.get_signature()),
                "sentences": len(pairs), "references_per_sentence": 1,
                "decoding": f"beam {getattr(config, 'beam_size', '?')}, length penalty alpha "
                            f"{getattr(config, 'length_alpha', '?')}"}
    if options.keep_outputs:
        protocol["outputs"] = hypotheses
    return Measured(metrics={"bleu": corpus.score, "exact_match": sum(samples["exact_match"]) / len(pairs)},
                      samples=samples, protocol=protocol)

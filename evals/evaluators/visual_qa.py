"""Answer accuracy in visual conversations on held-out images (LLaVA, arXiv 2304.08485).

Protocol: `n` scenes of the `test` split of `evals.tasks.visual_qa` (a seed stream disjoint from
training, at the run's `image_size`), each with a conversation of three turns whose question types
are drawn from all six (count, colour, shape, where, relative, exists), including the type held out
of instruction tuning (`shape`). Each answer is scored given the true earlier turns, as the paper's
multi-turn format feeds them: it is correct when the model's greedy continuation after
"assistant :" is exactly the answer's words and its `<stop>`. Greedy decoding reproduces the answer
exactly when the model's arg-max at every answer position, given the answer's earlier tokens, is
the answer's next token, so one forward pass per conversation scores all its turns
(`VisualChat.next_token_predictions`).

Metrics: `vqa_accuracy` over the question types trained on (`TRAIN_TYPES`), `vqa_heldout_type`
over the held-out types, and `vqa_accuracy_<type>` per type; each answer's correctness is kept in
`samples` (`correct_<type>`) so they recompute from the record. The protocol keeps `examples`
conversations decoded greedily (the first test scenes), for the paper page.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field

from evals.contract import VisualChat, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks import visual_qa as vqa


class VisualQAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(500, ge=1)          # test scenes (three questions each)
    batch_size: int = Field(250, ge=1)
    examples: int = Field(6, ge=0)     # conversations decoded greedily into the protocol


def _pooled(samples: dict[str, list[float]], types) -> dict[str, float]:
    """The pooled accuracies, each left out where none of its types was asked (a tiny budget)."""
    out = {}
    for name, kinds in (("vqa_accuracy", types[0]), ("vqa_heldout_type", types[1])):
        xs = [x for t in kinds for x in samples.get(f"correct_{t}", [])]
        if xs:
            out[name] = sum(xs) / len(xs)
    return out


def derive(result: EvalResult) -> dict[str, float]:
    """Per-type accuracy is the mean of its answers' correctness; the pooled ones pool the types."""
    s = result.samples
    out = {f"vqa_accuracy_{k.removeprefix('correct_')}": sum(v) / len(v) for k, v in s.items() if v}
    return out | _pooled(s, (result.protocol["train_types"], result.protocol["held_out_types"]))


def tiny(options: VisualQAOptions) -> VisualQAOptions:
    return shrunk(options, n=4, batch_size=4, examples=1)


def answer_spans(mask: torch.Tensor) -> list[tuple[int, int]]:
    """The [start, end) runs of True in a 1-D answer mask."""
    spans, start = [], None
    for i, m in enumerate(mask.tolist() + [False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


def _greedy(model, image: torch.Tensor, description: str, prompt: list[int], max_new: int = 8) -> list[int]:
    out = list(prompt)
    for _ in range(max_new):
        nxt = int(model.next_token_predictions(image[None], [description], torch.tensor([out]))[0, -1])
        out.append(nxt)
        if nxt == vqa.WORD_ID[vqa.STOP]:
            break
    return out[len(prompt):]


@register("visual_qa", version=1, options=VisualQAOptions, derive=derive, tiny=tiny,
          metric_names=lambda o: ["vqa_accuracy", "vqa_heldout_type", *(f"vqa_accuracy_{t}" for t in vqa.QUESTION_TYPES)])
def visual_qa(agent, config, options: VisualQAOptions) -> Measured:
    model = capability(agent, VisualChat, "visual_qa")
    data = vqa.make_visual_qa(options.n, config.image_size, split="test")
    tokens, mask = vqa.instruction_batch(data)
    descriptions = data.descriptions()
    correct: dict[str, list[float]] = {t: [] for t in vqa.QUESTION_TYPES}
    with torch.no_grad():
        for lo in range(0, len(data), options.batch_size):
            hi = min(lo + options.batch_size, len(data))
            pred = model.next_token_predictions(data.images[lo:hi], descriptions[lo:hi], tokens[lo:hi]).cpu()
            if pred.shape != tokens[lo:hi].shape:
                raise ValueError(f"visual_qa: next_token_predictions gave shape {tuple(pred.shape)}, "
                                 f"expected {tuple(tokens[lo:hi].shape)}")
            for b in range(hi - lo):
                spans = answer_spans(mask[lo + b])
                for (start, end), (kind, _, _) in zip(spans, data.conversations[lo + b], strict=True):
                    ok = bool((pred[b, start - 1:end - 1] == tokens[lo + b, start:end]).all())
                    correct[kind].append(float(ok))
        examples = []
        for i in range(min(options.examples, len(data))):
            turns = []
            for t, (start, end) in enumerate(answer_spans(mask[i])):
                kind, question, answer = data.conversations[i][t]
                said = _greedy(model, data.images[i], descriptions[i], tokens[i, :start].tolist(), end - start + 4)
                turns.append({"type": kind, "question": question, "answer": answer,
                              "predicted": vqa.decode([x for x in said if x != vqa.WORD_ID[vqa.STOP]])})
            examples.append({"scene": descriptions[i], "image_first": data.image_first[i], "turns": turns})
    samples = {f"correct_{t}": xs for t, xs in correct.items() if xs}
    metrics = {f"vqa_accuracy_{t}": sum(xs) / len(xs) for t, xs in correct.items() if xs}
    metrics |= _pooled(samples, (vqa.TRAIN_TYPES, vqa.HELD_OUT_TYPES))
    protocol = {"split": "test", "n": len(data), "questions": sum(len(c) for c in data.conversations),
                "resolution": config.image_size, "train_types": list(vqa.TRAIN_TYPES),
                "held_out_types": list(vqa.HELD_OUT_TYPES), "data_fingerprint": data.fingerprint(),
                "scoring": "exact match of the greedy answer given the true earlier turns",
                "examples": examples}
    return Measured(metrics=metrics, samples=samples, protocol=protocol)

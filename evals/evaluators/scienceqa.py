"""ScienceQA accuracy (LLaVA, arXiv 2304.08485, Section 5.2 and Table 7).

Protocol: the questions of ScienceQA's `split` (test: 4,241) under the run's `data_root`
(`evals.tasks.scienceqa`, the authors' layout), each prompted with its context, question and
options (and its image, where it has one); the model's greedy completion is parsed for the last
"The answer is X" (LLaVA's evaluation script), and a question is correct when X is its answer's
letter. Per-question correctness is kept in `samples`, split by image context (`correct_img`,
`correct_no_img`), so `scienceqa_accuracy` (in %, over all questions, Table 7's 'Average') and
`scienceqa_img_accuracy` (Table 7's 'IMG') recompute from the record.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from evals.contract import VisualAnswerer, capability
from evals.evaluators import Measured, register, shrunk
from evals.record import EvalResult
from evals.tasks import scienceqa as sqa


class ScienceQAOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    split: str = "test"
    n: int = Field(0, ge=0)                 # the first n questions (0: all)
    max_new_tokens: int = Field(128, ge=1)


def _accuracies(samples: dict[str, list[float]]) -> dict[str, float]:
    every = samples.get("correct_img", []) + samples.get("correct_no_img", [])
    out = {"scienceqa_accuracy": 100.0 * sum(every) / len(every)}
    if samples.get("correct_img"):
        out["scienceqa_img_accuracy"] = 100.0 * sum(samples["correct_img"]) / len(samples["correct_img"])
    return out


def derive(result: EvalResult) -> dict[str, float]:
    return _accuracies(result.samples)


def tiny(options: ScienceQAOptions) -> ScienceQAOptions:
    return shrunk(options, n=2, max_new_tokens=4)


@register("scienceqa", version=1, options=ScienceQAOptions, derive=derive, tiny=tiny,
          metric_names=lambda o: ["scienceqa_accuracy", "scienceqa_img_accuracy"])
def scienceqa(agent, config, options: ScienceQAOptions) -> Measured:
    model = capability(agent, VisualAnswerer, "scienceqa")
    examples = sqa.load_scienceqa(config.data_root, options.split, options.n)
    if not examples:
        raise ValueError(f"scienceqa: the {options.split} split under {config.data_root} is empty")
    samples: dict[str, list[float]] = {"correct_img": [], "correct_no_img": []}
    unparsed = 0
    for e in examples:
        image = sqa.read_image(e.image, config.image_size) if e.image is not None else None
        said = model.answer([image], [e.prompt], options.max_new_tokens)[0]
        letter = sqa.answer_letter(said)
        unparsed += letter is None
        samples["correct_img" if e.image is not None else "correct_no_img"].append(float(letter == e.answer))
    samples = {k: v for k, v in samples.items() if v}
    protocol = {"split": options.split, "n": len(examples), "data_root": str(config.data_root),
                "with_image": sum(e.image is not None for e in examples), "unparsed": unparsed,
                "scoring": "greedy completion; the letter of its last 'The answer is X' against the answer's"}
    return Measured(metrics=_accuracies(samples), samples=samples, protocol=protocol)

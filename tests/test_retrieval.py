"""The `retrieval` evaluator (CLIP's Table 13 protocol on held-out captioned shapes): recall@k
against scikit-learn's `top_k_accuracy_score` on identical scores (one right caption per image)
and a query-by-query loop written out (several right images per caption, ties), chance levels
worked by hand, an oracle and a blind model end to end, `derive` against the record's consistency
check; and the harness piece that publishes an evaluator's picture beside the run's record."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import top_k_accuracy_score

from evals.config import resolve
from evals.evaluators import Measured, derived_metrics, register, REGISTRY
from evals.evaluators.retrieval import PICTURE, RetrievalOptions, chance_t2i, ranks, retrieval
from evals.record import IMAGE_MAGIC, load_record
from evals.spec import load_spec
from evals.tasks.captioned_shapes import make_captioned_shapes
from evals.tier_runner import RunOptions, evaluate_agent, run_one
from tests.test_evaluator_derive import failures

PNG = IMAGE_MAGIC[".png"]


def naive_hit(scores: list[float], right: list[bool], k: int) -> bool:
    """A query is a hit at k when one of its right candidates is among the first k, the candidates
    sorted by score with every wrong one placed before a right one of equal score."""
    order = sorted(range(len(scores)), key=lambda j: (-scores[j], right[j]))
    return any(right[j] for j in order[:k])


def test_image_to_text_recall_matches_scikit_learns_top_k_accuracy():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(40, 12, generator=g)                 # 40 images, 12 distinct captions
    own = torch.randint(12, (40,), generator=g)
    right = own[:, None] == torch.arange(12)[None, :]
    for k in (1, 5):
        ours = (ranks(scores, right) < k).float().mean().item()
        assert ours == pytest.approx(top_k_accuracy_score(own.numpy(), scores.numpy(), k=k, labels=np.arange(12)))


def test_text_to_image_recall_with_several_right_images_and_ties_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 4, (9, 30), generator=g).float()  # few levels: many ties
    right = torch.rand(9, 30, generator=g) < 0.15
    right[:, 0] |= ~right.any(1)                                 # every query has a right image
    for k in (1, 5):
        expected = [naive_hit(s, r, k) for s, r in zip(scores.tolist(), right.tolist())]
        assert (ranks(scores, right) < k).tolist() == expected
    # a hand case: right images at scores 0.5 and 0.9, wrong ones at 0.9, 0.7, 0.1
    s, r = torch.tensor([[0.5, 0.9, 0.9, 0.7, 0.1]]), torch.tensor([[True, True, False, False, False]])
    assert ranks(s, r).tolist() == [1]                           # the tie at 0.9 counts against it


def test_chance_levels_worked_by_hand():
    assert chance_t2i(4, [1], 1) == pytest.approx(0.25)
    assert chance_t2i(4, [1], 2) == pytest.approx(1 - 3 / 6)     # 1 - C(3,2)/C(4,2)
    assert chance_t2i(4, [2, 1], 1) == pytest.approx((0.5 + 0.25) / 2)


class Oracle:
    """Scores an image 1 against its own caption and 0 otherwise (it looks the image up)."""

    def __init__(self, n: int, size: int):
        data = make_captioned_shapes(n, size, split="zero_shot")
        self.caption = {img.numpy().tobytes(): c for img, c in zip(data.images, data.captions)}

    def zero_shot_logits(self, images, prompts):
        truth = [self.caption[img.numpy().tobytes()] for img in images]
        return torch.tensor([[float(t == p[0]) for p in prompts] for t in truth])


class Blind:
    def zero_shot_logits(self, images, prompts):
        return torch.zeros(len(images), len(prompts))


def test_an_oracle_recalls_everything_and_a_blind_model_nothing():
    config = SimpleNamespace(image_size=16)
    opts = RetrievalOptions(n=60, batch_size=25, examples=3, shown=4)
    m = retrieval.fn(Oracle(60, 16), config, opts)
    assert set(m.metrics.values()) == {1.0}
    n_captions = m.protocol["n_captions"]
    assert len(m.samples["i2t_hit1"]) == 60 and len(m.samples["t2i_hit5"]) == n_captions < 60  # repeats merged
    assert m.protocol["chance"]["retrieval_i2t_r5"] == pytest.approx(5 / n_captions)
    assert len(m.protocol["examples"]) == 3 and all("(right)" in e.split(", ")[0] for e in m.protocol["examples"])
    assert m.images[PICTURE].startswith(PNG)
    assert set(retrieval.fn(Blind(), config, opts).metrics.values()) == {0.0}  # ties count against the query


def test_metrics_derive_from_the_hits_and_an_edited_metric_is_caught():
    result = retrieval(Oracle(30, 16), SimpleNamespace(image_size=16), RetrievalOptions(n=30, examples=0))
    assert derived_metrics(result) == result.metrics
    assert failures(result) == []
    edited = result.model_copy(update={"metrics": {**result.metrics, "retrieval_t2i_r1": 0.5}})
    assert [f for f, _ in failures(edited)] == ["evaluations[0].metrics.retrieval_t2i_r1"]


@pytest.fixture
def drawing_evaluator():
    from pydantic import BaseModel

    class NoOptions(BaseModel):
        pass

    def draw(agent, config, options):
        return Measured(metrics={"x": 1.0}, samples={"x": [1.0]}, images=agent)

    register("_test_draws", version=1, options=NoOptions, metric_names=lambda o: ["x"])(draw)
    yield REGISTRY["_test_draws"], NoOptions()
    del REGISTRY["_test_draws"]


def test_evaluate_agent_writes_an_evaluators_images_into_the_run_folder(drawing_evaluator, tmp_path):
    ev = [drawing_evaluator]
    results = evaluate_agent({"a.png": PNG + b"rest"}, None, ev, image_dir=tmp_path)
    assert results[0].metrics == {"x": 1.0} and (tmp_path / "a.png").read_bytes() == PNG + b"rest"
    evaluate_agent({"b.png": PNG}, None, ev)                           # no folder: nothing written
    assert not (tmp_path / "b.png").exists()
    for bad in ({"../a.png": PNG}, {"a.txt": PNG}, {"c.png": b"not a png"}):
        with pytest.raises(ValueError):
            evaluate_agent(bad, None, ev, image_dir=tmp_path)


def test_a_smoke_run_publishes_the_retrieval_picture_beside_its_record(tmp_path):
    resolved = resolve(load_spec("clip"), "smoke", "ours", 1, {})
    record = run_one(resolved, RunOptions(device="cpu", progress=False, tensorboard=False,
                                          results=tmp_path / "results", runs=tmp_path / "runs"))
    rec = load_record(record)
    assert rec.status == "ok" and "retrieval_t2i_r1" in rec.metrics
    picture = record.with_suffix("") / PICTURE
    assert picture.read_bytes().startswith(PNG)

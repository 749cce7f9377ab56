"""Evaluators' `derive`: the summary metrics they report recompute from the samples they keep,
and `repro verify`'s consistency check catches a record whose metric and samples disagree."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from evals.evaluators import derived_metrics
from evals.evaluators.attention_cost import attention_cost, AttentionCostOptions
from evals.evaluators.bleu import BLEUOptions, bleu
from evals.evaluators.lm_loss import derive as lm_loss_derive
from evals.record import EvalResult
from evals.verify.checks import check_metrics
from evals.verify.report import RecordReport
from tests.factories import make_record


def failures(result: EvalResult) -> list[tuple[str, str]]:
    rec = make_record().model_copy(update={"evaluations": [result], "metrics": dict(result.metrics)})
    rep = RecordReport(Path("r.json"))
    check_metrics(rec, rep)
    return [(f.field, f.reason) for f in rep.failures]


def test_classification_accuracies_from_per_image_correctness():
    samples = {"correct": [1.0, 0.0, 1.0, 1.0], "correct_top5": [1.0] * 4, "linear_correct": [0.0, 0.0, 1.0, 0.0]}
    result = EvalResult(evaluator="classification", version=1, samples=samples,
                        metrics={"accuracy": 0.75, "top5_accuracy": 1.0, "linear_accuracy": 0.25})
    assert derived_metrics(result) == result.metrics
    assert failures(result) == []
    edited = result.model_copy(update={"metrics": {**result.metrics, "linear_accuracy": 0.5}})
    assert failures(edited) == [("evaluations[0].metrics.linear_accuracy",
                                 "0.5, but recomputed from the samples by the classification evaluator is 0.25")]


def test_corpus_bleu_from_the_sentence_statistics():
    pairs = [("a", "the cat sat on the mat"), ("b", "a dog barked at the moon"), ("c", "it rained all day long")]
    agent = SimpleNamespace(held_out=lambda: pairs,
                            translate=lambda src: ["the cat sat on a mat", "a dog barked at the moon", "it rained all day"])
    result = bleu(agent, SimpleNamespace(beam_size=4, length_alpha=0.6), BLEUOptions())
    assert 0 < result.metrics["bleu"] < 100
    assert derived_metrics(result)["bleu"] == pytest.approx(result.metrics["bleu"], rel=1e-12)
    assert failures(result) == []
    fewer_matches = {**result.samples, "correct_1": [x - 1 for x in result.samples["correct_1"]]}
    assert [f for f, _ in failures(result.model_copy(update={"samples": fewer_matches}))] == ["evaluations[0].metrics.bleu"]


def test_lm_loss_weights_the_short_last_batch_by_its_tokens():
    # 2 full batches of 4 windows x 8 tokens, and a last one of 16 tokens
    result = EvalResult(evaluator="lm_loss", version=1, samples={"batch_loss": [1.0, 2.0, 4.0]},
                        protocol={"batch_size": 4, "window": 8, "tokens": 80, "bytes": 100},
                        metrics={"val_loss": (32 + 64 + 64) / 80, "bits_per_byte": 160 / math.log(2) / 100})
    assert lm_loss_derive(result) == pytest.approx(result.metrics, rel=1e-12)
    assert failures(result) == []
    too_many = result.model_copy(update={"samples": {"batch_loss": [1.0, 2.0, 4.0, 4.0]}})
    assert [f for f, _ in failures(too_many)] == ["evaluations[0].samples"]


def test_attention_cost_metrics_from_the_measurements():
    mib = 2**20
    agent = SimpleNamespace(
        memory={"naive": {n: 4.0 * n * n for n in (1024, 2048, 4096)}, "tiled": {n: 1000.0 * n for n in (1024, 2048, 4096)}},
        speed={"naive": {512: 900.0, 1024: 500.0}, "tiled": {512: 300.0, 1024: 250.0}, "sdpa": {512: 5000.0, 1024: 4000.0}},
        max_abs_error=3e-7, measurement="made up for the test")
    result = attention_cost(agent, None, AttentionCostOptions())
    m = result.metrics
    assert m["memory_exponent_naive"] == pytest.approx(2.0) and m["memory_exponent_tiled"] == pytest.approx(1.0)
    assert m["memory_mib_at_max_n_tiled"] == pytest.approx(4096_000 / mib)
    assert m["memory_ratio_naive_to_tiled"] == pytest.approx(4 * 4096 / 1000)
    assert m["tokens_per_s_sdpa"] == 4000.0 and m["speed_ratio_tiled_to_naive"] == pytest.approx(0.5)
    assert not set(result.samples) & set(m)  # no sample shares a metric's name
    assert derived_metrics(result) == {k: v for k, v in m.items() if k != "max_abs_error"}
    assert failures(result) == []
    slower = {**result.samples, "tokens_per_s_by_n_naive": [900.0, 400.0]}
    assert sorted(f for f, _ in failures(result.model_copy(update={"samples": slower}))) == \
        ["evaluations[0].metrics.speed_ratio_tiled_to_naive", "evaluations[0].metrics.tokens_per_s_naive"]


def test_atari_best_return_is_the_largest_episode_return():
    result = EvalResult(evaluator="atari_return", version=1, samples={"return": [3.0, 21.0, -4.0]},
                        metrics={"return": 20 / 3, "best_return": 21.0})
    assert failures(result) == []
    assert [f for f, _ in failures(result.model_copy(update={"metrics": {**result.metrics, "best_return": 30.0}}))] == \
        ["evaluations[0].metrics.best_return"]

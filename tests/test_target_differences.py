"""Targets whose sides are differences of two metrics, `(m[a] - m[b]) OP (m[c] - m[d])`: parsed,
their arms and metric names checked, tested paired over seeds like any other target, against the
per-seed difference of differences computed by hand."""

import numpy as np
import pytest

from evals.errors import SpecError
from evals.spec import Target, Tier, check_metric_names, parse_expr
from evals.stats import bootstrap_ci, check_target
from leaderboard.collect import _estimate

EXPR = "(accuracy[r1] - accuracy[v1]) > (accuracy[r20] - accuracy[v20])"
VALUES = {("accuracy", "r1"): {1: 0.95, 2: 0.96, 3: 0.96}, ("accuracy", "v1"): {1: 0.40, 2: 0.39, 3: 0.36},
          ("accuracy", "r20"): {1: 1.0, 2: 1.0, 3: 1.0}, ("accuracy", "v20"): {1: 0.95, 2: 0.82, 3: 0.94}}


def test_difference_terms_parse_and_print_back():
    lhs, op, rhs = parse_expr(EXPR)
    assert (lhs.metric, lhs.arm, lhs.minus_metric, lhs.minus_arm) == ("accuracy", "r1", "accuracy", "v1")
    assert op == ">" and str(lhs) == "(accuracy[r1] - accuracy[v1])" and str(rhs) == "(accuracy[r20] - accuracy[v20])"
    assert Target(expr=EXPR).arms() == {"r1", "v1", "r20", "v20"}
    assert parse_expr("(loss[a] - loss[b]) <= 0.1")[2].const == 0.1
    assert parse_expr("accuracy[a] >= 0.95")[0].minus_arm is None  # the plain forms are unchanged
    for bad in ["0.1 < (accuracy[a] - accuracy[b])", "(accuracy[a] + accuracy[b]) > 0", "(0.5 - accuracy[b]) > 0",
                "2 * (accuracy[a] - accuracy[b]) > 0"]:
        with pytest.raises(ValueError):
            parse_expr(bad)


def test_difference_of_differences_is_tested_paired_over_seeds():
    by_hand = np.array([(VALUES[("accuracy", "r1")][s] - VALUES[("accuracy", "v1")][s])
                        - (VALUES[("accuracy", "r20")][s] - VALUES[("accuracy", "v20")][s]) for s in (1, 2, 3)])
    result = check_target(Target(expr=EXPR), VALUES, 3)
    lo, hi = bootstrap_ci(by_hand)
    assert result.met == (lo > 0) and result.met and result.seeds == 3
    assert result.detail == f"difference {by_hand.mean():.4g}, 95% CI [{lo:.4g}, {hi:.4g}]"
    flipped = check_target(Target(expr="(accuracy[r1] - accuracy[v1]) < (accuracy[r20] - accuracy[v20])"), VALUES, 3)
    assert not flipped.met
    # a seed counts only where all four arms have it
    partial = {**VALUES, ("accuracy", "v20"): {1: 0.95, 2: 0.82}}
    assert check_target(Target(expr=EXPR), partial, 3).seeds == 2
    assert "no ok runs report accuracy[v20]" in check_target(Target(expr=EXPR), {k: v for k, v in VALUES.items()
                                                                             if k[1] != "v20"}, 3).detail
    against_const = check_target(Target(expr="(accuracy[r1] - accuracy[v1]) >= 0.5", test="mean"), VALUES, 3)
    assert against_const.met and against_const.detail.startswith("mean 0.5733")


def test_leaderboard_estimate_is_the_paired_difference_of_differences():
    from types import SimpleNamespace

    records = [SimpleNamespace(status="ok", arm=arm, seed=s, metrics={"accuracy": v})
               for (_, arm), per in VALUES.items() for s, v in per.items()]
    est = _estimate(Target(expr=EXPR), records)
    assert est.n == 3 and est.mean == pytest.approx(0.4766666, abs=1e-6)


def test_a_difference_names_unknown_arms_and_metrics_as_errors():
    arms = {"r1": {}, "v1": {}, "r20": {}, "v20": {}}
    with pytest.raises(ValueError, match="unknown arm"):
        Tier(config={}, seeds=[1, 2, 3], arms={k: v for k, v in arms.items() if k != "v20"}, targets=[{"expr": EXPR}])
    tier = Tier(config={}, seeds=[1], arms=arms, evaluators=[{"kind": "classification"}],
                targets=[{"expr": "(accuracy[r1] - bogus[v1]) > 0"}])
    with pytest.raises(SpecError, match="'bogus'"):
        check_metric_names(tier, "spec.yaml: field 'tiers.mini")
    tier.targets[0] = Target(expr=EXPR)
    check_metric_names(tier, "spec.yaml: field 'tiers.mini")

"""Learning curves: arms overlaid, the mean over seeds with a 95% bootstrap band, by steps and by
wall-clock time; and the tier's sweeps (a metric against the config field its arms vary); drawn
with matplotlib into PNG bytes."""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from matplotlib import rc_context
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from evals.record import Record
from evals.spec import Sweep, Tier
from evals.stats import CONFIDENCE, N_BOOTSTRAP

GRID_POINTS = 100
COLORS = ("#3f51b5", "#e65100", "#2e7d32", "#ad1457", "#00838f", "#6d4c41", "#5e35b1", "#9e9d24")


def bootstrap_band(y: np.ndarray, confidence: float = CONFIDENCE, n_boot: int = N_BOOTSTRAP):
    """Mean and percentile-bootstrap CI of the mean over seeds (rows), for every column at once.

    The same resampling as `evals.stats.bootstrap_ci` (seeds resampled with the same generator),
    vectorised over the curve's points: a resample's mean is its seed counts times the values.
    """
    y = np.asarray(y, dtype=float)
    mean = y.mean(axis=0)
    if y.shape[0] == 1:
        return mean, mean.copy(), mean.copy()
    counts = _resample_counts(y.shape[0], n_boot)  # (seeds, resamples)
    means = np.sort(np.einsum("sp,sr->pr", y, counts) / y.shape[0], axis=1)  # (points, resamples)
    alpha = (1 - confidence) / 2
    return mean, _quantile(means, alpha), _quantile(means, 1 - alpha)


@lru_cache(maxsize=None)
def _resample_counts(n: int, n_boot: int) -> np.ndarray:
    """How often each of n seeds is drawn in each resample: `bootstrap_ci`'s draws, made once per n."""
    idx = np.random.default_rng(0).integers(0, n, size=(n_boot, n))
    return np.ascontiguousarray((idx[:, :, None] == np.arange(n)).sum(axis=1).T, dtype=float)


def _quantile(sorted_rows: np.ndarray, q: float) -> np.ndarray:
    """np.quantile's default (linear interpolation) along rows already sorted."""
    pos = q * (sorted_rows.shape[1] - 1)
    i = int(np.floor(pos))
    j = min(i + 1, sorted_rows.shape[1] - 1)
    return sorted_rows[:, i] + (pos - i) * (sorted_rows[:, j] - sorted_rows[:, i])


def arm_groups(tier: Tier) -> list[list[str]]:
    """Arms drawn on the same axes: those with the same config overrides (the same task, another
    implementation) and those one target compares. Others (another environment, another
    model) get their own figure, since their scales need not agree."""
    parent = {a: a for a in tier.arms}

    def find(a):
        while parent[a] != a:
            a = parent[a]
        return a

    def union(a, b):
        parent[find(a)] = find(b)

    by_config: dict[str, str] = {}
    for name, arm in tier.arms.items():
        key = json.dumps(arm.config, sort_keys=True)
        union(name, by_config.setdefault(key, name))
    for target in tier.targets:
        arms = sorted(target.arms())
        for other in arms[1:]:
            union(arms[0], other)
    groups: dict[str, list[str]] = {}
    for name in tier.arms:
        groups.setdefault(find(name), []).append(name)
    return list(groups.values())


def _series(records: list[Record], curve: str, axis: int):
    """Each seed's curve interpolated onto a grid over the span every seed covers; None when the
    seeds share no span (then there is no band to draw)."""
    xs = [np.array([p[axis] for p in r.curves[curve]], dtype=float) for r in records]
    vs = [np.array([p[2] for p in r.curves[curve]], dtype=float) for r in records]
    lo, hi = max(x[0] for x in xs), min(x[-1] for x in xs)
    if not hi > lo:
        return None
    grid = np.linspace(lo, hi, GRID_POINTS)
    return grid, np.stack([np.interp(grid, x, v) for x, v in zip(xs, vs)])


@dataclass
class CurvePlot:
    curve: str
    arms: list[str]
    seeds: dict[str, int]
    png: bytes
    kind: str = "curve"  # curve: a learning curve; sweep: a metric against a config field
    title: str = ""
    width: int = 0       # pixels, for the page's <img> (it reserves the space before the plot loads)
    height: int = 0

    @property
    def slug(self) -> str:
        return f"{self.curve}-{'-'.join(self.arms)}".replace("/", "_")


# Sizes for a plot shown at the page's width (about 900 px on a desktop): readable without zooming.
STYLE = {"font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "xtick.labelsize": 11,
         "ytick.labelsize": 11, "legend.fontsize": 11}
DPI = 100
TASK_KEYS = ("env_id", "env", "game", "dataset", "corpus")


def task_name(records: list[Record]) -> str | None:
    """The environments, games, datasets or corpora the runs trained on, as their records name them
    (in the config, else in an evaluation's protocol)."""
    names = []
    for r in records:
        sources = [r.config, *(e.protocol for e in r.evaluations)]
        names += [str(src[k]).split(" ")[0] for src in sources for k in TASK_KEYS if isinstance(src.get(k), str)][:1]
    return ", ".join(dict.fromkeys(names)) or None


def plot_title(name: str, records: list[Record]) -> str:
    task = task_name(records)
    return f"{name} on {task}" if task else name


def target_lines(tier: Tier, metrics: list[str], arms: list[str]) -> list[tuple[float, str]]:
    """The constant bounds of the tier's targets on these arms and metrics, as (y, label): drawn as
    dashed lines. A training curve `train_<metric>` gets the bound on the evaluated `<metric>`,
    labelled with the target's expression so the two are not confused."""
    lines = []
    for t in tier.targets:
        lhs, op, rhs = t.parsed
        if rhs.const is not None and lhs.minus_arm is None and lhs.arm in arms and lhs.metric in metrics:
            lines.append((rhs.const / lhs.scale, f"target {t.expr}"))
    return list(dict.fromkeys(lines))


def _draw_targets(ax, lines: list[tuple[float, str]]) -> None:
    for y, label in lines:
        ax.axhline(y, color="#555", ls="--", lw=1.2, label=label)


def _metrics_of(curve: str) -> list[str]:
    return [curve, curve.removeprefix("train_")]


def plot_curve(curve: str, by_arm: dict[str, list[Record]], lines: list[tuple[float, str]] = ()) -> CurvePlot:
    with rc_context(STYLE):
        fig = Figure(figsize=(10, 3.9), dpi=DPI)
        fig.subplots_adjust(left=0.08, right=0.99, bottom=0.16, top=0.88, wspace=0.22)
        ax_step, ax_wall = fig.subplots(1, 2)
        minutes = max(r.curves[curve][-1][1] for recs in by_arm.values() for r in recs) > 300
        for i, (arm, records) in enumerate(by_arm.items()):
            color = COLORS[i % len(COLORS)]
            label = f"{arm} ({len(records)} seed{'s' if len(records) != 1 else ''})"
            for ax, axis in ((ax_step, 0), (ax_wall, 1)):
                _draw_arm(ax, curve, records, axis, 60.0 if axis == 1 and minutes else 1.0, color, label)
        for ax in (ax_step, ax_wall):
            _draw_targets(ax, lines)
        ax_step.set_xlabel("training step")
        ax_wall.set_xlabel(f"wall-clock ({'min' if minutes else 's'})")
        for ax in (ax_step, ax_wall):
            ax.xaxis.set_major_locator(MaxNLocator(6))
            ax.yaxis.set_major_locator(MaxNLocator(6))
            ax.set_ylabel(curve)
            ax.grid(alpha=0.3)
            ax.spines[["top", "right"]].set_visible(False)
        title = plot_title(curve, [r for recs in by_arm.values() for r in recs])
        fig.suptitle(title, fontsize=STYLE["axes.titlesize"])
        ax_step.legend(frameon=False)
        return CurvePlot(curve, list(by_arm), {a: len(r) for a, r in by_arm.items()}, _png(fig), title=title,
                         width=int(10 * DPI), height=int(3.9 * DPI))


def _draw_arm(ax, curve: str, records: list[Record], axis: int, scale: float, color: str, label: str) -> None:
    """One arm's mean over seeds with its band; each seed's own line where the seeds share no span,
    with markers where a seed logged a single point (a line of one point draws nothing)."""
    series = _series(records, curve, axis)
    if series is None:
        for j, r in enumerate(records):
            pts = np.array(r.curves[curve], dtype=float)
            ax.plot(pts[:, axis] / scale, pts[:, 2], color=color, lw=1, marker="o" if len(pts) == 1 else None,
                    label=label if j == 0 else None)
        return
    grid, y = series
    mean, lo, hi = bootstrap_band(y)
    ax.plot(grid / scale, mean, color=color, lw=1.8, label=label)
    if len(records) > 1:
        ax.fill_between(grid / scale, lo, hi, color=color, alpha=0.18, lw=0)


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def sweep_points(sweep: Sweep, arms: list[str], metric: str, records: list[Record]):
    """(x, mean, CI low, CI high, runs) for each arm with runs that report the metric, in the order
    given; for a sweep with `values`, for each value of the template `metric` over the arms' runs."""
    if sweep.values is not None:
        at = [(v, sweep.metric_at(metric, v)) for v in sweep.values]
        runs = [r for r in records if r.arm in arms]
        return [(float(v), *_band([r.metrics[name] for r in runs if name in r.metrics])) for v, name in at
                if any(name in r.metrics for r in runs)]
    points = []
    for arm in arms:
        runs = [r for r in records if r.arm == arm and metric in r.metrics and sweep.x in r.config]
        if runs:
            points.append((float(runs[0].config[sweep.x]), *_band([r.metrics[metric] for r in runs])))
    return points


def _band(values: list[float]) -> tuple[float, float, float, int]:
    mean, lo, hi = bootstrap_band(np.array([[v] for v in values]))
    return mean[0], lo[0], hi[0], len(values)


def series_arms(sweep: Sweep) -> list[str]:
    return [a for arms in sweep.series.values() for a in arms]


def plot_sweep(sweep: Sweep, records: list[Record], lines: list[tuple[float, str]] = ()) -> CurvePlot | None:
    with rc_context(STYLE):
        return _plot_sweep(sweep, records, lines)


def _plot_sweep(sweep: Sweep, records: list[Record], lines: list[tuple[float, str]]) -> CurvePlot | None:
    fig = Figure(figsize=(8, 4.4), dpi=DPI)
    fig.subplots_adjust(left=0.12, right=0.98, bottom=0.14, top=0.9)
    ax = fig.subplots()
    seeds: dict[str, int] = {}
    i = 0
    for label, arms in sweep.series.items():
        for metric in sweep.metrics:
            pts = sweep_points(sweep, arms, metric, records)
            if not pts:
                continue
            x, mean, lo, hi, n = (np.array(c) for c in zip(*pts))
            name = label if len(sweep.metrics) == 1 else f"{label}: {metric.replace('{x}', '{' + sweep.x + '}')}"
            color = COLORS[i % len(COLORS)]
            ax.errorbar(x, mean, yerr=[mean - lo, hi - mean], color=color, marker="o", capsize=4, lw=1.8,
                        label=f"{name} ({min(n)}-{max(n)} seeds)" if min(n) != max(n) else f"{name} ({n[0]} seeds)")
            seeds.update({a: int(k) for a, k in zip(arms, n)} if sweep.values is None else {a: int(max(n)) for a in arms})
            i += 1
    if not seeds:
        return None
    _draw_targets(ax, lines)
    if sweep.log_x:
        ax.set_xscale("log")
    ax.set_xlabel(sweep.x)
    ax.set_ylabel(sweep.y or ", ".join(sweep.metrics))
    title = plot_title(sweep.title or f"{', '.join(sweep.metrics)} against {sweep.x}",
                       [r for r in records if r.arm in seeds])
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False)
    name = re.sub(r"[^A-Za-z0-9_]", "", f"sweep_{sweep.x}_{'_'.join(sweep.metrics)}")  # two sweeps of one x differ
    return CurvePlot(name, series_arms(sweep), seeds, _png(fig), "sweep",
                     title, int(8 * DPI), int(4.4 * DPI))


def tier_plots(tier: Tier, records: list[Record]) -> list[CurvePlot]:
    """The tier's sweeps, then one figure per arm group and curve, from the runs that count (ok,
    one per seed)."""
    ok = [r for r in records if r.status == "ok" and r.curves]
    plots = [p for p in (plot_sweep(s, [r for r in records if r.status == "ok"],
                                    target_lines(tier, s.named_metrics(), series_arms(s))) for s in tier.sweeps) if p]
    for group in arm_groups(tier):
        names = [c for r in ok if r.arm in group for c in r.curves]
        for curve in dict.fromkeys(names):  # first-seen order: the order the runs logged them
            by_arm = {arm: [r for r in ok if r.arm == arm and len(r.curves.get(curve, ())) > 0] for arm in group}
            by_arm = {a: rs for a, rs in by_arm.items() if rs}
            if by_arm:
                plots.append(plot_curve(curve, by_arm, target_lines(tier, _metrics_of(curve), list(by_arm))))
    return plots

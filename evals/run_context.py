"""The run context: the services the harness gives a paper's `train(config, run)` (the
`RunContext` protocol of `evals.contract`).

`run.log` writes metrics to JSONL and TensorBoard, keeps the curves for the record and shows the
latest values beside the progress bar; it stops the run with the step named when a logged value is
NaN or infinite. `run.progress(total)` opens the bar and `run.advance(n)` moves it.
`run.maybe_checkpoint` saves safetensors checkpoints every `checkpoint_every` steps;
`run.resume_state()` gives the newest one back when the run is resumed, and the log is cut back to
that step so a resumed run logs exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from evals.checkpoint import load_state, save_state

CHECKPOINT_DIR = "checkpoints"


FLUSH_EVERY_S = 2.0


class DivergenceError(RuntimeError):
    """A logged value went NaN or infinite: the run stops at that step."""


class PrefixReached(Exception):
    """A run re-executed for verification reached the end of its prefix (`stop_after_step`)."""


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
    return torch.device(name)


class Run:
    def __init__(
        self,
        run_dir: Path,
        seed: int,
        device: torch.device,
        checkpoint_every: int = 0,
        resume: bool = False,
        progress: bool = True,
        progress_label: str = "",
        progress_position: int = 0,
        tensorboard: bool = True,
        stop_after_step: int = 0,
    ):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seed = seed
        self.device = device
        self.checkpoint_every = checkpoint_every
        self.stop_after_step = stop_after_step  # > 0: logging a later step raises PrefixReached
        self.curves: dict[str, list[tuple[int, float, float]]] = {}
        self.overhead_s = 0.0  # wall time spent inside these services, for `make bench`
        self.checkpoint_sha256: str | None = None
        self._show_progress = progress
        self._label = progress_label
        self._position = progress_position
        self._bar: tqdm | None = None
        self._postfix: dict[str, float] = {}  # the latest value of each logged name, shown beside the bar
        self._last_checkpoint = 0
        self._last_flush = time.perf_counter()
        self._resume_state: dict[str, Any] | None = None
        self.elapsed_before = 0.0
        self._t0 = time.perf_counter()
        if resume:
            self._load_for_resume()
        self._jsonl = open(self.dir / "metrics.jsonl", "a")
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.dir / "tb"))

    # -- metrics -------------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self._t0

    def log(self, step: int, **values: float) -> None:
        if self.stop_after_step and step > self.stop_after_step:
            raise PrefixReached(f"stopped before logging step {step}: the prefix ends at step {self.stop_after_step}")
        t = time.perf_counter()
        wall = self.elapsed
        for name, value in values.items():
            value = float(value)
            if not math.isfinite(value):
                raise DivergenceError(f"'{name}' became {value} at step {step}: the run diverged")
            self.curves.setdefault(name, []).append((int(step), round(wall, 3), value))
            if self._tb is not None:
                self._tb.add_scalar(name, value, step)
        self._jsonl.write(json.dumps({"step": int(step), "wall": round(wall, 3), **{k: float(v) for k, v in values.items()}}) + "\n")
        if self._bar is not None and values:
            self._postfix.update(values)
            self._bar.set_postfix({k: f"{float(v):.4g}" for k, v in self._postfix.items()}, refresh=False)
        if t - self._last_flush > FLUSH_EVERY_S:  # so that `tail -f metrics.jsonl` follows a run
            self._jsonl.flush()
            self._last_flush = t
        self.overhead_s += time.perf_counter() - t

    # -- progress ------------------------------------------------------------------------
    def progress(self, total: int, unit: str = "step") -> "Run":
        if self._show_progress:
            initial = int(self._resume_state["step"]) if self._resume_state else 0
            self._bar = tqdm(total=total, initial=initial, unit=unit, desc=self._label, position=self._position,
                             leave=True, dynamic_ncols=True, file=sys.stderr, mininterval=0.5)
        return self

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    # -- checkpoints ---------------------------------------------------------------------
    def maybe_checkpoint(self, step: int, state: Callable[[], dict[str, Any]]) -> None:
        """Save `state()` if `checkpoint_every` steps have passed since the last save."""
        if self.checkpoint_every <= 0 or step - self._last_checkpoint < self.checkpoint_every:
            return
        t = time.perf_counter()
        self._jsonl.flush()
        payload = {"step": int(step), "elapsed": self.elapsed, "state": state()}
        save_state(self.dir / CHECKPOINT_DIR / f"step_{step:09d}.safetensors", payload)
        self._last_checkpoint = step
        self.overhead_s += time.perf_counter() - t

    def resume_state(self) -> dict[str, Any] | None:
        """The newest checkpoint's state when resuming (then the paper restores from it), else None."""
        return self._resume_state["state"] if self._resume_state else None

    def _load_for_resume(self) -> None:
        ckpts = sorted((self.dir / CHECKPOINT_DIR).glob("step_*.safetensors"))
        if not ckpts:
            return
        self._resume_state = load_state(ckpts[-1])
        step = int(self._resume_state["step"])
        self._last_checkpoint = step
        self.elapsed_before = float(self._resume_state["elapsed"])
        # Cut the log back to the checkpoint, so the resumed run appends what an uninterrupted run logs.
        log = self.dir / "metrics.jsonl"
        kept = [json.loads(line) for line in log.read_text().splitlines() if line.strip()] if log.exists() else []
        kept = [e for e in kept if e["step"] <= step]
        log.write_text("".join(json.dumps(e) + "\n" for e in kept))
        for e in kept:
            for name, value in e.items():
                if name not in ("step", "wall"):
                    self.curves.setdefault(name, []).append((e["step"], e["wall"], value))

    def save_final(self, save: Callable[[Path], None]) -> Path:
        path = self.dir / "final.safetensors"
        save(path)
        return path

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()

"""The GPU check: every smoke tier, a short arm of each implemented paper, the Triton kernels compiled,
the GPU benchmarks and a few hundred steps of FlashAttention's full tier with each attention, all with
`--device cuda`, in under 8 minutes on one GPU. `scripts/gpu_check.sh` installs what is missing and
calls this.

    python scripts/gpu_check.py [--device cuda|cpu] [--only REGEX] [--list] [--out DIR] [--bundle DIR]
                                [--parallel N] [--deadline S]

Steps run in phases, the ones a CPU cannot check first: `env` (what the machine is), then `triton`,
`speed` and `bench` one at a time (they time things), then `smoke` and `arm` steps a few at a time
(they share the GPU). Every step's output goes to DIR/logs/<step>.log; DIR/report.md and
DIR/report.json give each step's status, wall time and the lines it flagged (tokens/s, benchmark
tables, metrics), and are rewritten after every step, so a check stopped from outside still leaves
its report. With `--deadline S`, every step ends by S seconds after the start (cut short, or skipped
when under 20 s are left). Records and checkpoints go under DIR (REPRO_RESULTS, REPRO_RUNS), never
into the repository's results/. With `--bundle DIR` (default `$OUT/gpu_check` where `OUT` is set),
DIR gets three files, kept current the same way: report.md, report.json and gpu_check.tar.gz (every
log and record), for a machine that hands back only a few files. Exit status 0 when every step passed. `--device cpu --only ...` rehearses the flow here on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPRO = [sys.executable, "-m", "evals.cli"]


@dataclass
class Step:
    name: str
    phase: str      # env | smoke | arm | triton | bench | speed
    argv: list[str]
    timeout_s: int = 240
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = ""   # a folder under the check's DIR to run in (its data/ then stands in); "": the repository


@dataclass
class Outcome:
    name: str
    phase: str
    status: str     # passed | failed | timed out
    wall_s: float
    command: str
    highlights: list[str]


# A short arm of each implemented paper: (paper, arm, overrides). Budgets are cut so each takes
# seconds to a minute on one GPU; what is checked is that the arm trains and evaluates on the device.
SHORT_ARMS: list[tuple[str, str, dict[str, object]]] = [
    ("sac", "ours", {"total_steps": 3000, "learning_starts": 500}),
    ("sac", "ours_halfcheetah", {"total_steps": 3000, "learning_starts": 1000}),
    ("dqn", "ours", {"total_steps": 5000}),
    ("ppo", "ours", {"total_steps": 16384}),
    ("ppo", "ours_hopper", {"total_steps": 8192}),
    ("transformer", "ours", {}),
    ("vit", "vit_1k", {"steps": 500}),
    ("mae", "ours", {"pretrain_steps": 300, "probe_steps": 100, "steps": 200}),
    ("ddpm", "ours", {}),
    ("flash_attention", "ours", {}),
    ("muon", "muon", {}),
    ("lora", "lora_r4", {"steps": 300, "ft_steps": 100}),
    ("mamba", "s6", {"steps": 500, "curriculum_steps": 250}),
    ("mamba", "decode", {}),
    ("bitnet", "large", {"steps": 200}),
    ("speculative", "ours", {"target_steps": 100, "draft_steps": 100, "prompts": 4, "draws": 200, "cost_repeats": 5}),
    ("dqn", "ours_minatar", {"total_steps": 5000}),
    ("clip", "ours", {"steps": 150, "warmup_steps": 15, "n_train": 4000}),
    ("sam2", "ours", {"steps": 60}),
    ("llava", "ours", {"clip_steps": 60, "lm_steps": 60, "lm_n_docs": 2000, "n_train": 2000, "stage1_steps": 30,
                       "stage2_steps": 30}),
    ("ldm", "latent", {"ae_steps": 60, "train_gflops": 700}),  # the autoencoder and encoding take ~480
    ("controlnet", "full", {"ae_steps": 60, "steps": 100, "control_steps": 100}),
    ("dpo", "ours", {"sft_steps": 100, "pair_prompts": 300, "dpo_betas": [0.1], "dpo_epochs": 1, "ppo_kl_coefs": [0.1],
                     "ppo_iterations": 10}),
    ("r1", "grpo", {"sft_steps": 100, "rl_steps": 20}),
    ("s1", "s1k_curated", {"sft_steps": 100}),
    ("rlhf", "labels_700", {"total_steps": 20480, "refit_every": 5120}),
    ("decision_transformer", "dt_medium", {"gen_expert_steps": 2000, "steps": 200, "eval_every": 100}),
]

# FlashAttention's full tier for a few hundred steps with each attention (tokens/s in its curves and
# from train_throughput). The machine has no FineWeb: the steps run in a folder whose
# data/fineweb10B holds shards of random GPT-2 token ids (`speed_data`); tokens/s do not depend on
# the tokens, its losses mean nothing.
SPEED_STEPS = 200
SPEED_VAL_TOKENS = 10_485_760  # what the tier's fineweb_loss reads

# Modules some papers import that a GPU machine's Python may lack or fail to import (the 2026-11-26 run:
# gymnasium found no MuJoCo although the carried mujoco 4.0 wheels installed): the env step imports each
# and prints the error, so a failing step's cause is in the report.
CHECKED_MODULES = ("mujoco", "ale_py", "minatar", "minari", "pyarrow", "open_clip", "peft", "cv2", "matplotlib", "idlelib",
                   "tkinter")


def env_report() -> None:
    """The env step: Python, PyTorch, Triton, the GPU, and each of CHECKED_MODULES imported (or why not)."""
    import importlib
    import platform

    import torch
    import triton

    print("python", platform.python_version(), "torch", torch.__version__, "triton", triton.__version__)
    print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
    for name in CHECKED_MODULES:
        try:
            module = importlib.import_module(name)
            print(f"{name}: {getattr(module, '__version__', 'imported')}")
        except Exception as e:  # noqa: BLE001 - the report says what each import raised
            print(f"{name}: NOT IMPORTABLE ({type(e).__name__}: {e})")


def overrides(values: dict[str, object]) -> list[str]:
    return [a for k, v in values.items() for a in ("--set", f"{k}={json.dumps(v) if not isinstance(v, str) else v}")]


def steps(device: str) -> list[Step]:
    from evals.spec import all_specs, get_tier, load_spec

    out = [Step("env", "env", [sys.executable, "-c", "import sys; sys.path.insert(0, 'scripts'); import gpu_check; "
                                                   "gpu_check.env_report()"], 120)]
    for spec in all_specs():
        if "smoke" in spec.tiers:
            out.append(Step(f"smoke-{spec.id}", "smoke", REPRO + ["reproduce", spec.id, "--tier", "smoke", "--device", device,
                                                                  "--no-progress", "--jobs", "1"]))
    implemented = {spec.id for spec in all_specs() if "mini" in spec.tiers}
    for paper, arm, values in SHORT_ARMS:
        if paper in implemented:
            out.append(Step(f"arm-{paper}-{arm}", "arm", REPRO + ["reproduce", paper, "--tier", "mini", "--arms", arm,
                                                                  "--seeds", "1", "--device", device, "--no-progress",
                                                                  *overrides(values)], 300))
    # -v: the log names each test as it ends, so a test that hangs is the one after the last named
    out.append(Step("triton-compiled", "triton", [sys.executable, "-m", "pytest", "-v", "-rf", "tests/test_flash_attention_triton.py",
                                                  "-k", "compiled", "-p", "no:cacheprovider"], 300,
                    env={"TRITON_INTERPRET": "0"}))
    out.append(Step("bench-flash_attention", "bench", [sys.executable, "scripts/bench.py", "flash_attention"], 300))
    for attention in get_tier(load_spec("flash_attention"), "full").arms:
        out.append(Step(f"speed-gpt2-{attention}", "speed", REPRO + ["reproduce", "flash_attention", "--tier", "full", "--arms", attention,
                                                                     "--device", device, "--no-progress",
                                                                     *overrides({"steps": SPEED_STEPS, "warmup_steps": 30})], 420,
                        cwd="speed"))
    return out


def speed_data(folder: Path) -> None:
    """`folder/data/fineweb10B`: one train shard of 2M and one validation shard of SPEED_VAL_TOKENS
    random GPT-2 token ids, in the shards' format (written once)."""
    from evals.tasks import fineweb
    from evals.tasks.stand_ins import write_fineweb

    root = folder / "data" / "fineweb10B"
    if not fineweb.shard_paths(root, "validation"):
        write_fineweb(root, 1 << 21, SPEED_VAL_TOKENS + 1)


def run_step(step: Step, out: Path, deadline: float) -> Outcome:
    left = deadline - time.perf_counter()
    if left < 20:
        print(f"[ skipped] {step.name} (deadline)", flush=True)
        return Outcome(step.name, step.phase, "skipped (deadline)", 0.0, " ".join(step.argv), [])
    timeout = int(min(step.timeout_s, left))
    log = out / "logs" / f"{step.name}.log"
    env = {**os.environ, "REPRO_RESULTS": str(out / "results"), "REPRO_RUNS": str(out / "runs"), **step.env}
    cwd = ROOT
    if step.cwd:
        cwd = out / step.cwd
        speed_data(cwd)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    t0 = time.perf_counter()
    with log.open("w") as f:
        try:
            rc = subprocess.run(step.argv, cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=timeout).returncode
            status = "passed" if rc == 0 else f"failed (exit {rc})"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout}s"
    wall = time.perf_counter() - t0
    lines = log.read_text(errors="replace").splitlines()
    print(f"[{status:>8}] {step.name} ({wall:.0f}s)", flush=True)
    return Outcome(step.name, step.phase, status, round(wall, 1), " ".join(step.argv), highlights(lines, status == "passed"))


def highlights(lines: list[str], passed: bool) -> list[str]:
    """What a reader of the report wants from a step's log: a run's summary table (arms, metrics,
    CIs, wall time), else the log's last lines; and the last lines of any failure."""
    starts = [i for i, ln in enumerate(lines) if "bootstrap CI over seeds" in ln]
    if starts:
        kept = [ln for ln in lines[starts[-1]:] if not ln.startswith("records:")]
    else:
        kept = lines[-15:]
    if not passed:
        kept += ["...", *lines[-8:]]
    return [ln.rstrip()[:220] for ln in kept]


def bundle(out: Path, into: Path) -> None:
    """The report files and one archive of everything else under `out` (logs, records), in `into`."""
    into.mkdir(parents=True, exist_ok=True)
    for name in ("report.md", "report.json"):
        shutil.copyfile(out / name, into / name)
    with tarfile.open(into / "gpu_check.tar.gz.tmp", "w:gz") as tar:
        for sub in ("logs", "results"):
            if (out / sub).exists():
                tar.add(out / sub, arcname=sub)
    (into / "gpu_check.tar.gz.tmp").replace(into / "gpu_check.tar.gz")


def report(outcomes: list[Outcome], out: Path, device: str, wall: float) -> str:
    failed = [o for o in outcomes if o.status != "passed"]
    md = [f"# GPU check ({device}): {len(outcomes) - len(failed)}/{len(outcomes)} steps passed in {wall:.0f} s", ""]
    md += ["| step | status | wall (s) |", "|---|---|---|"] + [f"| {o.name} | {o.status} | {o.wall_s:.0f} |" for o in outcomes]
    for o in outcomes:
        if o.highlights:
            md += ["", f"## {o.name}", "```", *o.highlights, "```"]
    text = "\n".join(md) + "\n"
    (out / "report.md").write_text(text)
    (out / "report.json").write_text(json.dumps({"device": device, "wall_s": wall, "steps": [asdict(o) for o in outcomes]}, indent=1))
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--only", help="run only the steps whose name matches this regular expression")
    ap.add_argument("--list", action="store_true", help="print the steps and exit")
    ap.add_argument("--out", default="gpu-check", help="logs, records and the report (default: gpu-check/)")
    ap.add_argument("--bundle", default=os.environ.get("OUT") and str(Path(os.environ["OUT"]) / "gpu_check"),
                    help="also keep the report and one archive of the logs and records here")
    ap.add_argument("--parallel", type=int, default=4, help="smoke and arm steps run this many at a time")
    ap.add_argument("--deadline", type=float, default=float("inf"),
                    help="end every step by this many seconds after the start (steps cut short are reported as timed out)")
    args = ap.parse_args()
    todo = [s for s in steps(args.device) if not args.only or re.search(args.only, s.name)]
    if args.list:
        for s in todo:
            print(f"{s.phase:7} {s.name:32} {' '.join(s.argv[2:] if s.argv[:3] == REPRO else s.argv)}")
        return 0
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: no CUDA device here (use --device cpu to rehearse the flow on a CPU)", file=sys.stderr)
            return 2
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    outcomes: list[Outcome] = []
    deadline = t0 + args.deadline

    lock = threading.Lock()

    def run_and_report(step: Step) -> Outcome:
        outcome = run_step(step, out, deadline)
        with lock:
            outcomes.append(outcome)
            report(outcomes, out, args.device, time.perf_counter() - t0)
            if args.bundle:
                try:
                    bundle(out, Path(args.bundle))
                except OSError as e:  # a file that changed while archived: the next step's bundle has it
                    print(f"gpu_check: bundle not updated ({e})", file=sys.stderr)
        return outcome

    for phase in ("env", "triton", "speed", "bench", "smoke", "arm"):
        batch = [s for s in todo if s.phase == phase]
        workers = args.parallel if phase in ("smoke", "arm") else 1
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(run_and_report, batch))
    text = report(outcomes, out, args.device, time.perf_counter() - t0)
    print(text)
    return 0 if all(o.status == "passed" for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())

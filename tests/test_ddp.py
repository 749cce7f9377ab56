"""Data parallel: two CPU processes under torchrun (gloo) train to the same model as one process
on the same global batch."""

import subprocess
import sys

import torch
from safetensors.torch import load_file

from evals import cli
from evals.config import resolve
from evals.distributed import torchrun_command
from evals.record import load_record
from evals.tier_runner import run_one
from evals.spec import load_spec
from reproductions.transformer import lm

OVERRIDES = {"steps": 4, "batch_size": 4, "lr": 0.01, "warmup_steps": 1}


def test_cli_dispatches_nproc_to_torchrun(monkeypatch):
    seen = {}
    monkeypatch.setattr("evals.distributed.launch", lambda args: seen.setdefault("nproc", args.nproc) and 0)
    assert cli.main(["reproduce", "transformer", "--tier", "smoke", "--arms", "gpt", "--nproc", "2"]) == 0
    assert seen == {"nproc": 2}
    cmd = torchrun_command("rope", 2, "mini", seeds="1", overrides=["steps=3"], device="cpu")
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert cmd[5:8] == ["-m", "evals.distributed", "rope"] and cmd[-2:] == ["--set", "steps=3"]


def test_two_processes_equal_one(run_opts, tmp_path):
    job = resolve(load_spec("transformer"), "smoke", "gpt", 1, OVERRIDES)
    single = load_record(run_one(job, run_opts))

    cmd = torchrun_command("transformer", 2, "smoke", seeds="1", arms="gpt",
                           overrides=[f"{k}={v}" for k, v in OVERRIDES.items()], device="cpu", progress=False,
                           results=tmp_path / "ddp-results", runs=tmp_path / "ddp-runs")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    records = list((tmp_path / "ddp-results").rglob("*.json"))
    assert len(records) == 1  # rank 1 wrote none
    ddp = load_record(records[0])
    assert [v for _, _, v in ddp.curves["world_size"]] == [2.0]

    a = load_file(run_opts.runs.parent / single.provenance.checkpoint_path)
    b = load_file(tmp_path / ddp.provenance.checkpoint_path)
    torch.manual_seed(1)
    init = lm.build(job.config).state_dict()
    assert any(not torch.allclose(a[k], init[k]) for k in a)  # training moved the weights
    # Equal up to float summation order: Adam's normalised steps (4 x lr 0.01) can turn a 1e-7
    # gradient difference into ~1e-5, two orders of magnitude below the updates themselves.
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
    assert abs(single.metrics["val_loss"] - ddp.metrics["val_loss"]) < 1e-4
    for name in ("train_loss", "grad_norm"):
        for (s1, _, v1), (s2, _, v2) in zip(single.curves[name], ddp.curves[name]):
            assert s1 == s2 and abs(v1 - v2) < 1e-4
    assert sys.executable in cmd[0]

import os

import pytest

import evals  # noqa: F401  (first: it pins the CPU kernels before torch runs anything)
import torch

os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)


@pytest.fixture
def run_opts(tmp_path):
    """Harness options that write records and run dirs under a temporary folder."""
    from evals.tier_runner import RunOptions

    return RunOptions(device="cpu", progress=False, tensorboard=False, results=tmp_path / "results",
                      runs=tmp_path / "runs")

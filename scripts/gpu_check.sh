#!/usr/bin/env bash
# The GPU check (README, "GPU check"): run from the repository root on a machine with one GPU.
#   bash scripts/gpu_check.sh [--device cuda|cpu] [--only REGEX] [--list]
# The machine's own Python is used (it has PyTorch and Triton with CUDA). Packages it lacks are
# installed from wheels/ when that folder exists (made on a machine that reaches a package registry
# by `bash scripts/gpu_wheels.sh`; the GPU machine may reach nothing), else from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
need=$($PY - <<'PY'
import importlib.util
mods = {"pydantic": "pydantic", "gymnasium": "gymnasium", "stable_baselines3": "stable-baselines3", "mujoco": "mujoco",
        "ale_py": "ale-py", "torch_fidelity": "torch-fidelity", "submitit": "submitit", "safetensors": "safetensors",
        "pandas": "pandas", "yaml": "pyyaml", "sacrebleu": "sacrebleu", "tqdm": "tqdm", "sklearn": "scikit-learn",
        "transformers": "transformers", "peft": "peft", "scipy": "scipy", "pytest": "pytest", "minatar": "minatar",
        "minari": "minari", "open_clip": "open_clip_torch", "cv2": "opencv-python-headless"}
print(" ".join(pkg for mod, pkg in mods.items() if importlib.util.find_spec(mod) is None))
PY
)
if [ -n "$need" ]; then
  echo "gpu_check: installing $need"
  if [ -d wheels ]; then
    # every wheel whose distribution the machine lacks, without resolving (its own packages stay as they are)
    missing=$($PY - <<'PY'
import importlib.metadata, pathlib
for whl in sorted(pathlib.Path("wheels").glob("*.whl")):
    try:
        importlib.metadata.distribution(whl.name.split("-")[0])
    except importlib.metadata.PackageNotFoundError:
        print(whl)
PY
)
    if [ -n "$missing" ]; then $PY -m pip install -q --no-index --no-deps $missing; fi
  else
    $PY -m pip install -q $need
  fi
fi
exec $PY scripts/gpu_check.py "$@"

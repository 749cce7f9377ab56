#!/usr/bin/env bash
# Wheels for the GPU check's machine (CPython 3.12, manylinux x86-64, no network): the packages
# scripts/gpu_check.sh may find missing there, with their dependencies, into wheels/ (git-ignored).
# wheels/ travels with the tree to that machine, which takes 64 MiB in all: so no pyarrow (54 MB; the
# Decision Transformer's Minari datasets need it) and none of what that machine was seen to have
# (sacrebleu and its lxml, PEFT and accelerate; GPU notes); nor mujoco-studio (12 MB: MuJoCo's
# viewer and renderer, which no check uses). The check's env step lists what is absent.
#   bash scripts/gpu_wheels.sh [python-version, default 3.12]
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
mkdir -p wheels
python3 -m pip download -q --dest wheels --only-binary=:all: --python-version "$PYV" --platform manylinux2014_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_34_x86_64 --platform any \
  --no-deps pydantic pydantic-core annotated-types typing-inspection typing-extensions gymnasium farama-notifications \
  cloudpickle stable-baselines3 mujoco mujoco-core websockets glfw pyopengl absl-py etils ale-py torch-fidelity submitit dill pytz pyyaml \
  scikit-learn joblib threadpoolctl pytest pluggy iniconfig \
  minatar seaborn minari typer click rich shellingham markdown-it-py mdurl pygments open_clip_torch ftfy regex wcwidth
du -sh wheels
